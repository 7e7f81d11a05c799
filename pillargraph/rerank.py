r"""Re-ranking a split with a trained model (method.md, section 6).

For every query of a direction, the model re-scores its top candidates and the
new scores are written back so that the top-``K`` set stays above every item
outside it.

**Write-back.** Within a query's list, the score to write is
:math:`z = w\,\tilde{\ell} + (1 - w)\,\tilde{b}`, where :math:`\tilde{\ell}` and
:math:`\tilde{b}` are the learned and the base scores standardised over the
list and :math:`w \in [0, 1]` is the *fusion weight*; :math:`z` is then mapped
affinely (hence monotonically) onto the range of the list's original base
scores, :math:`[b_{\min}, b_{\max}]`. Items outside the list keep their base
score, which is at most :math:`b_{\min}`, so the top-``K`` set stays on top.
:math:`w = 1` is the learned ranking alone, :math:`w = 0` returns the base
ranking, and :func:`select_fusion_weights` picks :math:`w` per direction on a
dev split, so re-ranking never lowers *dev* recall (on other splits it may).

**Directions.** The i2t write-back re-scores rows (image queries), the t2i
write-back re-scores columns (caption queries). One matrix cannot keep the
top-K guarantee of every row and every column at once (a row's list and a
column's list may demand opposite orders of the same two entries), so a
re-ranked result carries one matrix per direction: ``sim_i2t`` ranks the
captions of each image and ``sim_t2i`` the images of each caption (see
:class:`~pillargraph.SimilarityBundle`). :data:`OUTPUTS`:

* ``'fused'`` (default): both directions' learned information, per list. With
  :math:`A` the row-written and :math:`B` the column-written matrix, the paper's
  average :math:`F = \tfrac12 (A + B)` is computed and then re-projected into
  each list: an image's candidates are ordered by :math:`F` and mapped affinely
  onto that row's base range (likewise each caption's candidates, along
  columns). Every row of ``sim_i2t`` and every row of ``sim_t2i`` keeps its
  top-K set on top and its outside items at their base scores.
* ``'directions'``: ``sim_i2t = A``, ``sim_t2i = B``: no mixing of directions.
* ``'i2t'`` / ``'t2i'``: only that direction re-ranked; the other keeps the base.

The paper's plain average as one matrix does not keep the guarantee: a
caption outside image ``i``'s list can be lifted by the write-back of its own
column and overtake captions inside the list.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .bundle import SimilarityBundle
from .data.neighbors import NeighborLists
from .graphs.batch import GraphBatch
from .graphs.builder import PillarGraphBuilder
from .graphs.dataset import QueryGraphDataset
from .metrics import evaluate, evaluate_lists, join_summaries, rank_summary
from .modality import DIRECTIONS
from .written_ranks import WrittenRanks, pair_slots

__all__ = ["rerank", "rerank_scores", "score_graphs", "write_back", "mapped_scores", "combine",
           "select_fusion_weights",
           "FusionChoice", "OUTPUTS", "combine_lists", "combine_any", "evaluate_any", "DEFAULT_FUSION_GRID", "Scored",
           "direction_scores", "resolve_fusion", "fusion_for_output", "model_builder", "DEFAULT_FUSION_OUTPUTS",
           "check_outputs", "rerank_queries", "DenseFusion", "best_fusion_weights"]

#: What :func:`rerank` can return (see the module docstring).
OUTPUTS = ("fused", "directions", "i2t", "t2i")
#: Fusion weights tried by :func:`select_fusion_weights`.
DEFAULT_FUSION_GRID = tuple(round(0.1 * i, 1) for i in range(11))
#: Output modes :func:`select_fusion_weights` chooses from by default: mixing the two
#: directions (the paper) or keeping each direction's own re-ranking; ties go to the first.
DEFAULT_FUSION_OUTPUTS = ("fused", "directions")

#: ``{direction: (graphs, learned scores [Q, K])}``, what :func:`rerank_scores` returns.
Scored = Dict[str, Tuple[QueryGraphDataset, Tensor]]


def _standardise(s: Tensor, mask: Tensor) -> Tensor:
    n = mask.sum(-1, keepdim=True).clamp_min(1)
    mean = (s * mask).sum(-1, keepdim=True) / n
    var = (((s - mean) * mask) ** 2).sum(-1, keepdim=True) / n
    return (s - mean) / var.sqrt().clamp_min(1e-12)


@torch.no_grad()
def score_graphs(model: torch.nn.Module, graphs: Union[QueryGraphDataset, GraphBatch],
                 batch_size: int = 1024, device: Union[str, torch.device, None] = None,
                 amp: Optional[bool] = None) -> Tensor:
    """Run ``model`` over every graph; returns the learned scores :obj:`[Q, K]` on the CPU.

    Args:
        model: a :class:`~pillargraph.nn.PillarReranker` (anything mapping a
            :class:`~pillargraph.graphs.GraphBatch` to :obj:`[B, K]` scores).
        graphs: the graphs of one direction.
        batch_size: graphs per forward pass.
        device: where to run (default: the model's device).
        amp: bfloat16 autocast (default: on when running on CUDA).
    """
    g = graphs.graphs if isinstance(graphs, QueryGraphDataset) else graphs
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    amp = device.type == "cuda" if amp is None else amp
    was_training = model.training
    model.eval()
    out = []
    try:
        for a in range(0, g.num_graphs, batch_size):
            batch = g[a:a + batch_size].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
                s = model(batch)
            out.append(s.float().cpu())
    finally:
        model.train(was_training)
    scores = torch.cat(out) if out else torch.empty(0, g.num_nodes)
    bad = int((~torch.isfinite(scores[:, g.candidate_mask.cpu()])).sum())
    if bad:  # the write-back would quietly keep the base ranking
        raise ValueError(f"model: gave {bad} NaN or infinite candidate score(s) on "
                         f"{g.num_graphs} {g.direction} graphs; its weights are broken (a diverged run?)")
    return scores


def write_back(base: Tensor, graphs: GraphBatch, learned: Tensor, weight: float) -> Tensor:
    """Write learned candidate scores into a copy of a base matrix (see the module docstring).

    Args:
        base: :obj:`[Q_all, G]` base scores of the direction (rows = queries).
        graphs: the direction's graphs (their candidates are the rows' top lists).
        learned: :obj:`[Q, K]` learned scores of ``graphs``' nodes.
        weight: fusion weight :math:`w` in ``[0, 1]``.

    Returns:
        The re-scored :obj:`[Q_all, G]` matrix.
    """
    cmask = graphs.candidate_mask.to(learned.device)
    cand = graphs.node_index[:, cmask].to(base.device)
    rows = graphs.query_index.to(base.device)
    b = base[rows[:, None], cand]
    out = base.clone()
    out[rows[:, None], cand] = mapped_scores(b, learned[:, cmask].to(base.device), weight)
    return out


def mapped_scores(base: Tensor, learned: Tensor, weight: float) -> Tensor:
    r"""The write-back of one list per row: :math:`z = w\,\tilde{\ell} + (1 - w)\,\tilde{b}`
    mapped affinely onto each row's base range (see the module docstring).

    Args:
        base: :obj:`[Q, C]` base scores of each query's candidates.
        learned: :obj:`[Q, C]` learned scores of the same candidates.
        weight: fusion weight :math:`w` in ``[0, 1]``.

    Returns:
        :obj:`[Q, C]` scores in ``base``'s dtype; a row whose :math:`z` is
        constant (e.g. all-equal inputs) keeps its base scores.
    """
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight: fusion weight must lie in [0, 1], got {weight}")
    b, ell = base.double(), learned.double()
    ones = torch.ones_like(b)
    z = weight * _standardise(ell, ones) + (1.0 - weight) * _standardise(b, ones)
    lo, hi = b.min(-1, keepdim=True).values, b.max(-1, keepdim=True).values
    zlo, zhi = z.min(-1, keepdim=True).values, z.max(-1, keepdim=True).values
    span = (zhi - zlo)
    mapped = torch.where(span > 0, lo + (z - zlo) / span.clamp_min(1e-300) * (hi - lo), b)
    return mapped.to(base.dtype)


def _project(base: Tensor, graphs: GraphBatch, scores: Tensor) -> Tensor:
    """Order each list's candidates by ``scores`` (same layout as ``base``) within the list's base range."""
    cmask = graphs.candidate_mask
    cand = graphs.node_index[:, cmask].to(base.device)
    rows = graphs.query_index.to(base.device)
    learned = torch.zeros(cand.shape[0], cmask.numel(), dtype=scores.dtype)
    learned[:, cmask.cpu()] = scores[rows[:, None], cand].cpu()
    return write_back(base, graphs, learned, 1.0)


def combine(bundle: SimilarityBundle, scored: Scored, w_i2t: float, w_t2i: float,
            output: str = "fused") -> SimilarityBundle:
    """Write both directions' learned scores back into ``bundle`` (on the CPU) as ``output`` asks.

    Args:
        bundle: the split the graphs were built from.
        scored: :func:`rerank_scores`' result.
        w_i2t, w_t2i: fusion weights per direction.
        output: one of :data:`OUTPUTS` (see the module docstring).

    Returns:
        A copy of ``bundle`` with ``sim_i2t`` (i2t rankings) and ``sim_t2i``
        (t2i rankings) re-scored.
    """
    if output not in OUTPUTS:
        raise ValueError(f"output: unknown output {output!r}; expected one of {list(OUTPUTS)}")
    base = bundle.to("cpu")
    b_i2t, b_t2i = base.sim_i2t, base.t2i_scores.contiguous()
    a = write_back(b_i2t, scored["i2t"][0].graphs, scored["i2t"][1], w_i2t) if output != "t2i" else b_i2t
    b = write_back(b_t2i, scored["t2i"][0].graphs, scored["t2i"][1], w_t2i) if output != "i2t" else b_t2i
    a, b = _finish(b_i2t, b_t2i, scored, a, b, output)
    return base.replace(sim_i2t=a, sim_t2i=b)


def _finish(b_i2t: Tensor, b_t2i: Tensor, scored: Scored, a: Tensor, b: Tensor, output: str) -> Tuple[Tensor, Tensor]:
    """The ``fused`` output: both directions' written-back scores averaged, then put back in each list's range."""
    if output != "fused":
        return a, b
    f = 0.5 * (a + b.T)
    return _project(b_i2t, scored["i2t"][0].graphs, f), _project(b_t2i, scored["t2i"][0].graphs, f.T)


class DenseFusion:
    """:func:`evaluate` of :func:`combine`'s result for many weights and output modes, without
    writing any matrix back.

    ``DenseFusion(dev, scored).metrics(w_i2t, w_t2i, output)`` equals
    ``evaluate(combine(dev, scored, w_i2t, w_t2i, output))`` exactly: the
    written-back candidate scores are computed as :func:`write_back` computes
    them, and the ranks come from :class:`~pillargraph.written_ranks.WrittenRanks`
    (the base rows sorted once). Each direction's write-back and metrics are
    computed once per weight and shared by every pair and mode that uses them
    (in ``'directions'`` mode the i2t and t2i metrics are independent).

    Args:
        dev: the split the graphs were built from.
        scored: :func:`rerank_scores`' result.
    """

    def __init__(self, dev: SimilarityBundle, scored: Scored) -> None:
        base = dev.to("cpu")
        t = base.txt2img
        self.base = {"i2t": base.sim_i2t, "t2i": base.t2i_scores.contiguous()}
        self.graphs = {d: scored[d][0].graphs for d in DIRECTIONS}
        self.learned = {d: scored[d][1] for d in DIRECTIONS}
        self.rows = {d: g.query_index.cpu() for d, g in self.graphs.items()}
        self.cols = {d: g.node_index[:, g.candidate_mask].cpu() for d, g in self.graphs.items()}
        self.written_base = {d: self.base[d][self.rows[d][:, None], self.cols[d]] for d in DIRECTIONS}
        captions = torch.arange(t.numel())
        positives = {"i2t": (t, captions), "t2i": (captions, t)}
        self.ranker = {d: WrittenRanks(self.base[d], self.rows[d], self.cols[d], *positives[d]) for d in DIRECTIONS}
        # each direction's written pairs seen from the other direction: (caption, image) for i2t lists
        self.other_slot = {d: pair_slots(self.rows[o], self.cols[o], self.base[o].shape[1], self.cols[d],
                                         self.rows[d][:, None]) for d, o in (("i2t", "t2i"), ("t2i", "i2t"))}
        self.other_base = {d: self.base[o][self.cols[d], self.rows[d][:, None]]
                           for d, o in (("i2t", "t2i"), ("t2i", "i2t"))}
        self._written: Dict[Tuple[str, float], Tensor] = {}
        self._summaries: Dict[Tuple[Any, ...], Dict[str, float]] = {}

    def written(self, direction: str, weight: float) -> Tensor:
        """:obj:`[Q, C]` the candidate scores :func:`write_back` writes for ``direction`` at ``weight``."""
        key = (direction, weight)
        if key not in self._written:
            g = self.graphs[direction]
            learned = self.learned[direction][:, g.candidate_mask.to(self.learned[direction].device)]
            self._written[key] = mapped_scores(self.written_base[direction], learned.cpu(), weight)
        return self._written[key]

    def _summary(self, direction: str, key: Tuple[Any, ...], written: Optional[Tensor]) -> Dict[str, float]:
        if (direction, key) not in self._summaries:
            ranks = self.ranker[direction].ranks(self.written_base[direction] if written is None else written)
            self._summaries[(direction, key)] = rank_summary(direction, ranks)
        return self._summaries[(direction, key)]

    def _fused(self, a: Tensor, b: Tensor) -> Tuple[Tensor, Tensor]:
        """:func:`combine`'s ``'fused'`` candidate scores from both directions' written ones."""
        out = []
        for d, mine, other in (("i2t", a, b), ("t2i", b, a)):
            slot = self.other_slot[d]
            seen = torch.where(slot >= 0, other.reshape(-1)[slot.clamp(min=0)].to(self.other_base[d].dtype),
                               self.other_base[d])
            f = 0.5 * (mine + seen) if d == "i2t" else 0.5 * (seen + mine)
            out.append(mapped_scores(self.written_base[d], f, 1.0))
        return out[0], out[1]

    def metrics(self, w_i2t: float, w_t2i: float, output: str = "fused") -> Dict[str, float]:
        """``evaluate(combine(dev, scored, w_i2t, w_t2i, output))``."""
        if output not in OUTPUTS:
            raise ValueError(f"output: unknown output {output!r}; expected one of {list(OUTPUTS)}")
        if output == "fused":
            a, b = self._fused(self.written("i2t", w_i2t), self.written("t2i", w_t2i))
            key = ("fused", w_i2t, w_t2i)
            return join_summaries(self._summary("i2t", key, a), self._summary("t2i", key, b))
        i2t = self._summary("i2t", ("base",), None) if output == "t2i" else \
            self._summary("i2t", ("written", w_i2t), self.written("i2t", w_i2t))
        t2i = self._summary("t2i", ("base",), None) if output == "i2t" else \
            self._summary("t2i", ("written", w_t2i), self.written("t2i", w_t2i))
        return join_summaries(i2t, t2i)


def _dense_fusion_tables(dev: SimilarityBundle, scored: Scored, grid: Sequence[float],
                         outputs: Sequence[str]) -> Dict[str, Dict[Tuple[float, float], float]]:
    """dev rSum of every weight pair in every output mode (:class:`DenseFusion`)."""
    search = DenseFusion(dev, scored)
    return {o: {(wi, wt): search.metrics(wi, wt, o)["rsum"] for wi, wt in itertools.product(grid, grid)}
            for o in outputs}


# ------------------------------------------------------------------ neighbour lists
def _prefix(lists: NeighborLists, graphs: GraphBatch) -> Tuple[Tensor, Tensor, Tensor]:
    """``(rows, candidates, base scores)`` of the graphs, checked to be the lists' first entries."""
    kind = graphs.direction
    index, score = lists.lists(kind)
    cand = graphs.node_index[:, graphs.candidate_mask].to(index.device)
    rows = graphs.query_index.to(index.device)
    c = cand.shape[1]
    if index.shape[1] < c or not torch.equal(index[rows, :c], cand):
        raise ValueError(f"graphs: the {kind} candidates are not the first {c} entries of the {kind} lists; "
                         f"build the graphs from these lists")
    return rows, cand, score[rows, :c]


