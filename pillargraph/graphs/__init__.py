"""Query graphs: one :class:`~torch_geometric.data.HeteroData` per query neighbourhood."""
from .batch import DIRECTIONS, IMAGE, NODE_TYPES, TEXT, GraphBatch, check_direction

__all__ = ["GraphBatch", "IMAGE", "TEXT", "NODE_TYPES", "DIRECTIONS", "check_direction"]
