r"""Re-ranking a split with a trained model (method.md, section 6).

For every query of a direction, the model re-scores its top candidates; the
new scores are written back so that the top-``K`` set stays above every item
outside it, and the two directions are fused:

.. math::
    S = \tfrac{1}{2}\,\big(S'_{\text{i2t}} + S'^{\top}_{\text{t2i}}\big).

**Write-back.** Within a query's list, the score to write is
:math:`z = w\,\tilde{\ell} + (1 - w)\,\tilde{b}`, where :math:`\tilde{\ell}` and
:math:`\tilde{b}` are the learned and the base scores standardised over the
list and :math:`w \in [0, 1]` is the *fusion weight*; :math:`z` is then mapped
affinely (hence monotonically) onto the range of the list's original base
scores, :math:`[b_{\min}, b_{\max}]`. Items outside the list keep their base
score, which is at most :math:`b_{\min}`, so the top-``K`` set stays on top.
:math:`w = 1` is the learned ranking alone, :math:`w = 0` returns the base
ranking exactly, and :func:`select_fusion_weights` picks :math:`w` per
direction on a dev split, so re-ranking never silently lowers dev recall.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from .bundle import SimilarityBundle
from .graphs.batch import GraphBatch
from .graphs.builder import PillarGraphBuilder
from .graphs.dataset import QueryGraphDataset
from .metrics import evaluate
from .modality import DIRECTIONS

__all__ = ["rerank", "rerank_scores", "score_graphs", "write_back", "select_fusion_weights",
           "FusionChoice", "OUTPUTS", "DEFAULT_FUSION_GRID"]

#: What :func:`rerank` can return.
OUTPUTS = ("fused", "i2t", "t2i")
#: Fusion weights tried by :func:`select_fusion_weights`.
DEFAULT_FUSION_GRID = tuple(round(0.1 * i, 1) for i in range(11))


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
    return torch.cat(out) if out else torch.empty(0, g.num_nodes)


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
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight: fusion weight must lie in [0, 1], got {weight}")
    cmask = graphs.candidate_mask.to(learned.device)
    cand = graphs.node_index[:, cmask].to(base.device)
    rows = graphs.query_index.to(base.device)
    b = base[rows[:, None], cand].double()
    ell = learned[:, cmask].to(base.device).double()
    ones = torch.ones_like(b)
    z = weight * _standardise(ell, ones) + (1.0 - weight) * _standardise(b, ones)
    lo, hi = b.min(-1, keepdim=True).values, b.max(-1, keepdim=True).values
    zlo, zhi = z.min(-1, keepdim=True).values, z.max(-1, keepdim=True).values
    span = (zhi - zlo)
    mapped = torch.where(span > 0, lo + (z - zlo) / span.clamp_min(1e-300) * (hi - lo), b)
    out = base.clone()
    out[rows[:, None], cand] = mapped.to(base.dtype)
    return out


@dataclass
class FusionChoice:
    """Fusion weights chosen on a dev split, and the dev rSum of every pair tried."""

    i2t: float
    t2i: float
    dev_rsum: float
    base_rsum: float
    table: Dict[Tuple[float, float], float] = field(default_factory=dict, repr=False)

    def as_dict(self) -> Dict[str, float]:
        """The chosen weights and rSums (JSON-friendly)."""
        return {"i2t": self.i2t, "t2i": self.t2i, "dev_rsum": self.dev_rsum, "base_rsum": self.base_rsum}


def _build(builder: PillarGraphBuilder, bundle: SimilarityBundle, directions: Iterable[str],
           graphs: Optional[Dict[str, QueryGraphDataset]]) -> Dict[str, QueryGraphDataset]:
    graphs = dict(graphs or {})
    for d in directions:
        if d not in graphs:
            graphs[d] = builder.build(bundle, d)
    return graphs


def rerank_scores(model: torch.nn.Module, bundle: SimilarityBundle,
                  builder: Optional[PillarGraphBuilder] = None,
                  graphs: Optional[Dict[str, QueryGraphDataset]] = None,
                  batch_size: int = 1024, device: Union[str, torch.device, None] = None
                  ) -> Dict[str, Tuple[QueryGraphDataset, Tensor]]:
    """Learned scores of every query graph of both directions: ``{direction: (graphs, scores)}``."""
    builder = builder if builder is not None else _model_builder(model)
    graphs = _build(builder, bundle, DIRECTIONS, graphs)
    return {d: (graphs[d], score_graphs(model, graphs[d], batch_size=batch_size, device=device))
            for d in DIRECTIONS}


def _model_builder(model: torch.nn.Module) -> PillarGraphBuilder:
    cfg = getattr(model, "builder_config", None)
    if not cfg:
        raise ValueError("builder: pass the PillarGraphBuilder the model was trained with "
                         "(the model carries no builder_config)")
    return PillarGraphBuilder(**cfg)


def _combine(bundle: SimilarityBundle, scored: Dict[str, Tuple[QueryGraphDataset, Tensor]],
             w_i2t: float, w_t2i: float, output: str) -> Tensor:
    base = bundle.sim_i2t.cpu()
    s_i2t = write_back(base, scored["i2t"][0].graphs, scored["i2t"][1], w_i2t)
    if output == "i2t":
        return s_i2t
    s_t2i = write_back(base.T, scored["t2i"][0].graphs, scored["t2i"][1], w_t2i).T
    if output == "t2i":
        return s_t2i
    return 0.5 * (s_i2t + s_t2i)


def rerank(model: torch.nn.Module, bundle: SimilarityBundle,
           builder: Optional[PillarGraphBuilder] = None, *,
           fusion: Union[float, Tuple[float, float], FusionChoice, None] = None,
           output: str = "fused", graphs: Optional[Dict[str, QueryGraphDataset]] = None,
           batch_size: int = 1024, device: Union[str, torch.device, None] = None) -> SimilarityBundle:
    """Re-rank ``bundle`` with a trained model.

    Args:
        model: a trained :class:`~pillargraph.nn.PillarReranker`.
        bundle: the split to re-rank.
        builder: the graph builder used in training (default: rebuilt from
            ``model.builder_config``, which :class:`~pillargraph.train.Trainer` sets).
        fusion: the fusion weight :math:`w` with the base scores, one for both
            directions or ``(w_i2t, w_t2i)`` or a :class:`FusionChoice` from
            :func:`select_fusion_weights` (default: the weights stored on the
            model by training, else ``1.0``: the learned scores alone).
        output: ``'fused'`` (both directions, method.md section 6), ``'i2t'``
            (only the image queries' lists re-scored: rank it along rows and
            read its i2t metrics) or ``'t2i'`` (only the caption queries' lists:
            rank it along columns and read its t2i metrics).
        graphs: pre-built graphs ``{direction: dataset}`` of ``bundle`` to reuse.
        batch_size: graphs per forward pass.
        device: where the model runs (default: its device).

    Returns:
        A copy of ``bundle`` whose ``sim_i2t`` holds the re-ranked scores (on the CPU).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output: unknown output {output!r}; expected one of {list(OUTPUTS)}")
    w_i2t, w_t2i = _weights(model, fusion)
    scored = rerank_scores(model, bundle, builder, graphs, batch_size, device)
    return bundle.to("cpu").replace(sim_i2t=_combine(bundle, scored, w_i2t, w_t2i, output))