def _pair_lookup(rows: Tensor, cols: Tensor, values: Tensor, num_cols: int, q_rows: Tensor, q_cols: Tensor,
                 default: Tensor) -> Tensor:
    """``values`` of the pairs ``(q_rows, q_cols)`` among ``(rows, cols)``, else ``default``."""
    keys = (rows[:, None] * num_cols + cols).reshape(-1)
    keys, order = torch.sort(keys)
    vals = values.reshape(-1)[order]
    q = (q_rows * num_cols + q_cols).reshape(-1)
    pos = torch.searchsorted(keys, q).clamp_(max=keys.numel() - 1)
    hit = keys[pos] == q
    return torch.where(hit, vals[pos].to(default.dtype), default.reshape(-1)).view(default.shape)


def _write_prefix(lists: NeighborLists, kind: str, rows: Tensor, cand: Tensor, new: Tensor) -> Tuple[Tensor, Tensor]:
    """The ``kind`` lists with each row's first entries re-scored by ``new`` and re-sorted."""
    index, score = (t.clone() for t in lists.lists(kind))
    order = torch.sort(new, dim=1, descending=True, stable=True).indices
    c = cand.shape[1]
    index[rows, :c] = cand.gather(1, order)
    score[rows, :c] = new.gather(1, order).to(score.dtype)
    return index, score


