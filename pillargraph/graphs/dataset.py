"""A dataset of query graphs backed by batched tensors."""
from __future__ import annotations

import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor
from torch.utils.data import Dataset
from torch_geometric.data import HeteroData

from ..io import atomic_torch_save
from ..modality import IMAGE, NODE_TYPES, TEXT
from ..pillars import Pillars
from .batch import GraphBatch

__all__ = ["QueryGraphDataset", "to_hetero_data", "from_hetero_batch"]

RELATION = "overlaps"
_FORMAT_VERSION = 1


def to_hetero_data(graphs: GraphBatch, i: int) -> HeteroData:
    """Graph ``i`` of a :class:`GraphBatch` as a :class:`~torch_geometric.data.HeteroData`.

    Node types ``image`` and ``text`` (only those present); every node store has
    ``x``, ``gallery_index``, ``base_score``, ``is_query`` and ``position`` (its
    position in the dense layout); the candidate type also ``y`` when labels are
    known. Edge types ``(src, 'overlaps', dst)`` for every pair of present node
    types carry ``edge_index`` and ``edge_weight``: an edge ``v -> u`` with weight
    ``adj[u, v]``, the weight with which ``u`` aggregates ``v``.
    """
    data = HeteroData()
    data.direction = graphs.direction
    data.query_index = int(graphs.query_index[i])
    cand_type = int(graphs.node_type[graphs.candidate_mask][0]) if bool(graphs.candidate_mask.any()) else -1
    positions = {}
    for t in (IMAGE, TEXT):
        pos = (graphs.node_type == t).nonzero().flatten()
        if pos.numel() == 0:
            continue
        positions[t] = pos
        store = data[NODE_TYPES[t]]
        store.x = graphs.x[i, pos]
        store.gallery_index = graphs.node_index[i, pos]
        store.base_score = graphs.base_score[i, pos]
        store.is_query = pos == 0
        store.position = pos
        if graphs.y is not None and t == cand_type:
            store.y = graphs.y[i, pos]
    adj = graphs.adj[i]
    for s, spos in positions.items():
        for d, dpos in positions.items():
            block = adj[dpos][:, spos]  # [n_dst, n_src]
            dst, src = block.nonzero(as_tuple=True)
            store = data[NODE_TYPES[s], RELATION, NODE_TYPES[d]]
            store.edge_index = torch.stack([src, dst])
            store.edge_weight = block[dst, src]
    return data


def from_hetero_batch(data: HeteroData) -> GraphBatch:
    """Inverse of :func:`to_hetero_data` for a collated batch (e.g. from PyG's ``DataLoader``).

    All graphs of the batch must share one layout (one direction and one
    builder), which is what :class:`QueryGraphDataset` produces.
    """
    directions = data.direction if isinstance(data.direction, (list, tuple)) else [data.direction]
    if len(set(directions)) != 1:
        raise ValueError(f"data: a batch must hold one direction, got {sorted(set(directions))}")
    stores = {t: data[NODE_TYPES[t]] for t in (IMAGE, TEXT) if NODE_TYPES[t] in data.node_types}
    num_graphs = int(data.num_graphs) if hasattr(data, "num_graphs") else 1

    def batch_of(store) -> Tensor:
        b = getattr(store, "batch", None)
        return b if b is not None else torch.zeros(store.num_nodes, dtype=torch.long)

    k = max(int(s.position.max()) for s in stores.values()) + 1
    f = next(iter(stores.values())).x.shape[1]
    ref = next(iter(stores.values())).x
    x = ref.new_zeros(num_graphs, k, f)
    node_type = torch.full((k,), -1, dtype=torch.long, device=ref.device)
    node_index = torch.zeros(num_graphs, k, dtype=torch.long, device=ref.device)
    base = ref.new_zeros(num_graphs, k)
    y = None
    cand_mask = torch.zeros(k, dtype=torch.bool, device=ref.device)
    for t, st in stores.items():
        b, p = batch_of(st), st.position
        x[b, p] = st.x
        node_type[p] = t
        node_index[b, p] = st.gallery_index
        base[b, p] = st.base_score
        if "y" in st:
            y = torch.zeros(num_graphs, k, dtype=torch.bool, device=ref.device) if y is None else y
            y[b, p] = st.y
    qt = int(node_type[0])
    cand_type = TEXT if directions[0] == "i2t" else IMAGE
    if qt == cand_type:
        raise ValueError("data: node 0 must be the query, of the other modality than the candidates")
    count = torch.zeros(k, dtype=torch.long, device=ref.device)
    for t, st in stores.items():
        count[st.position[batch_of(st) == 0]] += 1
    if bool((count != 1).any()):
        raise ValueError("data: graphs of a batch must share one node layout")
    cand_mask[node_type == cand_type] = True
    adj = ref.new_zeros(num_graphs, k, k)
    for s in stores:
        for d in stores:
            key = (NODE_TYPES[s], RELATION, NODE_TYPES[d])
            if key not in data.edge_types:
                continue
            es = data[key]
            src, dst = es.edge_index
            sb, sp = batch_of(stores[s])[src], stores[s].position[src]
            dp = stores[d].position[dst]
            adj[sb, dp, sp] = es.edge_weight.to(adj.dtype)
    qi = data.query_index
    query_index = qi if isinstance(qi, Tensor) else torch.tensor([qi], device=ref.device)
    return GraphBatch(directions[0], x, adj, node_type, cand_mask, query_index.view(-1), node_index, base, y)


