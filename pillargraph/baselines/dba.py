r"""Database-side augmentation (Arandjelović & Zisserman 2012; Gordo et al. 2017)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .base import Reranker, RetrievalView, chunk_ranges, chunked_topk

__all__ = ["DBA", "dba"]

_WEIGHTINGS = ("rank", "uniform", "alpha")


class DBA(Reranker):
    r"""Database-side augmentation: every gallery item is replaced by itself
    plus its top-:math:`k` gallery neighbours, which in score form is

    .. math::
        s'(q, g) = s(q, g) + \sum_{r=1}^{k} w_r(g)\, s(q, g_r)

    with :math:`g_1, \dots, g_k` the neighbours of :math:`g` in the
    gallery-side intra matrix (:math:`g` itself excluded). Weights:

    - ``'rank'`` (default, `Gordo et al. 2017 <https://arxiv.org/abs/1610.07940>`_):
      linearly decreasing with rank, :math:`w_r = 1 - r / (k + 1)` (the item
      itself, rank 0, has weight 1);
    - ``'uniform'``: :math:`w_r = 1` (the plain average of Arandjelović & Zisserman);
    - ``'alpha'`` (alpha-DBA, Radenović et al. 2018): :math:`w_r = \max(s(g, g_r), 0)^{\alpha}`.

    Args:
        k (int, optional): neighbours per gallery item (default: :obj:`10`).
        weighting (str, optional): ``'rank'``, ``'uniform'`` or ``'alpha'``
            (default: :obj:`'rank'`).
        alpha (float, optional): exponent of ``'alpha'`` weighting (default: :obj:`3.0`).

    Shapes:
        - **input:** bundle with ``sim_i2t`` :obj:`[N, M]` and the gallery-side
          intra matrix of each requested direction.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "dba"
    aliases = ("database_side_augmentation",)
    needs_intra = True
    intra_sides = ("gallery",)

    def __init__(self, k: int = 10, weighting: str = "rank", alpha: float = 3.0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"k: expected a non-negative int, got {k!r}")
        if weighting not in _WEIGHTINGS:
            raise ValueError(f"weighting: expected one of {list(_WEIGHTINGS)}, got {weighting!r}")
        if not float(alpha) >= 0:
            raise ValueError(f"alpha: expected a non-negative number, got {alpha!r}")
        self.k = k
        self.weighting = weighting
        self.alpha = float(alpha)

    @property
    def scale_invariant(self) -> bool:  # type: ignore[override]
        """Rank and uniform weights are; ``'alpha'`` weights (a power of the scores) are not."""
        return self.weighting != "alpha"

    def neighbour_weights(self, gallery_intra: Tensor, chunk_size: Any = None) -> tuple[Tensor, Tensor]:
        """Each gallery item's neighbours and their weights, both :obj:`[G, k]`."""
        k = min(self.k, gallery_intra.shape[0] - 1)
        val, idx = chunked_topk(gallery_intra, k, chunk_size, exclude_self=True)
        if self.weighting == "rank":
            r = torch.arange(1, k + 1, dtype=val.dtype, device=val.device)
            w = (1 - r / (self.k + 1)).expand_as(val)
        elif self.weighting == "uniform":
            w = torch.ones_like(val)
        else:
            w = val.clamp_min(0).pow(self.alpha)
        return idx, w

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        q, g = s.shape
        out = s.clone()
        if self.k == 0 or g < 2:
            return out
        idx, w = self.neighbour_weights(view.gallery_intra, view.chunk_size)
        w = w.to(s.dtype)
        k = idx.shape[1]
        for a, b in chunk_ranges(q, view.chunk(g * k)):
            out[a:b] += (s[a:b][:, idx] * w).sum(dim=2)  # [C, G, k] -> [C, G]
        return out


def dba(bundle: SimilarityBundle, k: int = 10, weighting: str = "rank", alpha: float = 3.0,
        **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`DBA`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return DBA(k=k, weighting=weighting, alpha=alpha)(bundle, **call_kwargs)
