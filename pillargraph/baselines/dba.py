r"""Database-side augmentation (Arandjelović & Zisserman 2012; Gordo et al. 2017)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..data.neighbors import NeighborLists
from .base import Reranker, RetrievalView, chunk_ranges, chunked_topk, weight_matrix

__all__ = ["DBA", "dba", "DBAPairs"]

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
        return idx, self.weights(val)

    def weights(self, val: Tensor) -> Tensor:
        """Weights :math:`w_r` of neighbours with scores ``val`` :obj:`[G, k]` (sorted, the item itself excluded)."""
        k = val.shape[1]
        if self.weighting == "rank":
            r = torch.arange(1, k + 1, dtype=val.dtype, device=val.device)
            w = (1 - r / (self.k + 1)).expand_as(val)
        elif self.weighting == "uniform":
            w = torch.ones_like(val)
        else:
            w = val.clamp_min(0).pow(self.alpha)
        return w

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        q, g = s.shape
        out = s.clone()
        if self.k == 0 or g < 2:
            return out
        idx, w = self.neighbour_weights(view.gallery_intra, view.chunk_size)
        spread = weight_matrix(idx, w.to(s.dtype), g)  # [G, G]: row g holds w_r(g) at column g_r
        for a, b in chunk_ranges(q, view.chunk(2 * g)):
            out[a:b] += torch.sparse.mm(spread, s[a:b].T.contiguous()).T  # sum_r w_r(g) s(q, g_r)
        return out


def dba(bundle: SimilarityBundle, k: int = 10, weighting: str = "rank", alpha: float = 3.0,
        **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`DBA`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return DBA(k=k, weighting=weighting, alpha=alpha)(bundle, **call_kwargs)


class DBAPairs:
    r"""DBA scores of any (query, gallery item) pairs of a split given as neighbour lists.

    A gallery item's neighbours come from its gallery-side intra list (itself
    excluded) and :math:`s(q, g_r)` from :meth:`~pillargraph.data.NeighborLists.gather`
    (exact with embeddings or where a list holds the pair, else the query row's
    smallest stored score). Lists that hold every item give the dense :class:`DBA`.

    Args:
        lists (NeighborLists): the split, with intra lists.
        k, weighting, alpha: as in :class:`DBA`.
    """

    def __init__(self, lists: NeighborLists, k: int = 10, weighting: str = "rank", alpha: float = 3.0) -> None:
        self.method, self.lists = DBA(k, weighting, alpha), lists

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Scores of the ``kind`` pairs ``(rows, cols)`` (``'i2t'`` or ``'t2i'``), broadcast together."""
        if kind not in ("i2t", "t2i"):
            raise ValueError(f"kind: expected 'i2t' or 't2i', got {kind!r}")
        s = self.lists.gather(kind, rows, cols).double()
        intra = "t2t" if kind == "i2t" else "i2i"
        k = min(self.method.k, self.lists.depth(intra) - 1)
        if k <= 0:
            return s.float()
        rows, cols = (torch.broadcast_to(t.to(s.device), s.shape).reshape(-1) for t in (rows, cols))
        idx, val = self.lists.topk(intra, k + 1, cols)
        # each row keeps its first k entries that are not the item itself
        is_self = idx == cols[:, None]
        drop = torch.where(is_self.any(1), is_self.long().argmax(1), k)
        keep = torch.ones_like(is_self)
        keep[torch.arange(idx.shape[0], device=idx.device), drop] = False
        idx, val = idx[keep].view(-1, k), val[keep].view(-1, k)
        w = self.method.weights(val.double())
        extra = (w * self.lists.gather(kind, rows[:, None, None], idx[:, None, :])[:, 0].double()).sum(1)
        return (s + extra.view(s.shape)).float()
