r"""Dev-split tuning of the training-free re-rankers, and their fusion with the base scores.

A fair comparison gives every training-free method what the learned model gets:
its main hyperparameters chosen on a dev split, and a dev-selected fusion with
the base scores. :func:`tune_reranker` tries every point of a small grid
(:data:`TUNING_GRIDS`, one to three parameters per method, the published
defaults always included) on the dev split, keeps the point with the best dev
rSum, then chooses per direction the weight :math:`w` of

.. math::
    z_q = w\,\mathrm{std}_q(r_q) + (1 - w)\,\mathrm{std}_q(b_q)

where :math:`r_q` and :math:`b_q` are the re-ranked and base scores of query
:math:`q` over the whole gallery and :math:`\mathrm{std}_q` standardises them
to zero mean and unit variance per query (:func:`fuse_with_base`). The grid of
:math:`w` contains 0 (the base) and 1 (the method alone; standardising one
query's scores does not change their order). Only the dev split is read; the
returned :class:`TunedReranker` is then applied to test splits unchanged.

Example:
    >>> tuned = tune_reranker("krnn", dev_bundle)                  # doctest: +SKIP
    >>> scores = tuned(test_bundle, fused=True)                    # doctest: +SKIP
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .bank import QueryBank
from .base import Reranker
from .evaluate import evaluate_rescored
from .resolver import get_reranker

__all__ = ["TUNING_GRIDS", "FUSION_GRID", "TunedReranker", "tune_reranker", "fuse_with_base",
           "direction_rsum"]

#: Fusion weights tried per direction (0: the base scores, 1: the method alone).
FUSION_GRID = tuple(round(0.1 * i, 1) for i in range(11))

#: Small documented grids: each method's one to three main hyperparameters.
#: Every grid contains the method's published defaults.
TUNING_GRIDS: Dict[str, Dict[str, Sequence[Any]]] = {
    "alpha_qe": {"alpha": (1.0, 3.0, 5.0), "n": (2, 5, 10)},
    "dba": {"k": (2, 5, 10), "alpha": (1.0, 3.0)},
    "dbnorm": {"beta1": (0.25, 1 / 1.99, 1.0), "beta2": (1.0, 3.0, 10.0)},
    "diffusion": {"k": (20, 50), "alpha": (0.8, 0.9, 0.99)},
    "dual_softmax": {"temperature": (0.01, 0.03, 0.1, 0.3, 1.0)},
    "ecn": {"k": (10, 25), "t": (1, 3), "q": (4, 8)},
    "gnn_rerank": {"k1": (10, 26, 40), "k2": (3, 7)},
    "inverted_softmax": {"beta": (5.0, 10.0, 20.0, 50.0, 100.0)},
    "k_reciprocal": {"k1": (10, 20, 30), "lambda_value": (0.1, 0.3, 0.6)},
    "krnn": {"k1_i2t": (5, 10, 15, 25), "k1_t2i": (5, 10, 20, 30)},
    "nnn": {"k": (16, 64, 256), "alpha": (0.25, 0.5, 0.75)},
    "qb_norm": {"beta": (5.0, 10.0, 20.0, 50.0), "k": (1, 3)},
}


def direction_rsum(metrics: Mapping[str, float], direction: str) -> float:
    """The sum of one direction's Recall@K entries in a metrics dict (``i2t_r1 + i2t_r5 + ...``)."""
    return sum(v for k, v in metrics.items() if k.startswith(f"{direction}_r"))


def _standardise(x: Tensor, dim: int) -> Tensor:
    x = x.double()
    finite = torch.isfinite(x)
    if not bool(finite.all()):
        low = torch.where(finite, x, torch.full_like(x, float("inf"))).amin(dim, keepdim=True)
        x = torch.where(finite, x, low.expand_as(x) - 1.0)  # -inf and NaN rank last
    x = x - x.mean(dim, keepdim=True)
    return x / x.std(dim, keepdim=True).clamp_min(1e-12)


def fuse_with_base(bundle: SimilarityBundle, scores: Mapping[str, Tensor],
                   weights: Mapping[str, float]) -> Dict[str, Tensor]:
    """Per-query standardised blend of a re-ranker's scores with the base scores.

    Args:
        bundle: the split ``scores`` were computed on (its base scores).
        scores: a re-ranker's output, ``{direction: [N, M]}`` (i2t ranks along
            rows, t2i along columns, like :meth:`Reranker.__call__`).
        weights: ``{direction: w}``, ``w`` in ``[0, 1]``; 0 returns the base order.

    Returns:
        ``{direction: [N, M]}`` float32 scores for the directions in ``scores``.
    """
    out = {}
    for d, s in scores.items():
        w = float(weights[d])
        if not 0.0 <= w <= 1.0:
            raise ValueError(f"weights[{d!r}]: fusion weight must lie in [0, 1], got {w}")
        out[d] = _blend(*_standardised_pair(bundle, d, s), w)
    return out


def _standardised_pair(bundle: SimilarityBundle, direction: str, scores: Tensor) -> Tuple[Tensor, Tensor]:
    """A direction's re-ranked and base scores, each standardised per query over the gallery."""
    base = bundle.sim_i2t if direction == "i2t" else bundle.t2i_scores.T
    dim = 1 if direction == "i2t" else 0  # the query axis is summarised over the gallery
    return _standardise(scores, dim), _standardise(base.to(scores.device), dim)


def _blend(z_scores: Tensor, z_base: Tensor, weight: float) -> Tensor:
    """``weight`` of the standardised re-ranked scores plus ``1 - weight`` of the standardised base."""
    return (weight * z_scores + (1.0 - weight) * z_base).float()


