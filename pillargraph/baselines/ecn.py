r"""Expanded cross neighbourhood re-ranking (Sarfraz et al., CVPR 2018)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .base import Reranker, RetrievalView, chunk_ranges, fill_unreached, tie_positions
from .joint import RowSlicer, cut_lists, joint_size, joint_topk, row_inner_products, sparse_matmul, sparse_rows

__all__ = ["ECN", "ecn"]


class ECN(Reranker):
    r"""ECN from `"A Pose-Sensitive Embedding for Person Re-Identification with
    Expanded Cross Neighborhood Re-Ranking" <https://arxiv.org/abs/1711.10378>`_,
    with its default rank-list distance.

    On the joint query+gallery graph every item :math:`i` has a top-:math:`k`
    list (itself first, at position 0). Two items are close when they rank the
    same items high:

    .. math::
        R(a, b) = \sum_x \max(0, k - \mathrm{pos}_a(x))\, \max(0, k - \mathrm{pos}_b(x)).

    The expanded neighbourhood :math:`\mathcal{E}(i)` holds :math:`i`'s top-:math:`t`
    neighbours and each of their top-:math:`q` neighbours
    (:math:`M = t + tq` items, repeats kept). The ECN score of query :math:`p`
    and gallery item :math:`g` is the mean over both neighbourhoods

    .. math::
        s'(p, g) = \frac{1}{2M} \Big( \sum_{a \in \mathcal{E}(p)} R(a, g)
        + \sum_{b \in \mathcal{E}(g)} R(b, p) \Big).

    As in the authors' release, gallery items with zero ECN score (no shared
    neighbours) fall back to the base order, after all the others.

    The joint graph contains the other test queries, so the method is
    transductive; it needs both intra-modal matrices. Sparse throughout: memory
    grows with :math:`T M k` for :math:`T = Q + G` items plus two dense
    row blocks, not :math:`T^2`.

    Args:
        k (int, optional): rank-list length (default: :obj:`25`).
        t (int, optional): first-order neighbours (default: :obj:`3`).
        q (int, optional): second-order neighbours per first-order one (default: :obj:`8`).

    Shapes:
        - **input:** bundle with ``sim_i2t``, ``sim_i2i`` and ``sim_t2t``.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "ecn"
    scale_invariant = True
    aliases = ("expanded_cross_neighborhood",)
    needs_intra = True
    intra_sides = ("query", "gallery")
    transductive = True

    def __init__(self, k: int = 25, t: int = 3, q: int = 8) -> None:
        for name, v in (("k", k), ("t", t), ("q", q)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        self.k, self.t, self.q = k, t, q

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        nq, ng = s.shape
        n = joint_size(view)
        kmax = min(max(self.k, self.t + 1, self.q + 1), n)
        vals, idx = joint_topk(view, kmax, view.chunk_size, drop_ties=True)
        kk = min(self.k, kmax)
        head = vals.clone()
        head[:, 0] = float("inf")
        weight = (self.k - tie_positions(head[:, :kk])).to(s.dtype)      # tied entries: equal weight
        feat = sparse_rows(cut_lists(idx, vals, kk), weight, n)          # [T, T], k per row
        first = cut_lists(idx, vals, min(self.t, kmax - 1) + 1)[:, 1:]
        lists = cut_lists(idx, vals, min(self.q, kmax - 1) + 1)[:, 1:]
        second = torch.where(first[..., None] >= 0, lists[first.clamp_min(0)], -1).reshape(n, -1)
        expanded = torch.cat([first, second], dim=1)                       # [T, M]
        m = expanded.shape[1]
        if m == 0:
            return s.clone()
        counts = sparse_rows(expanded, torch.ones_like(expanded, dtype=s.dtype), n)
        hood = sparse_matmul(counts, feat)                   # sum of R-features over E(i)
        # s'(p, g) = <[F_p, H_p], [H_g, F_g]> / 2M, computed in dense blocks
        feat_rows, hood_rows = RowSlicer(feat), RowSlicer(hood)
        sim = row_inner_products(lambda a, b: torch.cat([feat_rows(a, b), hood_rows(a, b)], 1),
                                 lambda a, b: torch.cat([hood_rows(nq + a, nq + b),
                                                         feat_rows(nq + a, nq + b)], 1),
                                 nq, ng, 2 * n, view.chunk_size) / (2 * m)
        out = torch.empty_like(s)
        for a, b in chunk_ranges(nq, view.chunk(4 * ng)):
            out[a:b] = fill_unreached(sim[a:b], sim[a:b] != 0, s[a:b])
        return out


def ecn(bundle: SimilarityBundle, k: int = 25, t: int = 3, q: int = 8,
        **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`ECN`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return ECN(k=k, t=t, q=q)(bundle, **call_kwargs)
