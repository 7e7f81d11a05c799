"""Learnable re-ranking networks: the paper's layer, PyG layers by name, and the re-ranker."""
from .block import ReasoningBlock
from .conv import HeteroOverlapConv, NeighborAttentionConv
from .pillar_graph_net import ATTEND_MODES, PillarGraphNet
from .reranker import PillarReranker
from .resolver import CONVS, ConvSpec, conv_resolver, conv_spec, edge_input, edge_kwargs
from .split_layer_norm import SplitLayerNorm

__all__ = [
    "NeighborAttentionConv",
    "HeteroOverlapConv",
    "ReasoningBlock",
    "SplitLayerNorm",
    "PillarGraphNet",
    "PillarReranker",
    "ATTEND_MODES",
    "CONVS",
    "ConvSpec",
    "conv_resolver",
    "conv_spec",
    "edge_input",
    "edge_kwargs",
]