def _weights(model: torch.nn.Module, fusion) -> Tuple[float, float]:
    if fusion is None:
        fusion = getattr(model, "fusion_weights", None) or 1.0
    if isinstance(fusion, FusionChoice):
        return fusion.i2t, fusion.t2i
    if isinstance(fusion, dict):
        return float(fusion["i2t"]), float(fusion["t2i"])
    if isinstance(fusion, (tuple, list)):
        if len(fusion) != 2:
            raise ValueError(f"fusion: expected one weight or (w_i2t, w_t2i), got {fusion!r}")
        return float(fusion[0]), float(fusion[1])
    return float(fusion), float(fusion)


def select_fusion_weights(model: torch.nn.Module, dev: SimilarityBundle,
                          builder: Optional[PillarGraphBuilder] = None,
                          grid: Sequence[float] = DEFAULT_FUSION_GRID,
                          graphs: Optional[Dict[str, QueryGraphDataset]] = None,
                          batch_size: int = 1024, device: Union[str, torch.device, None] = None
                          ) -> FusionChoice:
    """Choose ``(w_i2t, w_t2i)`` on a dev split by the rSum of the fused result.

    Every pair of ``grid`` is tried (``(0, 0)``, the base ranking, included, so
    the choice is never worse than the base on dev); ties go to the smaller
    weights.
    """
    grid = sorted(set(float(w) for w in grid) | {0.0})
    scored = rerank_scores(model, dev, builder, graphs, batch_size, device)
    base = dev.sim_i2t.cpu()
    by_i2t = {w: write_back(base, scored["i2t"][0].graphs, scored["i2t"][1], w) for w in grid}
    by_t2i = {w: write_back(base.T, scored["t2i"][0].graphs, scored["t2i"][1], w).T for w in grid}
    table = {}
    for wi, wt in itertools.product(grid, grid):
        table[(wi, wt)] = evaluate(0.5 * (by_i2t[wi] + by_t2i[wt]), dev.txt2img)["rsum"]
    best = max(table, key=lambda k: (round(table[k], 6), -k[0] - k[1]))
    return FusionChoice(best[0], best[1], table[best], table[(0.0, 0.0)], table)
