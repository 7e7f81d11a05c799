"""Training the learned re-ranker: configuration, the training loop, checkpoints."""
from .config import TrainConfig
from .fit import FittedReranker, fit_reranker
from .recipes import DEFAULT_RECIPE, RECIPES, Recipe, get_recipe, prepare_run, recipe_parts, recipe_table, RecipeRun
from .trainer import (CHECKPOINT_FORMAT, Trainer, TrainingBatch, TrainResult, load_checkpoint,
                      model_from_checkpoint, model_from_state)

__all__ = ["Trainer", "TrainConfig", "TrainResult", "TrainingBatch", "load_checkpoint",
           "model_from_checkpoint", "model_from_state", "CHECKPOINT_FORMAT", "fit_reranker", "FittedReranker",
           "Recipe", "RECIPES", "DEFAULT_RECIPE", "get_recipe", "prepare_run", "recipe_parts", "RecipeRun", "recipe_table"]