class QueryGraphDataset(Dataset):
    """All query graphs of one direction of one split, stored as batched tensors.

    Indexing returns a :class:`~torch_geometric.data.HeteroData` (usable with
    :class:`torch_geometric.loader.DataLoader`); :meth:`batch` returns the same
    graphs as a dense :class:`GraphBatch` without building per-graph objects,
    which is what training uses.

    Args:
        graphs (GraphBatch): the graphs.
        pillars (Pillars, optional): the queries' pillars (kept for the
            structure-alignment mirrors and for re-use).
        config (dict, optional): the builder configuration that produced them.
    """

    def __init__(self, graphs: GraphBatch, pillars: Optional[Pillars] = None,
                 config: Optional[Dict[str, Any]] = None) -> None:
        self.graphs = graphs
        self.pillars = pillars
        self.config = dict(config or {})

    @property
    def direction(self) -> str:
        """``'i2t'`` or ``'t2i'``."""
        return self.graphs.direction

    def __len__(self) -> int:
        return self.graphs.num_graphs

    def __getitem__(self, index: int) -> HeteroData:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} graphs")
        return to_hetero_data(self.graphs, index % len(self))

    def batch(self, index: Union[Tensor, Sequence[int], slice, None] = None) -> GraphBatch:
        """The graphs at ``index`` (all when ``None``) as one :class:`GraphBatch`."""
        if index is None:
            return self.graphs
        if not isinstance(index, (slice, Tensor)):
            index = torch.as_tensor(index, dtype=torch.long)
        return self.graphs[index]

    def to(self, device: Union[str, torch.device, None]) -> "QueryGraphDataset":
        """A copy with the tensors on ``device``."""
        p = self.pillars
        if p is not None:
            p = Pillars(p.direction, p.queries.to(device), p.inter.to(device), p.intra.to(device))
        return QueryGraphDataset(self.graphs.to(device), p, self.config)

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write to ``path`` atomically (a :func:`torch.save` file of plain tensors)."""
        g = self.graphs
        state = {"format": _FORMAT_VERSION, "direction": g.direction, "config": self.config,
                 "graphs": {f.name: getattr(g, f.name) for f in fields(g)
                            if isinstance(getattr(g, f.name), Tensor)}}
        if self.pillars is not None:
            state["pillars"] = {"queries": self.pillars.queries, "inter": self.pillars.inter,
                                "intra": self.pillars.intra}
        return atomic_torch_save(state, path)

    @classmethod
    def load(cls, path: Union[str, os.PathLike], map_location: Any = "cpu") -> "QueryGraphDataset":
        """Read a file written by :meth:`save` (with ``weights_only=True``)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"graph file not found: {path}")
        state = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(state, dict) or state.get("format") != _FORMAT_VERSION:
            raise ValueError(f"{path}: not a pillargraph graph file (format {_FORMAT_VERSION})")
        graphs = GraphBatch(direction=state["direction"], **state["graphs"])
        pillars = None
        if "pillars" in state:
            pillars = Pillars(state["direction"], **state["pillars"])
        return cls(graphs, pillars, state.get("config"))

    def __repr__(self) -> str:
        g = self.graphs
        return (f"QueryGraphDataset(direction={g.direction!r}, num_graphs={g.num_graphs}, "
                f"num_nodes={g.num_nodes}, num_features={g.num_features})")
