"""Build every query graph of a split in batch."""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor
from torch_geometric.data import HeteroData

from ..bundle import SimilarityBundle
from ..data.source import SimilaritySource, as_source, gallery_size
from ..modality import IMAGE, TEXT, check_direction, gallery_modality, kind_between, query_modality
from ..pillars import Pillars, check_anchor, pillar_features, select_pillars, top_others
from .batch import GraphBatch
from .dataset import QueryGraphDataset
from .node_features import (check_node_features, is_transductive, num_node_features, rank_features,
                            reciprocal_features)
from .priors import is_prior, prior_reranker, prior_scores
from .overlap import NeighborTables, neighbor_tables, overlap_adjacency, overlap_counts

__all__ = ["PillarGraphBuilder", "positive_sample", "caption_groups"]


def caption_groups(txt2img: Tensor, num_images: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Captions grouped by image: ``(order, starts, counts)``, so that image ``i``'s captions are
    ``order[starts[i]:starts[i] + counts[i]]`` (one stable sort of ``txt2img``)."""
    order = torch.argsort(txt2img, stable=True)
    counts = torch.bincount(txt2img, minlength=num_images)
    return order, torch.cumsum(counts, 0) - counts, counts


def positive_sample(source: SimilaritySource, nodes: Tensor, node_type: Tensor,
                    generator: Optional[torch.Generator] = None,
                    groups: Optional[Tuple[Tensor, Tensor, Tensor]] = None) -> Tensor:
    """Map every node to a matching item of the other modality (method.md, section 5).

    A caption maps to its image; an image to one of its captions, drawn
    uniformly with ``generator``.

    Args:
        nodes: :obj:`[Q, K]` ids in the modality given by ``node_type``.
        node_type: :obj:`[K]`.
        generator: random generator for the image -> caption draw.
        groups: :func:`caption_groups` of ``source.txt2img``, when the caller
            keeps them (default: computed here, one sort of every caption).

    Returns:
        :obj:`[Q, K]` ids in the other modality.
    """
    t2i = source.txt2img.to(nodes.device)
    if groups is None:
        groups = caption_groups(t2i, source.num_images)
    order, starts, counts = (g.to(nodes.device) for g in groups)
    out = torch.empty_like(nodes)
    txt = (node_type == TEXT).to(nodes.device)
    out[:, txt] = t2i[nodes[:, txt]]
    img = ~txt
    if bool(img.any()):
        ids = nodes[:, img]
        u = torch.rand(ids.shape, generator=generator, device="cpu").to(nodes.device)
        pick = (u * counts[ids]).long().clamp_max(counts[ids] - 1)
        out[:, img] = order[starts[ids] + pick]
    return out


class _RankedSource:
    """Wraps a source so that each kind is ranked once, at the deepest list a build needs.

    Pillars, candidates, context nodes and overlap lists all ask for top-k
    lists of the same few kinds at different depths; a full-row ``topk`` per
    kind, sliced afterwards, avoids ranking the same matrix several times.
    """

    def __init__(self, source: SimilaritySource, depth: Dict[str, int]) -> None:
        self.source = source
        self.depth = depth
        self._ranked: Dict[str, tuple] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.source, name)

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None):
        if k > self.depth.get(kind, 0):
            return self.source.topk(kind, k, rows)
        if kind not in self._ranked:
            self._ranked[kind] = self.source.topk(kind, self.depth[kind])
        idx, val = self._ranked[kind]
        if rows is None:
            return idx[:, :k], val[:, :k]
        rows = rows.to(idx.device)
        return idx[rows, :k], val[rows, :k]

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        return self.source.gather(kind, rows, cols)


class PillarGraphBuilder:
    r"""Builds the query graphs of a split: pillar features plus overlap adjacency.

    Every query's graph has node 0 = the query, then its top ``k - 1``
    cross-modal candidates in base-score order, then ``context_nodes`` of its
    top same-modal neighbours (the query itself excluded). Node features are
    the pillar vectors of :mod:`pillargraph.pillars`; edges come from
    neighbour overlap (:mod:`pillargraph.graphs.overlap`).

    Args:
        num_pillars (int, optional): pillars per half, ``L`` (default: :obj:`64`).
        k_i2t (int, optional): nodes of an image query's graph before context
            nodes, query included, ``K`` (default: :obj:`32`, i.e. 31 candidates).
        k_t2i (int, optional): the same for caption queries (default: :obj:`8`).
        overlap_neighbors (int, optional): ``C``, neighbours per modality
            compared for overlap (default: :obj:`10`).
        sparsity (float, optional): :math:`\gamma`; normalised overlap weights not
            above :math:`\gamma / K` are dropped (default: :obj:`0.8`).
        anchor (str, optional): ``'both'``, ``'inter'`` or ``'intra'`` pillar
            halves (default: :obj:`'both'`).
        context_nodes (int, optional): extra same-modal context nodes (default: :obj:`0`).
        include_self (bool, optional): the query is its own first intra pillar
            (default: :obj:`True`; see :mod:`pillargraph.pillars`).
        device (str or torch.device, optional): where to build; dense bundles
            are moved there (default: the data's device).
        chunk_size (int, optional): queries processed at once, bounding
            temporary memory (default: :obj:`2048`).
        node_features (sequence of str, optional): extra feature groups appended
            to every node's pillar vector, see :mod:`pillargraph.graphs.node_features`
            (``'rank'``, ``'reciprocal'``, ``'prior:<method>'``; default: none, the
            paper's features).
        reciprocal_depth (int, optional): reverse-list depth :math:`D` read by the
            ``'reciprocal'`` group (default: :obj:`64`).

    Example:
        >>> builder = PillarGraphBuilder(num_pillars=16, k_i2t=8, k_t2i=4)
        >>> graphs = builder.build(bundle, "i2t")          # doctest: +SKIP
        >>> graphs[0]                                      # doctest: +SKIP
        HeteroData(direction='i2t', image={x=[1, 32], ...}, text={x=[7, 32], ...}, ...)
    """

    def __init__(self, num_pillars: int = 64, k_i2t: int = 32, k_t2i: int = 8,
                 overlap_neighbors: int = 10, sparsity: float = 0.8, anchor: str = "both",
                 context_nodes: int = 0, include_self: bool = True,
                 device: Union[str, torch.device, None] = None, chunk_size: int = 2048,
                 node_features: Sequence[str] = (), reciprocal_depth: int = 64) -> None:
        for name, value, low in (("num_pillars", num_pillars, 1), ("k_i2t", k_i2t, 2),
                                 ("k_t2i", k_t2i, 2), ("overlap_neighbors", overlap_neighbors, 1),
                                 ("context_nodes", context_nodes, 0), ("chunk_size", chunk_size, 1),
                                 ("reciprocal_depth", reciprocal_depth, 1)):
            if not isinstance(value, int) or value < low:
                raise ValueError(f"{name}: expected an integer >= {low}, got {value!r}")
        if not 0.0 <= float(sparsity):
            raise ValueError(f"sparsity: must be non-negative, got {sparsity}")
        self.num_pillars = num_pillars
        self.k_i2t = k_i2t
        self.k_t2i = k_t2i
        self.overlap_neighbors = overlap_neighbors
        self.sparsity = float(sparsity)
        self.anchor = check_anchor(anchor)
        self.context_nodes = context_nodes
        self.include_self = include_self
        self.device = torch.device(device) if device is not None else None
        self.chunk_size = chunk_size
        self.node_features = check_node_features(node_features)
        self.reciprocal_depth = reciprocal_depth
        self._tables: Optional[tuple] = None
        self._priors: Optional[tuple] = None
        self._reverse: Optional[tuple] = None
        self._groups: Optional[tuple] = None  # caption_groups of the split, for mirrors

    # ----------------------------------------------------------------- config
    @property
    def config(self) -> Dict[str, Any]:
        """The constructor arguments (``device`` excluded), for results files and checkpoints."""
        return dict(num_pillars=self.num_pillars, k_i2t=self.k_i2t, k_t2i=self.k_t2i,
                    overlap_neighbors=self.overlap_neighbors, sparsity=self.sparsity,
                    anchor=self.anchor, context_nodes=self.context_nodes,
                    include_self=self.include_self, node_features=list(self.node_features),
                    reciprocal_depth=self.reciprocal_depth)

    @property
    def num_pillar_features(self) -> int:
        """Pillar columns of every node, ``2L`` for ``anchor='both'``, else ``L``."""
        return self.num_pillars * (2 if self.anchor == "both" else 1)

    @property
    def num_extra_features(self) -> int:
        """Columns appended by :attr:`node_features` (after the pillar columns)."""
        return num_node_features(self.node_features)

    @property
    def num_features(self) -> int:
        """Feature size of every node: pillar columns plus extra columns."""
        return self.num_pillar_features + self.num_extra_features

    @property
    def transductive(self) -> bool:
        """Whether the graphs read other queries of the split (``'reciprocal'``, a transductive prior)."""
        return is_transductive(self.node_features)

    def num_candidates(self, direction: str) -> int:
        """Candidates re-ranked per query of ``direction`` (``k - 1``)."""
        return (self.k_i2t if check_direction(direction) == "i2t" else self.k_t2i) - 1

    def node_type(self, direction: str) -> Tensor:
        """:obj:`[K]` node types of ``direction``'s graph layout."""
        qt, gt = query_modality(direction), gallery_modality(direction)
        return torch.tensor([qt] + [gt] * self.num_candidates(direction) + [qt] * self.context_nodes)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"PillarGraphBuilder({args})"

    # ------------------------------------------------------------------ input
    def source(self, data: Union[SimilarityBundle, SimilaritySource]) -> SimilaritySource:
        """The :class:`~pillargraph.data.SimilaritySource` for ``data`` on the builder's device."""
        if isinstance(data, SimilarityBundle) and self.device is not None and data.device != self.device:
            data = data.to(self.device)
        return as_source(data)

    def _check(self, source: SimilaritySource, direction: str) -> None:
        check_direction(direction)
        intra = kind_between(query_modality(direction), query_modality(direction))
        n_q, n_g = gallery_size(source, intra), gallery_size(source, direction)
        k_name = f"k_{direction}"
        if self.num_candidates(direction) > n_g:
            raise ValueError(f"{k_name}: {self.num_candidates(direction)} candidates asked for, "
                             f"but the gallery has only {n_g} items")
        if self.num_pillars > min(n_q, n_g):
            raise ValueError(f"num_pillars: {self.num_pillars} pillars asked for, but the split has "
                             f"only {min(n_q, n_g)} items in one modality")
        if self.context_nodes > n_q - 1:
            raise ValueError(f"context_nodes: {self.context_nodes} asked for, but only {n_q - 1} "
                             f"other items of the query modality exist")
        self._check_depths(source, direction)

    def check(self, data: Union[SimilarityBundle, SimilaritySource]) -> None:
        """Check, without building anything, that both directions' graphs can be built from ``data``.

        Call it before long work (an epoch of training before the dev graphs are
        built) so that a split too small for the settings, or neighbour lists too
        shallow for them, fails at once.

        Raises:
            ValueError: names the setting the split cannot serve (``k_i2t``,
                ``num_pillars``, the ``'reciprocal'`` node features ...) and, for
                lists, the depth they need.
        """
        source = self.source(data)
        for direction in ("i2t", "t2i"):
            self._check(source, direction)

    def _check_depths(self, source: SimilaritySource, direction: str) -> None:
        """Refuse neighbour lists shallower than a build of ``direction`` reads, naming the setting."""
        if not callable(getattr(source, "depth", None)):  # dense scores: every depth is there
            return
        reverse = "t2i" if direction == "i2t" else "i2t"
        for kind, need in self._depths(source, direction).items():
            have = source.depth(kind)
            if have >= need:
                continue
            if kind == reverse:
                whole = need < self.reciprocal_depth  # capped at the split's size: the whole list
                what = (f"node_features 'reciprocal' ranks the query in each candidate's own {kind} list, read "
                        + (f"whole ({need} items)" if whole else f"{need} deep (reciprocal_depth)"))
            elif kind == direction and self.num_candidates(direction) >= self.num_pillars:
                what = f"k_{direction} {self.num_candidates(direction) + 1} reads the top {need} (the candidates)"
            else:
                what = f"num_pillars {self.num_pillars} reads the top {need}" + ("" if kind == direction else
                                                                                 " (with the item itself)")
            raise ValueError(f"{kind} lists: {have} deep, but {what}; rebuild the lists with "
                             f"`pillargraph neighbors --k {need}` or more, or change the setting")

    def tables(self, source: SimilaritySource) -> NeighborTables:
        """The overlap neighbour lists of ``source`` (computed once per source and cached)."""
        if self._tables is None or self._tables[0] is not source:
            self._tables = (source, neighbor_tables(source, self.overlap_neighbors))
        return self._tables[1]

    def _per_split(self, slot: str, source: SimilaritySource, make: Callable[[SimilaritySource], Any]) -> Any:
        """``make(source)``, cached in ``slot`` until another split comes (a bundle's sources are one split)."""
        if isinstance(source, _RankedSource):
            source = source.source
        key = getattr(source, "bundle", source)
        cached = getattr(self, slot)
        if cached is None or cached[0] is not key:
            cached = (key, make(source))
            setattr(self, slot, cached)
        return cached[1]

    def priors(self, source: SimilaritySource) -> Dict[str, Dict[str, SimilaritySource]]:
        """Each ``'prior:<method>'`` group's re-scored split (computed once per split and cached)."""
        return self._per_split("_priors", source, lambda src: {
            g: prior_scores(src, prior_reranker(g)) for g in self.node_features if is_prior(g)})

    def reverse_lists(self, source: SimilaritySource) -> SimilaritySource:
        """``source`` with the ``'reciprocal'`` group's reverse lists ranked once per split and cached.

        Mirrored lists (:meth:`mirror`) read the reverse lists of a few
        candidates per step; ranking those rows afresh every step would repeat
        the same ``topk`` many times over an epoch.
        """
        return self._per_split("_reverse", source, lambda src: _RankedSource(
            src, {"t2i": self._reverse_depth(src, "i2t"), "i2t": self._reverse_depth(src, "t2i")}))

    # ------------------------------------------------------------------ build
    def build(self, data: Union[SimilarityBundle, SimilaritySource], direction: str,
              indices: Union[Tensor, Sequence[int], None] = None) -> QueryGraphDataset:
        """The query graphs of ``indices`` (default: every query of ``direction``).

        Args:
            data: a :class:`~pillargraph.SimilarityBundle` or a source of neighbour
                lists (:class:`~pillargraph.data.NeighborLists`).
            direction: ``'i2t'`` (image queries) or ``'t2i'`` (caption queries).
            indices: query ids.

        Returns:
            A :class:`QueryGraphDataset`.
        """
        source = self.source(data)
        self._check(source, direction)
        qt = query_modality(direction)
        n_q = source.num_images if qt == IMAGE else source.num_texts
        dev = source.txt2img.device
        if indices is None:
            queries = torch.arange(n_q, device=dev)
        else:
            queries = torch.as_tensor(indices, dtype=torch.long).to(dev).view(-1)
            if queries.numel() and (int(queries.min()) < 0 or int(queries.max()) >= n_q):
                raise ValueError(f"indices: query ids must lie in [0, {n_q}) for {direction}")
        tables = self.tables(source)
        ranked = _RankedSource(source, self._depths(source, direction))
        parts = [self._build_chunk(ranked, tables, direction, queries[a:a + self.chunk_size])
                 for a in range(0, queries.numel(), self.chunk_size)]
        if not parts:
            parts = [self._build_chunk(ranked, tables, direction, queries)]
        graphs = GraphBatch(direction=direction, node_type=parts[0][0].node_type,
                            candidate_mask=parts[0][0].candidate_mask,
                            **{name: torch.cat([getattr(p[0], name) for p in parts])
                               for name in ("x", "adj", "query_index", "node_index", "base_score", "y")})
        pillars = Pillars(direction, queries, torch.cat([p[1].inter for p in parts]),
                          torch.cat([p[1].intra for p in parts]))
        return QueryGraphDataset(graphs, pillars, dict(self.config, direction=direction))

    def _depths(self, source: SimilaritySource, direction: str) -> Dict[str, int]:
        """Deepest list of each kind a build of ``direction`` asks for."""
        qt = query_modality(direction)
        intra = kind_between(qt, qt)
        n_q = gallery_size(source, intra)
        depths = {direction: max(self.num_pillars, self.num_candidates(direction)),
                  intra: min(n_q, max(self.num_pillars, self.context_nodes) + 1)}
        if "reciprocal" in self.node_features:
            depths["t2i" if direction == "i2t" else "i2t"] = self._reverse_depth(source, direction)
        return depths

    def _reverse_depth(self, source: SimilaritySource, direction: str) -> int:
        return min(self.reciprocal_depth, gallery_size(source, "t2i" if direction == "i2t" else "i2t"))

    def extra_features(self, source: SimilaritySource, direction: str, nodes: Tensor, node_type: Tensor,
                       candidate_mask: Tensor, base: Tensor) -> Optional[Tensor]:
        """The :attr:`node_features` columns :obj:`[Q, K, E]` of graphs with these nodes, or None."""
        parts = []
        if "rank" in self.node_features:
            parts.append(rank_features(base, candidate_mask))
        if "reciprocal" in self.node_features:
            parts.append(reciprocal_features(source, direction, nodes, candidate_mask, base,
                                             self._reverse_depth(source, direction)))
        priors = self.priors(source)
        cmask = candidate_mask.to(nodes.device)
        cand = nodes[:, cmask] if priors else None
        for scored in priors.values():
            prior = torch.zeros(nodes.shape, dtype=torch.float32, device=nodes.device)
            prior[:, cmask] = scored[direction].gather(direction, nodes[:, :1].expand_as(cand), cand).float()
            parts.append(rank_features(prior, candidate_mask))
        return torch.cat(parts, dim=-1) if parts else None

    def query_graph(self, data: Union[SimilarityBundle, SimilaritySource], direction: str,
                    index: int) -> HeteroData:
        """The graph of one query as :class:`~torch_geometric.data.HeteroData`."""
        return self.build(data, direction, [int(index)])[0]

    def _build_chunk(self, source: SimilaritySource, tables: NeighborTables, direction: str,
                     queries: Tensor) -> tuple:
        qt, gt = query_modality(direction), gallery_modality(direction)
        cand, cand_score = source.topk(direction, self.num_candidates(direction), queries)
        parts = [queries[:, None], cand.to(queries.device)]
        if self.context_nodes:
            parts.append(top_others(source, kind_between(qt, qt), queries, self.context_nodes))
        nodes = torch.cat(parts, dim=1)
        node_type = self.node_type(direction).to(queries.device)
        pillars = select_pillars(source, direction, queries, self.num_pillars, self.include_self)
        x = pillar_features(source, pillars, nodes, node_type, self.anchor)
        adj = self.adjacency(tables, nodes, node_type)
        base = self.base_scores(source, direction, nodes, node_type)
        y = self.labels(source, direction, nodes, node_type)
        cand_mask = node_type == gt
        cand_mask[0] = False
        extra = self.extra_features(source, direction, nodes, node_type, cand_mask, base)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=-1)
        graphs = GraphBatch(direction, x, adj, node_type, cand_mask, queries, nodes, base, y)
        return graphs, pillars

    # --------------------------------------------------------- graph pieces
    def adjacency(self, tables: NeighborTables, nodes: Tensor, node_type: Tensor) -> Tensor:
        """Overlap adjacency :obj:`[Q, K, K]` of graphs with the given nodes."""
        img, txt = tables.lookup(nodes, node_type)
        # one id space for both modalities: texts after images
        counts = overlap_counts(torch.cat([img, txt + tables.num_images], dim=-1))
        return overlap_adjacency(counts, tables.num_neighbors, self.sparsity)

    @staticmethod
    def base_scores(source: SimilaritySource, direction: str, nodes: Tensor, node_type: Tensor) -> Tensor:
        """Base similarity of every node to its graph's query (node 0), :obj:`[Q, K]`."""
        qt = query_modality(direction)
        out = torch.empty(nodes.shape, dtype=torch.float32, device=nodes.device)
        for t in (IMAGE, TEXT):
            pos = (node_type == t).nonzero().flatten().to(nodes.device)
            if pos.numel():
                out[:, pos] = source.gather(kind_between(qt, t), nodes[:, :1], nodes[:, pos]).float()
        return out

    @staticmethod
    def labels(source: SimilaritySource, direction: str, nodes: Tensor, node_type: Tensor) -> Tensor:
        """:obj:`[Q, K]` bool: candidate nodes that match the query."""
        t2i = source.txt2img.to(nodes.device)
        gt = gallery_modality(direction)
        y = torch.zeros(nodes.shape, dtype=torch.bool, device=nodes.device)
        pos = (node_type == gt).nonzero().flatten().to(nodes.device)
        pos = pos[pos != 0]
        if direction == "i2t":
            y[:, pos] = t2i[nodes[:, pos]] == nodes[:, :1]
        else:
            y[:, pos] = nodes[:, pos] == t2i[nodes[:, :1]]
        return y

    # ---------------------------------------------------------------- mirrors
    def mirror(self, data: Union[SimilarityBundle, SimilaritySource], graphs: GraphBatch,
               queries: Tensor, pillars: Pillars,
               generator: Optional[torch.Generator] = None) -> GraphBatch:
        """The mirrored list of ``graphs`` for the structure-alignment loss (method.md, section 5).

        Every node of each graph is replaced by a matching item of the other
        modality (:func:`positive_sample`) and node 0 by ``queries``; the graph's
        adjacency is reused and the features are recomputed in the pillar
        space of the new queries. For a caption ``t`` with image ``i``, the mirror
        of ``i``'s i2t graph with query ``t`` is a t2i-shaped list, scored by
        the t2i network; the mirror of ``t``'s t2i graph with query ``i`` (each
        candidate image replaced by one of its captions, drawn with
        ``generator``) is an i2t-shaped list.

        Args:
            data: the split the graphs were built from.
            graphs: :obj:`B` graphs of one direction.
            queries: :obj:`[B]` new query ids, of the other modality.
            pillars: the new queries' pillars (direction opposite to ``graphs``).
            generator: for the image -> caption draws.

        Returns:
            A :class:`GraphBatch` of the opposite direction, same layout positions.
        """
        source = self.source(data)
        new_dir = "t2i" if graphs.direction == "i2t" else "i2t"
        if pillars.direction != new_dir:
            raise ValueError(f"pillars: expected {new_dir} pillars to mirror {graphs.direction} graphs, "
                             f"got {pillars.direction}")
        queries = queries.to(graphs.node_index.device).view(-1)
        if queries.numel() != graphs.num_graphs:
            raise ValueError(f"queries: expected {graphs.num_graphs} ids, got {queries.numel()}")
        groups = self._per_split("_groups", source, lambda src: caption_groups(src.txt2img, src.num_images))
        nodes = positive_sample(source, graphs.node_index, graphs.node_type, generator, groups)
        nodes[:, 0] = queries
        node_type = 1 - graphs.node_type
        x = pillar_features(source, pillars, nodes, node_type, self.anchor, dtype=graphs.x.dtype)
        base = self.base_scores(source, new_dir, nodes, node_type)
        y = self.labels(source, new_dir, nodes, node_type)
        ranked = self.reverse_lists(source) if "reciprocal" in self.node_features else source
        extra = self.extra_features(ranked, new_dir, nodes, node_type, graphs.candidate_mask, base)
        if extra is not None:
            x = torch.cat([x, extra.to(x.dtype)], dim=-1)
        return GraphBatch(new_dir, x, graphs.adj, node_type, graphs.candidate_mask, queries, nodes, base, y)