def combine_lists(lists: NeighborLists, scored: Scored, w_i2t: float, w_t2i: float,
                  output: str = "fused") -> NeighborLists:
    """:func:`combine` for a split given as :class:`~pillargraph.data.NeighborLists`.

    The ``i2t`` lists of the result rank the captions of each image and its
    ``t2i`` lists the images of each caption, re-scored exactly as
    :func:`combine` re-scores the rows of ``sim_i2t`` and ``sim_t2i`` (for
    ``'fused'``, a pair's other-direction score is its re-scored value where the
    pair lies in the other direction's re-ranked list, else its base score).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output: unknown output {output!r}; expected one of {list(OUTPUTS)}")
    (gi, li), (gt, lt) = (scored["i2t"][0].graphs, scored["i2t"][1]), (scored["t2i"][0].graphs, scored["t2i"][1])
    ri, ci, bi = _prefix(lists, gi)
    rt, ct, bt = _prefix(lists, gt)
    a = mapped_scores(bi, li[:, gi.candidate_mask].to(bi.device), w_i2t) if output != "t2i" else bi
    b = mapped_scores(bt, lt[:, gt.candidate_mask].to(bt.device), w_t2i) if output != "i2t" else bt
    if output == "fused":
        n, m = lists.num_images, lists.num_texts
        b_of_i = _pair_lookup(rt, ct, b, n, ci, ri[:, None].expand_as(ci), bi)  # B(j, i) for (i, j) in i's list
        a_of_t = _pair_lookup(ri, ci, a, m, ct, rt[:, None].expand_as(ct), bt)  # A(i, j) for (j, i) in j's list
        a, b = mapped_scores(bi, 0.5 * (a + b_of_i), 1.0), mapped_scores(bt, 0.5 * (b + a_of_t), 1.0)
    return lists.with_lists(i2t=_write_prefix(lists, "i2t", ri, ci, a), t2i=_write_prefix(lists, "t2i", rt, ct, b))


@dataclass
class FusionChoice:
    """Fusion weights and output mode chosen on a dev split.

    ``table`` holds the dev rSum of every weight pair tried with the chosen
    output; ``by_output`` the best dev rSum of each output mode tried, and
    ``per_output`` each mode's own best weights, ``{mode: {'i2t', 't2i',
    'dev_rsum'}}``: weights chosen for one mode are not the right ones for
    another, so re-ranking in a mode other than ``output`` takes that mode's.
    """

    i2t: float
    t2i: float
    dev_rsum: float
    base_rsum: float
    output: str = "fused"
    table: Dict[Tuple[float, float], float] = field(default_factory=dict, repr=False)
    by_output: Dict[str, float] = field(default_factory=dict)
    per_output: Dict[str, Dict[str, float]] = field(default_factory=dict, repr=False)

    def as_dict(self) -> Dict[str, Any]:
        """The chosen weights, output mode and rSums, and each mode's own weights (JSON-friendly)."""
        return {"i2t": self.i2t, "t2i": self.t2i, "dev_rsum": self.dev_rsum, "base_rsum": self.base_rsum,
                "output": self.output, "by_output": dict(self.by_output),
                "per_output": {o: dict(w) for o, w in self.per_output.items()}}


