"""Training the learned re-ranker: configuration, the training loop, checkpoints."""
from .config import TrainConfig
from .fit import FittedReranker, fit_reranker
from .trainer import (CHECKPOINT_FORMAT, Trainer, TrainingBatch, TrainResult, load_checkpoint,
                      model_from_checkpoint)

__all__ = ["Trainer", "TrainConfig", "TrainResult", "TrainingBatch", "load_checkpoint",
           "model_from_checkpoint", "CHECKPOINT_FORMAT", "fit_reranker", "FittedReranker"]
