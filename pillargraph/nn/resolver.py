"""Graph convolutions chosen by name, in the style of :mod:`torch_geometric.nn.resolver`."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Union

import torch
from torch_geometric.nn import conv as pyg_conv
from torch_geometric.resolver import normalize_string

from .conv.edges import edge_input, edge_kwargs
from .conv.neighbor_attention_conv import NeighborAttentionConv

__all__ = ["ConvSpec", "CONVS", "conv_resolver", "conv_spec", "edge_input", "edge_kwargs"]


@dataclass(frozen=True)
class ConvSpec:
    """How one named layer type is built and fed.

    Attributes:
        name (str): Canonical name (``'gatv2'``).
        cls (type): The convolution class.
        uses_edge_weight (bool): Whether the overlap weights change its output.
        attention (bool): Whether it attends over its neighbours (such layers
            see the whole query graph by default, as in the paper).
        bipartite (bool): Whether it accepts ``(x_src, x_dst)`` pairs, which
            :class:`~pillargraph.nn.HeteroOverlapConv` needs between node types.
        build (Callable): ``build(channels, heads, dropout, **kwargs) -> Module``.
    """

    name: str
    cls: type
    uses_edge_weight: bool
    attention: bool
    bipartite: bool
    build: Callable[..., torch.nn.Module]


def _out_per_head(channels: int, heads: int) -> int:
    if heads <= 0 or channels % heads != 0:
        raise ValueError(f"heads: must be positive and divide channels ({channels}), got {heads}")
    return channels // heads


def _mlp(channels: int) -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(channels, channels), torch.nn.GELU(),
                               torch.nn.Linear(channels, channels))


def _build_neighbor_attention(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return NeighborAttentionConv(channels, heads=heads, dropout=dropout, **kw)


def _build_transformer(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    kw = {"concat": True, "edge_dim": 1, "dropout": dropout, **kw}
    return pyg_conv.TransformerConv(channels, _out_per_head(channels, heads), heads=heads, **kw)


def _build_gat(cls: type) -> Callable[..., torch.nn.Module]:
    def build(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
        # The query graphs carry their own self loops (with their overlap weight).
        kw = {"concat": True, "edge_dim": 1, "dropout": dropout, "add_self_loops": False, **kw}
        return cls(channels, _out_per_head(channels, heads), heads=heads, **kw)
    return build


def _build_gcn(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return pyg_conv.GCNConv(channels, channels, **{"add_self_loops": False, **kw})


def _build_sage(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return pyg_conv.SAGEConv(channels, channels, **kw)


def _build_gin(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return pyg_conv.GINConv(_mlp(channels), **{"train_eps": True, **kw})


def _build_gine(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return pyg_conv.GINEConv(_mlp(channels), **{"train_eps": True, "edge_dim": 1, **kw})


def _build_graph(channels: int, heads: int, dropout: float, **kw: Any) -> torch.nn.Module:
    return pyg_conv.GraphConv(channels, channels, **kw)


#: The named layers. ``uses_edge_weight`` says whether the overlap weights reach the layer:
#:
#: - ``neighbor_attention`` (:class:`NeighborAttentionConv`): yes, mixed into the attention.
#: - ``transformer`` (:class:`~torch_geometric.nn.conv.TransformerConv`, ``edge_dim=1``): yes,
#:   as a one-dimensional edge feature added to keys and values.
#: - ``gatv2`` / ``gat`` (:class:`~torch_geometric.nn.conv.GATv2Conv` /
#:   :class:`~torch_geometric.nn.conv.GATConv`, ``edge_dim=1``): yes, as an edge feature in the scores.
#: - ``gcn`` (:class:`~torch_geometric.nn.conv.GCNConv`): yes, as ``edge_weight`` (not bipartite,
#:   so not with ``hetero=True``).
#: - ``graph`` (:class:`~torch_geometric.nn.conv.GraphConv`): yes, as ``edge_weight``.
#: - ``gine`` (:class:`~torch_geometric.nn.conv.GINEConv`, ``edge_dim=1``): yes, as an edge feature.
#: - ``sage`` (:class:`~torch_geometric.nn.conv.SAGEConv`) and ``gin``
#:   (:class:`~torch_geometric.nn.conv.GINConv`): no, they see only which edges exist.
#:
#: Multi-head layers split ``channels`` over the heads and concatenate, so every layer maps
#: ``[N, channels]`` to ``[N, channels]``; ``heads`` must divide ``channels``.
CONVS: Dict[str, ConvSpec] = {
    spec.name: spec for spec in (
        ConvSpec("neighbor_attention", NeighborAttentionConv, True, True, True, _build_neighbor_attention),
        ConvSpec("transformer", pyg_conv.TransformerConv, True, True, True, _build_transformer),
        ConvSpec("gatv2", pyg_conv.GATv2Conv, True, True, True, _build_gat(pyg_conv.GATv2Conv)),
        ConvSpec("gat", pyg_conv.GATConv, True, True, True, _build_gat(pyg_conv.GATConv)),
        ConvSpec("gcn", pyg_conv.GCNConv, True, False, False, _build_gcn),
        ConvSpec("sage", pyg_conv.SAGEConv, False, False, True, _build_sage),
        ConvSpec("gin", pyg_conv.GINConv, False, False, True, _build_gin),
        ConvSpec("gine", pyg_conv.GINEConv, True, False, True, _build_gine),
        ConvSpec("graph", pyg_conv.GraphConv, True, False, True, _build_graph),
    )
}
_ALIASES = {"neighbourattention": "neighbor_attention"}


def conv_spec(query: str) -> ConvSpec:
    """The :class:`ConvSpec` for a layer name.

    Case and separators do not matter, and the class name works too:
    ``'neighbor_attention'``, ``'neighbor-attention'`` and
    ``'NeighborAttentionConv'`` are the same layer.

    Raises:
        ValueError: for an unknown name, listing the choices.
    """
    if not isinstance(query, str):
        raise ValueError(f"layer: expected a name or a module, got {type(query).__name__}")
    key = normalize_string(query)
    table = {normalize_string(name): name for name in CONVS}
    table.update(_ALIASES)
    for candidate in (key, key[:-4] if key.endswith("conv") else None):
        if candidate in table:
            return CONVS[table[candidate]]
    raise ValueError(f"layer: unknown layer {query!r}; expected one of {sorted(CONVS)} or a torch.nn.Module")


def conv_resolver(query: Union[str, torch.nn.Module], channels: int, heads: int = 1, dropout: float = 0.0,
                  **kwargs: Any) -> torch.nn.Module:
    r"""Builds a graph convolution mapping :obj:`[N, channels]` to :obj:`[N, channels]` by name.

    A module instance is returned unchanged. See :data:`CONVS` for the names
    and whether each layer uses the edge weights.

    Args:
        query (str or torch.nn.Module): Layer name or a ready module.
        channels (int): Input and output feature size.
        heads (int, optional): Attention heads (attention layers only).
            (default: :obj:`1`)
        dropout (float, optional): Attention dropout (attention layers only).
            (default: :obj:`0.0`)
        **kwargs (optional): Further constructor arguments of the layer; they
            override pillargraph's defaults (e.g. ``edge_dim``, ``mix``).

    Returns:
        torch.nn.Module: the convolution.

    Raises:
        ValueError: for an unknown name (listing the choices) or heads not
            dividing channels.
    """
    if isinstance(query, torch.nn.Module):
        return query
    if channels <= 0:
        raise ValueError(f"channels: must be positive, got {channels}")
    return conv_spec(query).build(channels, heads, dropout, **kwargs)