def _build(builder: PillarGraphBuilder, bundle: SimilarityBundle, directions: Iterable[str],
           graphs: Optional[Dict[str, QueryGraphDataset]]) -> Dict[str, QueryGraphDataset]:
    graphs = dict(graphs or {})
    for d in directions:
        if d not in graphs:
            graphs[d] = builder.build(bundle, d)
    return graphs


def rerank_scores(model: torch.nn.Module, bundle: "Split",
                  builder: Optional[PillarGraphBuilder] = None,
                  graphs: Optional[Dict[str, QueryGraphDataset]] = None,
                  batch_size: int = 1024, device: Union[str, torch.device, None] = None
                  ) -> Dict[str, Tuple[QueryGraphDataset, Tensor]]:
    """Learned scores of every query graph of both directions: ``{direction: (graphs, scores)}``."""
    builder = builder if builder is not None else model_builder(model)
    graphs = _build(builder, bundle, DIRECTIONS, graphs)
    return {d: (graphs[d], score_graphs(model, graphs[d], batch_size=batch_size, device=device))
            for d in DIRECTIONS}


def direction_scores(bundle: SimilarityBundle) -> Dict[str, Tensor]:
    """A re-ranked bundle as one :obj:`[N, M]` matrix per direction, the layout of
    :func:`~pillargraph.compare.compare` and :func:`~pillargraph.baselines.evaluate_rescored`
    (``'i2t'`` ranks along rows, ``'t2i'`` along columns)."""
    return {"i2t": bundle.sim_i2t, "t2i": bundle.t2i_scores.T}


