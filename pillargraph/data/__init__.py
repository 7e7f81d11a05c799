"""Data sources: synthetic retrieval problems (and, later, neighbour lists for large galleries)."""
from .synthetic import (SyntheticConfig, SyntheticSplit, SyntheticWorld, synthetic_embeddings,
                        synthetic_splits)

__all__ = [
    "SyntheticConfig",
    "SyntheticSplit",
    "SyntheticWorld",
    "synthetic_embeddings",
    "synthetic_splits",
]
