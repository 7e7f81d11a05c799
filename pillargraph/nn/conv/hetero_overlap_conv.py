"""Per-relation convolutions over the typed nodes of flat query graphs."""
from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import Tensor
from torch_geometric.nn.conv import GCNConv, HeteroConv

from .edges import edge_input, edge_kwargs

__all__ = ["HeteroOverlapConv"]


class HeteroOverlapConv(torch.nn.Module):
    r"""One convolution per relation ``(src, 'overlaps', dst)`` between node types.

    Query graphs mix image and text nodes. This layer gives every ordered
    pair of node types its own weights through
    :class:`~torch_geometric.nn.conv.HeteroConv`, and sums the messages a node
    receives over the relations:

    .. math::
        \mathbf{x}'_u = \sum_{s \in \mathcal{T}}
        \mathrm{Conv}_{s \to \tau(u)}\big(\mathbf{x}, \mathcal{E}_{s \to \tau(u)}\big)_u

    It takes flat (homogeneous) node and edge tensors plus a node-type vector
    and splits them into ``x_dict`` / ``edge_index_dict`` with tensor ops (no
    loop over graphs), so it plugs into :class:`~pillargraph.nn.ReasoningBlock`
    like any homogeneous convolution.

    Args:
        make_conv (Callable[[], torch.nn.Module]): Builds one relation's
            convolution; it must accept bipartite ``(x_src, x_dst)`` input
            (:class:`~torch_geometric.nn.conv.GCNConv` does not).
        node_types (Sequence[str], optional): Names of the node types, indexed
            by the ids in :obj:`node_type`. (default: :obj:`('image', 'text')`)
        relation (str, optional): Edge relation name. (default: :obj:`'overlaps'`)
        aggr (str, optional): How messages from different relations combine,
            see :class:`~torch_geometric.nn.conv.HeteroConv`. (default: :obj:`'sum'`)

    Shapes:
        - **input:** node features :math:`(N, C)`, edge indices :math:`(2, E)`,
          edge weights :math:`(E)` *(optional)*, node types :math:`(N)`
        - **output:** node features :math:`(N, C')`
    """

    def __init__(self, make_conv: Callable[[], torch.nn.Module], node_types: Sequence[str] = ("image", "text"),
                 relation: str = "overlaps", aggr: str = "sum") -> None:
        super().__init__()
        if len(node_types) == 0 or len(set(node_types)) != len(node_types):
            raise ValueError(f"node_types: expected distinct names, got {list(node_types)}")
        self.node_types = tuple(node_types)
        self.relation = relation
        convs: Dict[tuple, torch.nn.Module] = {}
        for src in self.node_types:
            for dst in self.node_types:
                conv = make_conv()
                if isinstance(conv, GCNConv):
                    raise ValueError("layer: GCNConv cannot pass messages between node types (not bipartite); "
                                     "use hetero=False or another layer (e.g. 'graph', 'sage', 'gatv2')")
                convs[(src, relation, dst)] = conv
        self.convs = HeteroConv(convs, aggr=aggr)
        self._edge_input = edge_input(next(iter(convs.values())))

    def reset_parameters(self) -> None:
        r"""Resets all learnable parameters of the module."""
        self.convs.reset_parameters()

    def forward(self, x: Tensor, edge_index: Tensor, edge_weight: Optional[Tensor] = None,
                node_type: Optional[Tensor] = None) -> Tensor:
        r"""Runs every relation's convolution and merges the outputs back into flat order.

        Args:
            x (Tensor): Node features :obj:`[N, C]`.
            edge_index (Tensor): Edges :obj:`[2, E]` (source row 0, target row 1).
            edge_weight (Tensor, optional): Weights :obj:`[E]`.
            node_type (Tensor): Type id of every node, :obj:`[N]` long.
        """
        if node_type is None or node_type.shape != (x.shape[0],):
            raise ValueError(f"node_type: expected a [{x.shape[0]}] tensor of type ids, got "
                             f"{None if node_type is None else list(node_type.shape)}")
        num_types = len(self.node_types)
        onehot = node_type.unsqueeze(1) == torch.arange(num_types, device=node_type.device)
        # Position of every node among the nodes of its own type.
        local = (onehot.long().cumsum(0) - 1).gather(1, node_type.unsqueeze(1)).squeeze(1)
        members = [onehot[:, t].nonzero().view(-1) for t in range(num_types)]
        x_dict = {name: x[idx] for name, idx in zip(self.node_types, members)}

        src, dst = edge_index
        src_type, dst_type = node_type[src], node_type[dst]
        edge_index_dict, weight_dict = {}, {}
        for s, s_name in enumerate(self.node_types):
            for d, d_name in enumerate(self.node_types):
                keep = (src_type == s) & (dst_type == d)
                key = (s_name, self.relation, d_name)
                edge_index_dict[key] = torch.stack([local[src[keep]], local[dst[keep]]])
                if edge_weight is not None:
                    weight_dict[key] = edge_weight[keep]
        extra = {}
        if self._edge_input is not None and edge_weight is not None:
            extra = {f"{self._edge_input}_dict": {k: edge_kwargs(self._edge_input, w)[self._edge_input]
                                                   for k, w in weight_dict.items()}}
        out_dict = self.convs(x_dict, edge_index_dict, **extra)

        first = next(iter(out_dict.values()))
        out = first.new_zeros(x.shape[0], first.shape[-1])
        for name, idx in zip(self.node_types, members):
            if name in out_dict:
                out[idx] = out_dict[name]
        return out

    def __repr__(self) -> str:
        conv = next(iter(self.convs.convs.values()))
        return f"{self.__class__.__name__}({conv}, num_relations={len(self.convs.convs)})"