def model_builder(model: torch.nn.Module) -> PillarGraphBuilder:
    """The graph builder a trained model records (``model.builder_config``); a clear error when it has none."""
    cfg = getattr(model, "builder_config", None)
    if not cfg:
        raise ValueError("builder: pass the PillarGraphBuilder the model was trained with "
                         "(the model carries no builder_config)")
    return PillarGraphBuilder(**cfg)


Split = Union[SimilarityBundle, NeighborLists]


def combine_any(split: Split, scored: Scored, w_i2t: float, w_t2i: float, output: str = "fused") -> Split:
    """:func:`combine` for a bundle, :func:`combine_lists` for neighbour lists."""
    if isinstance(split, NeighborLists):
        return combine_lists(split, scored, w_i2t, w_t2i, output)
    return combine(split, scored, w_i2t, w_t2i, output)


def evaluate_any(split: Split) -> Dict[str, float]:
    """:func:`~pillargraph.evaluate` of a bundle, :func:`~pillargraph.metrics.evaluate_lists` of lists."""
    return evaluate_lists(split) if isinstance(split, NeighborLists) else evaluate(split)


def rerank(model: torch.nn.Module, bundle: Split,
           builder: Optional[PillarGraphBuilder] = None, *,
           fusion: Union[float, Tuple[float, float], FusionChoice, None] = None,
           output: Optional[str] = None, graphs: Optional[Dict[str, QueryGraphDataset]] = None,
           batch_size: int = 1024, device: Union[str, torch.device, None] = None) -> SimilarityBundle:
    """Re-rank ``bundle`` with a trained model.

    Args:
        model: a trained :class:`~pillargraph.nn.PillarReranker`.
        bundle: the split to re-rank, a :class:`~pillargraph.SimilarityBundle` or
            :class:`~pillargraph.data.NeighborLists` (whose first entries must cover
            the candidates).
        builder: the graph builder used in training (default: rebuilt from
            ``model.builder_config``, which :class:`~pillargraph.train.Trainer` sets).
        fusion: the fusion weight :math:`w` with the base scores, one for both
            directions or ``(w_i2t, w_t2i)`` or a :class:`FusionChoice` from
            :func:`select_fusion_weights` (default: the weights stored on the
            model by training; a model without them is refused, see
            :func:`resolve_fusion`).
        output: one of :data:`OUTPUTS` (default: the mode the stored fusion
            weights were selected for, else ``'fused'``); with a stored selection,
            that mode's own weights.
        graphs: pre-built graphs ``{direction: dataset}`` of ``bundle`` to reuse.
        batch_size: graphs per forward pass.
        device: where the model runs (default: its device).

    Returns:
        A copy of ``bundle`` (on the CPU) whose ``sim_i2t`` ranks captions per
        image and ``sim_t2i`` images per caption, each re-ranked within its lists;
        for neighbour lists, lists whose ``i2t`` and ``t2i`` kinds are re-ranked.
    """
    w_i2t, w_t2i, output = resolve_fusion(model, fusion, output)
    scored = rerank_scores(model, bundle, builder, graphs, batch_size, device)
    return combine_any(bundle, scored, w_i2t, w_t2i, output)


