"""Graph convolutions for query graphs."""
from .hetero_overlap_conv import HeteroOverlapConv
from .neighbor_attention_conv import NeighborAttentionConv

__all__ = ["NeighborAttentionConv", "HeteroOverlapConv"]
