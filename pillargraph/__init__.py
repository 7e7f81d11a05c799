"""pillargraph: learnable pillar-based re-ranking for image-text retrieval on PyTorch Geometric.

The pipeline, one sub-package per stage::

    data -> pillars -> graphs -> nn -> train -> rerank -> metrics
                                     baselines (training-free re-rankers) beside them

That is the order the data flows in; the order the modules import each other in (metrics low,
rerank below train, baselines beside pillars) is in the docs' "Layers" section and
``tests/test_layering.py``.
"""
from .openmp import prefer_passive_wait

prefer_passive_wait()  # before torch is loaded: see pillargraph.openmp

from . import baselines  # noqa: E402
from .bundle import SimilarityBundle
from .compare import ComparisonReport, compare
from .data import NeighborLists
from .data.synthetic import SyntheticConfig, SyntheticSplit, SyntheticWorld, synthetic_embeddings, synthetic_splits
from .graphs import GraphBatch, PillarGraphBuilder, QueryGraphDataset
from .losses import PillarLoss
from .metrics import evaluate, evaluate_folds
from .nn import NeighborAttentionConv, PillarReranker
from .rerank import FusionChoice, rerank, select_fusion_weights
from .train import TrainConfig, Trainer, model_from_checkpoint
from .version import __version__

__all__ = [
    "SimilarityBundle",
    "evaluate",
    "evaluate_folds",
    "NeighborLists",
    "SyntheticConfig",
    "SyntheticSplit",
    "SyntheticWorld",
    "synthetic_embeddings",
    "synthetic_splits",
    "PillarGraphBuilder",
    "QueryGraphDataset",
    "GraphBatch",
    "NeighborAttentionConv",
    "PillarReranker",
    "PillarLoss",
    "Trainer",
    "TrainConfig",
    "model_from_checkpoint",
    "rerank",
    "select_fusion_weights",
    "FusionChoice",
    "compare",
    "ComparisonReport",
    "baselines",
    "__version__",
]