def rerank_queries(model: torch.nn.Module, split: Split, direction: str, queries: Union[Tensor, Sequence[int]],
                   builder: Optional[PillarGraphBuilder] = None, *,
                   fusion: Union[float, Tuple[float, float], FusionChoice, None] = None,
                   batch_size: int = 1024, device: Union[str, torch.device, None] = None) -> Tensor:
    """Re-rank a few queries of one direction on their own, as an online service would.

    Only the graphs of ``queries`` are built and scored, and each query's row
    is written back with the direction's fusion weight. An inductive model
    (:attr:`~pillargraph.graphs.PillarGraphBuilder.transductive` false) reads
    one query's neighbourhood at a time, so every row equals that query's row
    of :func:`rerank` with ``output='directions'`` (or the direction alone).

    Args:
        model: a trained re-ranker.
        split: the split (the database the queries are scored against), a bundle
            or neighbour lists.
        direction: ``'i2t'`` (image queries) or ``'t2i'`` (caption queries).
        queries: query ids of ``direction``.
        builder: the graph builder (default: the model's own).
        fusion: as in :func:`rerank` (default: the model's stored weights).
        batch_size, device: as in :func:`rerank`.

    Returns:
        :obj:`[Q, G]` re-scored rows (dense bundles), ranking the gallery of ``direction``
        for each query in ``queries``.

    Raises:
        ValueError: a transductive model (it reads all test queries at once), a stored
            output that mixes the two directions (``'fused'``), or neighbour lists.
    """
    builder = builder if builder is not None else model_builder(model)
    if builder.transductive:
        raise ValueError("model: its node features read all test queries at once (transductive); re-rank the "
                         "whole split with rerank()")
    w_i2t, w_t2i, output = resolve_fusion(model, fusion)
    if output == "fused":
        raise ValueError("fusion: the 'fused' output mixes both directions' re-rankings, which reads other "
                         "queries' graphs; use weights chosen for the 'directions' output")
    if not isinstance(split, SimilarityBundle):
        raise ValueError(f"split: expected a SimilarityBundle, got {type(split).__name__}")
    graphs = builder.build(split, direction, queries)
    learned = score_graphs(model, graphs, batch_size=batch_size, device=device)
    base = (split.sim_i2t if direction == "i2t" else split.t2i_scores).to("cpu")
    rows = graphs.graphs.query_index.to(base.device)
    local = replace(graphs.graphs, query_index=torch.arange(rows.numel()))
    weight = w_i2t if direction == "i2t" else w_t2i
    return write_back(base[rows], local, learned, weight) if output != ("t2i" if direction == "i2t" else "i2t") \
        else base[rows].clone()


