"""Dense batches of query graphs that share one node layout (the fast path for training)."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Optional, Tuple, Union

import torch
from torch import Tensor

from ..modality import check_direction

__all__ = ["GraphBatch"]

@dataclass
class GraphBatch:
    r"""``B`` query graphs of one direction with the same node layout, as dense tensors.

    Every query graph of a direction has the same shape: node 0 is the query,
    the candidate positions (:attr:`candidate_mask`) hold its top cross-modal
    neighbours in base-score order, and optional context nodes follow. This
    makes a batch a stack of ``[K, F]`` feature matrices and ``[K, K]``
    adjacencies, which dense attention consumes directly; :meth:`edge_index`
    gives the equivalent sparse form for :class:`~torch_geometric.nn.conv.MessagePassing`
    layers. :class:`~pillargraph.graphs.QueryGraphDataset` converts single graphs to
    :class:`~torch_geometric.data.HeteroData`.

    Args:
        direction (str): ``'i2t'`` or ``'t2i'``: which network scores the batch.
        x (Tensor): pillar features :obj:`[B, K, F]`.
        adj (Tensor): overlap adjacency :obj:`[B, K, K]`, row-stochastic, zero
            where there is no edge, self loops positive.
        node_type (Tensor): :obj:`[K]` long, :obj:`IMAGE` (0) or :obj:`TEXT` (1).
        candidate_mask (Tensor): :obj:`[K]` bool, the positions being re-ranked.
        query_index (Tensor): :obj:`[B]` index of each query in its modality.
        node_index (Tensor): :obj:`[B, K]` index of each node in its modality.
        base_score (Tensor): :obj:`[B, K]` base similarity of each node to the query.
        y (Tensor, optional): :obj:`[B, K]` bool, nodes matching the query.
    """

    direction: str
    x: Tensor
    adj: Tensor
    node_type: Tensor
    candidate_mask: Tensor
    query_index: Tensor
    node_index: Tensor
    base_score: Tensor
    y: Optional[Tensor] = None

    def __post_init__(self) -> None:
        check_direction(self.direction)
        if self.x.dim() != 3:
            raise ValueError(f"x: expected shape [B, K, F], got {tuple(self.x.shape)}")
        b, k, _ = self.x.shape
        expect = {"adj": (b, k, k), "node_type": (k,), "candidate_mask": (k,),
                  "query_index": (b,), "node_index": (b, k), "base_score": (b, k), "y": (b, k)}
        for name, shape in expect.items():
            value = getattr(self, name)
            if value is not None and tuple(value.shape) != shape:
                raise ValueError(f"{name}: expected shape {list(shape)}, got {list(value.shape)}")

    @property
    def num_graphs(self) -> int:
        """Number of query graphs ``B``."""
        return self.x.shape[0]

    @property
    def num_nodes(self) -> int:
        """Nodes per graph ``K``."""
        return self.x.shape[1]

    @property
    def num_features(self) -> int:
        """Feature size ``F``."""
        return self.x.shape[2]

    def to(self, device: Union[str, torch.device, None] = None, non_blocking: bool = False) -> "GraphBatch":
        """A copy with every tensor on ``device``."""
        return replace(self, **{f.name: getattr(self, f.name).to(device, non_blocking=non_blocking)
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def pin_memory(self) -> "GraphBatch":
        """A copy in pinned memory (for fast host-to-device copies)."""
        return replace(self, **{f.name: getattr(self, f.name).pin_memory()
                                for f in fields(self) if isinstance(getattr(self, f.name), Tensor)})

    def __getitem__(self, index: Union[int, slice, Tensor]) -> "GraphBatch":
        """Select graphs (keeps the batch dimension for an int)."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        per_graph = ("x", "adj", "query_index", "node_index", "base_score", "y")
        return replace(self, **{name: getattr(self, name)[index] for name in per_graph
                                if getattr(self, name) is not None})

    def flat_x(self) -> Tensor:
        """Node features of all graphs stacked, :obj:`[B * K, F]`."""
        return self.x.reshape(-1, self.x.shape[-1])

    def batch_vector(self) -> Tensor:
        """Graph id of every node, :obj:`[B * K]` (PyG's ``batch``)."""
        return torch.arange(self.num_graphs, device=self.x.device).repeat_interleave(self.num_nodes)

    def edge_index(self, full: bool = False) -> Tuple[Tensor, Tensor]:
        """The adjacency as PyG edges over :meth:`flat_x` (source row 0, target row 1).

        ``adj[b, u, v]`` is the weight with which node ``u`` attends to node
        ``v``: messages flow from ``v`` (source) to ``u`` (target).

        Args:
            full (bool): every ordered pair within each graph, with weight 0
                where there is no overlap edge (what attention over the whole
                neighbourhood needs), instead of only the overlap edges.

        Returns:
            ``(edge_index [2, E], edge_weight [E])``.
        """
        b, k = self.num_graphs, self.num_nodes
        if full:
            g, u, v = torch.meshgrid(torch.arange(b, device=self.adj.device),
                                     torch.arange(k, device=self.adj.device),
                                     torch.arange(k, device=self.adj.device), indexing="ij")
            g, u, v = g.reshape(-1), u.reshape(-1), v.reshape(-1)
        else:
            g, u, v = self.adj.nonzero(as_tuple=True)
        weight = self.adj[g, u, v]
        edge_index = torch.stack([g * k + v, g * k + u])
        return edge_index, weight
