"""Data: similarity sources (dense or top-k neighbour lists) and synthetic retrieval problems."""
from .neighbors import BACKENDS, NeighborLists, faiss_available, topk_from_matrix, topk_neighbors
from .source import KINDS, DenseSimilarity, SimilaritySource, as_source, check_kind
from .synthetic import (SyntheticConfig, SyntheticSplit, SyntheticWorld, synthetic_embeddings,
                        synthetic_splits)

__all__ = [
    "SimilaritySource",
    "DenseSimilarity",
    "NeighborLists",
    "as_source",
    "check_kind",
    "KINDS",
    "topk_neighbors",
    "topk_from_matrix",
    "faiss_available",
    "BACKENDS",
    "SyntheticConfig",
    "SyntheticSplit",
    "SyntheticWorld",
    "synthetic_embeddings",
    "synthetic_splits",
]
