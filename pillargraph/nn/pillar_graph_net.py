"""One direction's network: pillar features of a query graph in, query-candidate scores out."""
from __future__ import annotations

import copy
from typing import Any, Dict, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from ..graphs.batch import GraphBatch
from ..modality import NODE_TYPES
from .block import ReasoningBlock
from .conv.hetero_overlap_conv import HeteroOverlapConv
from .conv.neighbor_attention_conv import NeighborAttentionConv
from .resolver import CONVS, conv_resolver, edge_input, edge_kwargs
from .split_layer_norm import SplitLayerNorm

__all__ = ["PillarGraphNet", "ATTEND_MODES"]

#: Which node pairs an attention layer sees: ``'graph'`` every pair in the query
#: graph (the paper), ``'edges'`` only the overlap edges, ``'auto'`` the former for
#: attention layers and the latter for the others.
ATTEND_MODES = ("auto", "graph", "edges")


def _is_attention(conv: torch.nn.Module) -> bool:
    return any(spec.attention and isinstance(conv, spec.cls) for spec in CONVS.values())


class PillarGraphNet(torch.nn.Module):
    r"""Scores every node of a query graph against the query node (node 0).

    Normalises the inter- and intra-pillar halves separately
    (:class:`SplitLayerNorm`), projects to :obj:`hidden_channels`, applies
    :obj:`num_layers` :class:`ReasoningBlock` s around the chosen graph
    convolution, normalises, and reads out cosine similarities:

    .. math::
        \mathbf{z}_u = \frac{\mathrm{LN}(\mathbf{h}_u)}{\lVert \mathrm{LN}(\mathbf{h}_u) \rVert},
        \qquad s_u = \mathbf{z}_u^\top \mathbf{z}_0

    With :class:`NeighborAttentionConv`, no hetero relations and
    :obj:`dense=True`, a batch runs as dense batched attention
    (:meth:`NeighborAttentionConv.forward_dense`); every other layer runs on
    the PyG edges of :meth:`GraphBatch.edge_index`.

    Args:
        in_channels (int): Pillar feature size :math:`F`.
        layer (str or torch.nn.Module, optional): Convolution name (see
            :data:`~pillargraph.nn.CONVS`) or a module, deep-copied (with
            fresh parameters) for every block. (default: :obj:`'neighbor_attention'`)
        hidden_channels (int, optional): Width. (default: :obj:`256`)
        num_layers (int, optional): Number of reasoning blocks. (default: :obj:`2`)
        heads (int, optional): Attention heads. (default: :obj:`4`)
        dropout (float, optional): Dropout in the blocks. (default: :obj:`0.1`)
        attention_dropout (float, optional): Dropout on attention
            probabilities. (default: :obj:`0.0`)
        mlp_ratio (float, optional): MLP width relative to
            :obj:`hidden_channels`. (default: :obj:`4.0`)
        split_norm (bool, optional): Normalise the two halves of the features
            separately (when :math:`F` is even); otherwise one
            :class:`~torch.nn.LayerNorm`. (default: :obj:`True`)
        use_edge_weight (bool, optional): Feed the overlap weights to the
            layer. When :obj:`False`, :class:`NeighborAttentionConv` becomes
            plain attention and other layers get weight 1 on every edge they
            see. (default: :obj:`True`)
        attend (str, optional): One of :data:`ATTEND_MODES`. (default: :obj:`'auto'`)
        hetero (bool, optional): One convolution per node-type relation
            (:class:`HeteroOverlapConv`). (default: :obj:`False`)
        hetero_aggr (str, optional): How relations combine when
            :obj:`hetero`. (default: :obj:`'sum'`)
        dense (bool, optional): Use the dense path where the layer has one.
            (default: :obj:`True`)
        layer_kwargs (dict, optional): Extra constructor arguments of the layer.
        extra_channels (int, optional): The last :obj:`extra_channels` feature
            columns are candidate features (see
            :mod:`pillargraph.graphs.node_features`), not pillar similarities:
            they skip the split normalisation and get their own projection,
            added to the pillar projection. (default: :obj:`0`)
        feature_skip (float, optional): Scale :math:`a` of a residual path that
            adds :math:`a \cdot w^\top e` to every node's score, :math:`e` the
            node's candidate features (the last :obj:`extra_channels` columns)
            and :math:`w` learned, initialised to zero so training starts from
            the graph network's scores. It lets the model weigh what the
            hand-made re-rankers read straight into the ranking; :math:`a`
            acts as a learning-rate multiplier for :math:`w` under Adam.
            Scores then leave :math:`[-1, 1]`. :obj:`0` turns the path off.
            (default: :obj:`0.0`)

    Shapes:
        - **input:** :class:`~pillargraph.graphs.GraphBatch` with :obj:`x`
          :math:`(B, K, F)`
        - **output:** scores :math:`(B, K)` (node 0 scores itself, 1)
    """

    def __init__(self, in_channels: int, layer: Union[str, torch.nn.Module] = "neighbor_attention",
                 hidden_channels: int = 256, num_layers: int = 2, heads: int = 4, dropout: float = 0.1,
                 attention_dropout: float = 0.0, mlp_ratio: float = 4.0, split_norm: bool = True,
                 use_edge_weight: bool = True, attend: str = "auto", hetero: bool = False,
                 hetero_aggr: str = "sum", dense: bool = True,
                 layer_kwargs: Optional[Dict[str, Any]] = None, extra_channels: int = 0,
                 feature_skip: float = 0.0) -> None:
        super().__init__()
        if isinstance(feature_skip, bool) or not float(feature_skip) >= 0.0:
            raise ValueError(f"feature_skip: expected a scale >= 0, got {feature_skip!r}")
        if feature_skip and not extra_channels:
            raise ValueError("feature_skip: needs candidate features (extra_channels > 0)")
        self.feature_skip = float(feature_skip)
        if not isinstance(extra_channels, int) or isinstance(extra_channels, bool) \
                or not 0 <= extra_channels < in_channels:
            raise ValueError(f"extra_channels: expected an int in [0, in_channels), got {extra_channels!r}")
        for name, value in (("in_channels", in_channels), ("hidden_channels", hidden_channels),
                            ("num_layers", num_layers), ("heads", heads)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if attend not in ATTEND_MODES:
            raise ValueError(f"attend: unknown mode {attend!r}; expected one of {list(ATTEND_MODES)}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout: must lie in [0, 1), got {attention_dropout}")
        layer_kwargs = dict(layer_kwargs or {})

        def make_conv() -> torch.nn.Module:
            if isinstance(layer, torch.nn.Module):
                conv = copy.deepcopy(layer)
                if hasattr(conv, "reset_parameters"):
                    conv.reset_parameters()
                return conv
            return conv_resolver(layer, hidden_channels, heads=heads, dropout=attention_dropout, **layer_kwargs)

        self.in_channels = in_channels
        self.extra_channels = extra_channels
        self.hidden_channels = hidden_channels
        self.use_edge_weight = use_edge_weight
        self.hetero = hetero
        pillar_channels = in_channels - extra_channels
        if split_norm and pillar_channels % 2 == 0:
            self.norm_in: torch.nn.Module = SplitLayerNorm(pillar_channels, splits=2)
        else:
            self.norm_in = torch.nn.LayerNorm(pillar_channels)
        self.lin_in = torch.nn.Linear(pillar_channels, hidden_channels)
        self.lin_extra = torch.nn.Linear(extra_channels, hidden_channels) if extra_channels else None
        self.lin_skip = torch.nn.Linear(extra_channels, 1, bias=False) if feature_skip else None
        if self.lin_skip is not None:
            torch.nn.init.zeros_(self.lin_skip.weight)
        blocks = []
        for _ in range(num_layers):
            conv = HeteroOverlapConv(make_conv, NODE_TYPES, aggr=hetero_aggr) if hetero else make_conv()
            blocks.append(ReasoningBlock(conv, hidden_channels, mlp_ratio=mlp_ratio, dropout=dropout))
        self.blocks = torch.nn.ModuleList(blocks)
        self.norm_out = torch.nn.LayerNorm(hidden_channels)

        first = self.blocks[0].conv
        inner = next(iter(first.convs.convs.values())) if isinstance(first, HeteroOverlapConv) else first
        self._plain_attention_without_weights = isinstance(inner, NeighborAttentionConv)
        self.attend = attend if attend != "auto" else ("graph" if _is_attention(inner) else "edges")
        self.dense = dense and not hetero and all(hasattr(b.conv, "forward_dense") for b in self.blocks)
        self._edge_input = edge_input(self.blocks[0].conv)

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.norm_in.reset_parameters()
        self.lin_in.reset_parameters()
        if self.lin_extra is not None:
            self.lin_extra.reset_parameters()
        if self.lin_skip is not None:
            torch.nn.init.zeros_(self.lin_skip.weight)
        for block in self.blocks:
            block.reset_parameters()
        self.norm_out.reset_parameters()

    def project(self, x: Tensor) -> Tensor:
        r"""Input projection :obj:`[..., F] -> [..., hidden_channels]` (pillar and extra columns)."""
        if self.lin_extra is None:
            return self.lin_in(self.norm_in(x))
        cut = self.in_channels - self.extra_channels
        return self.lin_in(self.norm_in(x[..., :cut])) + self.lin_extra(x[..., cut:])

    def embed(self, batch: GraphBatch) -> Tensor:
        r"""Node embeddings before the readout, :obj:`[B, K, hidden_channels]`."""
        if batch.num_features != self.in_channels:
            raise ValueError(f"batch.x: expected {self.in_channels} features, got {batch.num_features}")
        h = self.project(batch.x)
        if self.dense:
            adj = batch.adj if self.use_edge_weight else None
            mask = batch.adj > 0 if self.attend == "edges" else None
            for block in self.blocks:
                h = block.forward_dense(h, adj, mask)
            return h
        b, k, c = h.shape
        edge_index, weight = batch.edge_index(full=self.attend == "graph")
        if not self.use_edge_weight:
            weight = None if self._plain_attention_without_weights else torch.ones_like(weight)
        extra: Dict[str, Tensor] = edge_kwargs(self._edge_input, weight)
        if self.hetero:
            extra["node_type"] = batch.node_type.repeat(b)
        h = h.reshape(b * k, c)
        for block in self.blocks:
            h = block(h, edge_index, **extra)
        return h.view(b, k, c)

    def forward(self, batch: GraphBatch) -> Tensor:
        r"""Cosine score of every node against the query node (plus the feature skip), :obj:`[B, K]`."""
        z = F.normalize(self.norm_out(self.embed(batch)), dim=-1)
        score = (z * z[:, :1]).sum(dim=-1)
        if self.lin_skip is not None:
            extra = batch.x[..., self.in_channels - self.extra_channels:]
            score = score + self.feature_skip * self.lin_skip(extra).squeeze(-1)
        return score