def resolve_fusion(model: torch.nn.Module, fusion: Any = None, output: Optional[str] = None
                   ) -> Tuple[float, float, str]:
    """``(w_i2t, w_t2i, output)`` exactly as :func:`~pillargraph.rerank.rerank` resolves its arguments.

    Weights chosen on dev belong to the output mode they were chosen for: in
    another mode the selection's own weights for that mode are used
    (:attr:`FusionChoice.per_output`), and a mode the selection did not try is
    refused. No weight is ever assumed: a model without stored weights needs
    ``fusion``.

    Args:
        model: the trained model (its ``fusion_weights`` are the default).
        fusion: one weight, ``(w_i2t, w_t2i)``, a :class:`~pillargraph.rerank.FusionChoice`,
            its dict form, or ``None`` (the model's stored weights).
        output: one of :data:`~pillargraph.rerank.OUTPUTS` (default: the mode the
            stored weights were chosen for; ``'fused'`` for explicit weights).

    Raises:
        ValueError: no ``fusion`` and none stored on the model, stored weights
            without a choice for ``output``, or an unknown ``output``.
    """
    if output is not None and output not in OUTPUTS:
        raise ValueError(f"output: unknown output {output!r}; expected one of {list(OUTPUTS)}")
    if fusion is None:
        fusion = getattr(model, "fusion_weights", None)
        if not fusion:
            raise ValueError("fusion: the model carries no dev-selected fusion weights (a checkpoint of an "
                             "unfinished run, or last.pt); select them on a dev split (select_fusion_weights, "
                             "`pillargraph rerank --dev`) or pass the weights (1.0: the learned scores alone)")
    if isinstance(fusion, (FusionChoice, dict)):
        chosen = fusion_for_output(fusion, output)
        if chosen is None:
            stored = fusion.as_dict() if isinstance(fusion, FusionChoice) else fusion
            modes = sorted({str(stored.get("output", "fused")), *(stored.get("per_output") or {})})
            raise ValueError(f"output: the fusion weights were chosen on dev for {', '.join(modes)}, not "
                             f"{output!r}, and weights of one mode do not carry over to another; select them "
                             f"for {output!r} on a dev split or pass the weights")
        return chosen
    if isinstance(fusion, (tuple, list)):
        if len(fusion) != 2:
            raise ValueError(f"fusion: expected one weight or (w_i2t, w_t2i), got {fusion!r}")
        return float(fusion[0]), float(fusion[1]), output or "fused"
    return float(fusion), float(fusion), output or "fused"