@dataclass
class TunedReranker:
    """A training-free re-ranker with dev-chosen parameters and fusion weights.

    Attributes:
        method: the method's name.
        cls: the method's :class:`~pillargraph.baselines.Reranker` subclass.
        params: the chosen parameters (the published defaults for parameters not searched).
        fusion: ``{direction: w}`` chosen on dev for :func:`fuse_with_base`.
        dev_default_rsum: dev rSum at the published defaults.
        dev_rsum: dev rSum at :attr:`params`.
        dev_fused_rsum: dev rSum at :attr:`params` fused with weights :attr:`fusion`.
        table: every grid point tried, ``[{"params": ..., "rsum": ...}]``.
    """

    method: str
    cls: type = field(repr=False)
    params: Dict[str, Any] = field(default_factory=dict)
    fusion: Dict[str, float] = field(default_factory=dict)
    dev_default_rsum: float = float("nan")
    dev_rsum: float = float("nan")
    dev_fused_rsum: float = float("nan")
    table: List[Dict[str, Any]] = field(default_factory=list)

    def reranker(self) -> Reranker:
        """The method instantiated with the chosen parameters."""
        return self.cls(**self.params)

    def __call__(self, bundle: SimilarityBundle, bank: Optional[QueryBank] = None, fused: bool = False,
                 device: Union[str, torch.device, None] = None) -> Dict[str, Tensor]:
        """Re-score ``bundle`` with the chosen parameters (and, with ``fused``, the chosen fusion)."""
        scores = self.reranker()(bundle, bank=bank, device=device)
        return self.fuse(bundle.to(device) if device is not None else bundle, scores) if fused else scores

    def fuse(self, bundle: SimilarityBundle, scores: Mapping[str, Tensor]) -> Dict[str, Tensor]:
        """This method's output on ``bundle`` blended with its base scores at the dev-chosen weights."""
        return fuse_with_base(bundle, scores, self.fusion)

    def as_dict(self) -> Dict[str, Any]:
        """JSON-ready record of what was searched and chosen."""
        return {"method": self.method, "params": self.params, "fusion": self.fusion,
                "dev_default_rsum": self.dev_default_rsum, "dev_rsum": self.dev_rsum,
                "dev_fused_rsum": self.dev_fused_rsum, "table": self.table}


def _grid_points(cls: type, grid: Optional[Mapping[str, Sequence[Any]]]) -> List[Dict[str, Any]]:
    grid = TUNING_GRIDS.get(cls.name, {}) if grid is None else grid
    defaults = cls().params()
    unknown = sorted(set(grid) - set(defaults))
    if unknown:
        raise ValueError(f"grid: {cls.name or cls.__name__} has no parameter(s) {unknown}; "
                         f"it takes {sorted(defaults)}")
    keys = list(grid)
    points = [dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]
    default_point = {k: defaults[k] for k in keys}
    if default_point not in points:
        points.insert(0, default_point)
    return points


def _choose_fusion(dev: SimilarityBundle, scores: Mapping[str, Tensor],
                   fusion_grid: Sequence[float]) -> Dict[str, float]:
    """Per direction, the weight with the best dev recall sum (ties: the smaller weight)."""
    grid = sorted(set(float(w) for w in fusion_grid) | {0.0})
    best = {}
    for d, s in scores.items():
        z_s, z_b = _standardised_pair(dev, d, s)  # once per direction, not once per weight
        rsums = [(direction_rsum(evaluate_rescored({d: _blend(z_s, z_b, w)}, dev), d), -w)
                 for w in grid]
        best[d] = -max(rsums)[1]
    return best


def tune_reranker(method: Union[str, type], dev: SimilarityBundle, grid: Optional[Mapping[str, Sequence[Any]]] = None,
                  bank: Optional[QueryBank] = None, fusion_grid: Sequence[float] = FUSION_GRID,
                  device: Union[str, torch.device, None] = None) -> TunedReranker:
    """Choose a training-free re-ranker's parameters and base-fusion weights on a dev split.

    Args:
        method: a registered method name (see :func:`~pillargraph.baselines.available_rerankers`)
            or a :class:`~pillargraph.baselines.Reranker` subclass.
        dev: the dev split (never a test split: everything chosen here is read off it).
        grid: ``{param: values}`` to search (default: :data:`TUNING_GRIDS` of the
            method; an empty grid keeps the defaults). The defaults are always tried.
        bank: a query bank scored against ``dev``'s gallery, for bank methods.
        fusion_grid: fusion weights tried per direction (0 is always added).
        device: where to run the method.

    Returns:
        The :class:`TunedReranker`; ties between grid points go to the earlier
        point (the defaults come first when not in the grid).
    """
    cls = type(get_reranker(method))
    points = _grid_points(cls, grid)
    defaults = cls().params()
    table = []
    for point in points:
        scores = cls(**point)(dev, bank=bank, device=device)
        table.append({"params": point, "rsum": evaluate_rescored(scores, dev)["rsum"]})
    best = max(range(len(table)), key=lambda i: (round(table[i]["rsum"], 6), -i))
    params = {**defaults, **table[best]["params"]}
    default_rsum = next(t["rsum"] for t in table
                        if t["params"] == {k: defaults[k] for k in t["params"]})
    scores = cls(**params)(dev, bank=bank, device=device)
    on = dev.to(device) if device is not None else dev
    fusion = _choose_fusion(on, scores, fusion_grid)
    fused = evaluate_rescored(fuse_with_base(on, scores, fusion), on)
    return TunedReranker(cls.name or cls.__name__, cls, params, fusion, default_rsum, table[best]["rsum"],
                         fused["rsum"], table)
