r"""Training-free re-rankers that pillargraph compares against.

Every method is a :class:`Reranker` subclass (one file each, with its
published defaults) plus a functional form of the same name. Choose one by
name with :func:`get_reranker` (``'alpha_qe'``, ``'AlphaQE'``, ``'alpha-qe'``)
and score its output with :func:`evaluate_rescored`.

To add a method: write ``pillargraph/baselines/my_method.py`` with a
``Reranker`` subclass that sets ``name``, and import it below (one line);
subclassing registers it with the resolver.
"""
from .bank import QueryBank
from .base import DIRECTIONS, Reranker, RetrievalView, chunked_topk, resolve_chunk_size
from .evaluate import evaluate_rescored
from .resolver import available_rerankers, get_reranker, reranker_resolver

# methods: one import line each (importing registers them)
from .alpha_qe import AlphaQE, alpha_qe
from .dba import DBA, dba
from .diffusion import Diffusion, diffusion
from .ecn import ECN, ecn
from .gnn_rerank import GNNRerank, gnn_rerank
from .k_reciprocal import KReciprocal, k_reciprocal
from .krnn import KRNN, krnn
from .inverted_softmax import InvertedSoftmax, inverted_softmax
from .qb_norm import QBNorm, qb_norm
from .dual_softmax import DualSoftmax, dual_softmax
from .nnn import NNN, nnn
from .dbnorm import DBNorm, dbnorm
from .tuning import FUSION_GRID, TUNING_GRIDS, TunedReranker, direction_rsum, fuse_with_base, tune_reranker

__all__ = [
    "Reranker",
    "RetrievalView",
    "QueryBank",
    "DIRECTIONS",
    "chunked_topk",
    "resolve_chunk_size",
    "evaluate_rescored",
    "TUNING_GRIDS",
    "FUSION_GRID",
    "TunedReranker",
    "tune_reranker",
    "fuse_with_base",
    "direction_rsum",
    "available_rerankers",
    "get_reranker",
    "reranker_resolver",
    "AlphaQE", "alpha_qe",
    "DBA", "dba",
    "Diffusion", "diffusion",
    "ECN", "ecn",
    "GNNRerank", "gnn_rerank",
    "KReciprocal", "k_reciprocal",
    "KRNN", "krnn",
    "InvertedSoftmax", "inverted_softmax",
    "QBNorm", "qb_norm",
    "DualSoftmax", "dual_softmax",
    "NNN", "nnn",
    "DBNorm", "dbnorm",
]