def fusion_for_output(fusion: Union[FusionChoice, Dict[str, Any]], output: Optional[str] = None
                      ) -> Optional[Tuple[float, float, str]]:
    """``(w_i2t, w_t2i, output)`` a dev selection chose for ``output`` (default: its chosen mode), or ``None``
    when it did not try that mode (or recorded only its chosen mode's weights, as older checkpoints do)."""
    stored = fusion.as_dict() if isinstance(fusion, FusionChoice) else fusion
    chosen = str(stored.get("output", "fused"))
    output = chosen if output is None else output
    if output == chosen:
        return float(stored["i2t"]), float(stored["t2i"]), output
    weights = (stored.get("per_output") or {}).get(output)
    return None if weights is None else (float(weights["i2t"]), float(weights["t2i"]), output)


def check_outputs(output: Union[str, Sequence[str]], name: str = "output") -> Tuple[str, ...]:
    """One output mode or several as a tuple (repeats dropped), or :class:`ValueError` naming
    ``name`` and the unknown mode, or saying that ``name`` is empty."""
    outputs = (output,) if isinstance(output, str) else tuple(output)
    if not outputs:
        raise ValueError(f"{name}: empty; name one or more output modes of {list(OUTPUTS)}")
    unknown = [o for o in outputs if o not in OUTPUTS]
    if unknown:
        raise ValueError(f"{name}: unknown output mode(s) {unknown}; expected some of {list(OUTPUTS)}")
    return tuple(dict.fromkeys(outputs))


def best_fusion_weights(table: Mapping[Tuple[float, float], float]) -> Tuple[float, float]:
    """The ``(w_i2t, w_t2i)`` of ``table`` (dev rSum by weight pair) with the highest rSum (compared to 6
    decimals); ties go to the smaller weights, nearer the base ranking. The rule of :func:`select_fusion_weights`,
    for callers that pool tables of several dev splits."""
    return max(table, key=lambda k: (round(table[k], 6), -k[0] - k[1]))


def select_fusion_weights(model: torch.nn.Module, dev: Split,
                          builder: Optional[PillarGraphBuilder] = None,
                          grid: Sequence[float] = DEFAULT_FUSION_GRID,
                          graphs: Optional[Dict[str, QueryGraphDataset]] = None,
                          batch_size: int = 1024, device: Union[str, torch.device, None] = None,
                          output: Union[str, Sequence[str]] = DEFAULT_FUSION_OUTPUTS,
                          scored: Optional[Scored] = None) -> FusionChoice:
    """Choose ``(w_i2t, w_t2i)`` and the output mode on a dev split by the rSum of :func:`rerank`.

    Every pair of ``grid`` is tried with every mode of ``output`` (``(0, 0)``,
    the base ranking, included, so the choice is never worse than the base on
    dev); ties go to the earlier mode, then to the smaller weights. Only
    ``dev`` is read.

    Args:
        output: one of :data:`OUTPUTS` or several (default:
            :data:`DEFAULT_FUSION_OUTPUTS`). The training-free re-rankers re-rank
            each direction on its own, which is ``'directions'``.
        scored: :func:`rerank_scores` of ``dev`` when already computed.
    """
    outputs = check_outputs(output)
    grid = sorted(set(float(w) for w in grid) | {0.0})
    if scored is None:
        scored = rerank_scores(model, dev, builder, graphs, batch_size, device)
    if isinstance(dev, SimilarityBundle):
        tables = _dense_fusion_tables(dev, scored, grid, outputs)
    else:
        tables = {o: {(wi, wt): evaluate_any(combine_any(dev, scored, wi, wt, o))["rsum"]
                      for wi, wt in itertools.product(grid, grid)} for o in outputs}
    best = {o: best_fusion_weights(t) for o, t in tables.items()}
    chosen = max(outputs, key=lambda o: (round(tables[o][best[o]], 6), -outputs.index(o)))
    table, (wi, wt) = tables[chosen], best[chosen]
    per_output = {o: {"i2t": best[o][0], "t2i": best[o][1], "dev_rsum": tables[o][best[o]]} for o in outputs}
    return FusionChoice(wi, wt, table[(wi, wt)], table[(0.0, 0.0)], chosen, table,
                        {o: tables[o][best[o]] for o in outputs}, per_output)
