"""pillargraph: learnable pillar-based re-ranking for image-text retrieval on PyTorch Geometric.

The pipeline, one sub-package per stage::

    data -> pillars -> graphs -> nn -> train -> rerank -> metrics
                                     baselines (training-free re-rankers) beside them
"""
from .bundle import SimilarityBundle
from .metrics import evaluate, evaluate_folds

__version__ = "0.1.0"

__all__ = [
    "SimilarityBundle",
    "evaluate",
    "evaluate_folds",
    "__version__",
]
