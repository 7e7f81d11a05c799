"""Query graphs: every query neighbourhood as a :class:`~torch_geometric.data.HeteroData`.

:class:`PillarGraphBuilder` computes pillar features and overlap adjacencies
for all queries of a split at once; :class:`QueryGraphDataset` stores them as
batched tensors, hands out :class:`~torch_geometric.data.HeteroData` per graph
and dense :class:`GraphBatch` stacks for fast training.
"""
from ..modality import DIRECTIONS, IMAGE, NODE_TYPES, TEXT
from .batch import GraphBatch
from .builder import PillarGraphBuilder, caption_groups, positive_sample
from .dataset import QueryGraphDataset, from_hetero_batch, to_hetero_data
from .overlap import NeighborTables, neighbor_tables, overlap_adjacency, overlap_counts

__all__ = [
    "PillarGraphBuilder",
    "QueryGraphDataset",
    "GraphBatch",
    "to_hetero_data",
    "from_hetero_batch",
    "positive_sample",
    "caption_groups",
    "NeighborTables",
    "neighbor_tables",
    "overlap_counts",
    "overlap_adjacency",
    "IMAGE",
    "TEXT",
    "NODE_TYPES",
    "DIRECTIONS",
]
