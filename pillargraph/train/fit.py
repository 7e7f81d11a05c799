"""One call from settings to a trained, dev-selected re-ranker: build, train, select the fusion on dev.

:func:`fit_reranker` is the sequence that the CLI, the demo and the
benchmarks all run: a :class:`~pillargraph.graphs.PillarGraphBuilder` from
builder settings, a :class:`~pillargraph.nn.PillarReranker` sized to it (its
pillar columns and any extra node features), training with the best epoch kept
by dev rSum, and the base-fusion weights chosen on the same dev split (fusion
weight 1 is the learned scores alone, 0 the base). Only ``dev`` is read for
any choice.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch

from ..bundle import SimilarityBundle
from ..data.episodes import mix_splits
from ..graphs import PillarGraphBuilder
from ..nn import PillarReranker
from ..rerank import combine_any, direction_scores, rerank_scores
from .config import TrainConfig
from .recipes import Recipe, prepare_run
from .trainer import Trainer, TrainResult

__all__ = ["FittedReranker", "fit_reranker"]


@dataclass
class FittedReranker:
    """What :func:`fit_reranker` returns.

    Attributes:
        model: the trained model (best dev epoch), its ``fusion_weights`` set
            to the dev-selected choice when ``config.select_fusion``.
        builder: the graph builder the model reads.
        result: the :class:`~pillargraph.train.TrainResult` (history, best epoch, fusion).
        seconds: wall time of training and selection.
        recipe: the :class:`~pillargraph.train.Recipe` it was trained with, if any.
        config: the training config it was trained with.
    """

    model: PillarReranker
    builder: PillarGraphBuilder
    result: TrainResult
    seconds: float
    recipe: Optional[Recipe] = None
    config: Optional[TrainConfig] = None

    @property
    def transductive(self) -> bool:
        """Whether the model reads other test queries (reciprocal node features)."""
        return self.builder.transductive

    def rescore(self, test: SimilarityBundle, device: Union[str, torch.device, None] = None,
                fusion: Optional[Mapping[str, Any]] = None) -> Dict[str, Dict[str, torch.Tensor]]:
        """Re-rank ``test`` once, two ways: ``{'learned': ..., 'fused': ...}``.

        ``'learned'`` is the learned scores alone (fusion weight 1), ``'fused'`` the
        dev-selected fusion with the base; each is ``{'i2t': [N, M], 't2i': [N, M]}``
        (see :func:`~pillargraph.rerank.direction_scores`). The graphs are built and
        scored once for both. ``fusion`` replaces the dev-selected choice (e.g. one selected on another
        split's dev, :meth:`~pillargraph.rerank.FusionChoice.as_dict`).
        """
        fusion = fusion or self.result.fusion or {"i2t": 1.0, "t2i": 1.0, "output": "fused"}
        output = str(fusion.get("output", "fused"))
        scored = rerank_scores(self.model, test, self.builder, device=device)
        return {"learned": direction_scores(combine_any(test, scored, 1.0, 1.0, output)),
                "fused": direction_scores(combine_any(test, scored, float(fusion["i2t"]), float(fusion["t2i"]),
                                                      output))}

    def settings(self) -> Dict[str, Any]:
        """The builder, model and training settings, for results files."""
        return {"recipe": None if self.recipe is None else self.recipe.record(),
                "builder": self.builder.config, "model": self.model.to_config(),
                "train": None if self.config is None else self.config.to_dict(),
                "fusion": self.result.fusion, "best_epoch": self.result.best_epoch,
                "epochs_run": self.result.epochs_run}


def fit_reranker(train: Any, dev: Any, builder: Union[PillarGraphBuilder, Mapping[str, Any], None] = None,
                 model: Union[PillarReranker, Mapping[str, Any], None] = None,
                 config: Optional[TrainConfig] = None, device: Union[str, torch.device, None] = None,
                 out_dir: Union[str, os.PathLike, None] = None, progress: Optional[bool] = False,
                 seed: Optional[int] = None, resume: bool = True,
                 on_epoch_end: Optional[Callable[[Dict[str, Any]], None]] = None, *,
                 recipe: Union[str, Recipe, None] = None, episode_seed: int = 0) -> FittedReranker:
    """Build a builder and a matching model, train on ``train``, select epoch and fusion on ``dev``.

    With ``recipe`` (a name of :data:`~pillargraph.train.RECIPES` or a
    :class:`~pillargraph.train.Recipe`, e.g. ``get_recipe("inductive").override(model={...})``)
    the builder, model, training config and training episodes all come from
    it, exactly as ``pillargraph train --recipe`` resolves them; ``builder``,
    ``model`` and ``config`` must then be left out.

    Args:
        train: the training split: a :class:`~pillargraph.SimilarityBundle`,
            :class:`~pillargraph.data.NeighborLists` or any
            :class:`~pillargraph.data.SimilaritySource` (e.g. episodes); or a
            list of dense splits, e.g. one per base scorer, each cut into the
            recipe's episodes and all mixed into one (:func:`~pillargraph.data.mix_splits`).
        dev: the selection split.
        builder: a builder, or its keyword arguments (default: ``PillarGraphBuilder()``).
        model: a :class:`~pillargraph.nn.PillarReranker` built for ``builder``, or
            its keyword arguments beyond the input sizes (default: its defaults).
        config: training settings (default: ``TrainConfig()``).
        device: where to train (default: CPU).
        out_dir: run folder for checkpoints (default: none).
        progress: show progress bars (default: False).
        seed: initialises the model's weights when it is built here (default: ``config.seed``);
            with a recipe, the run's seed (default: 0).
        resume, on_epoch_end: passed to :meth:`~pillargraph.train.Trainer.fit`.
        recipe: the recipe to train (see above).
        episode_seed: seeds the recipe's episode partition (default: 0).

    Returns:
        A :class:`FittedReranker`.
    """
    run_info: Dict[str, Any] = {}
    if recipe is not None:
        if builder is not None or model is not None or config is not None:
            raise ValueError("recipe: pass a recipe (Recipe.override for changes) or builder/model/config, "
                             "not both")
        run = prepare_run(recipe, train, 0 if seed is None else seed, episode_seed)
        recipe, builder, net, config, train, run_info = (run.recipe, run.builder, run.model, run.config, run.train,
                                                         run.run_info)
    else:
        if isinstance(train, (list, tuple)):
            train = mix_splits(train)
        if not isinstance(builder, PillarGraphBuilder):
            builder = PillarGraphBuilder(**dict(builder or {}))
        config = config or TrainConfig()
        if isinstance(model, PillarReranker):
            net = model
        else:
            torch.manual_seed(config.seed if seed is None else seed)
            net = PillarReranker(builder.num_features, extra_channels=builder.num_extra_features,
                                 **dict(model or {}))
    t0 = time.perf_counter()
    trainer = Trainer(net, builder, config, out_dir=out_dir, device=device, progress=progress, run_info=run_info)
    result = trainer.fit(train, dev, resume=resume, on_epoch_end=on_epoch_end)
    return FittedReranker(net, builder, result, time.perf_counter() - t0, recipe, config)
