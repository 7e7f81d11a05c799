r"""k-reciprocal encoding re-ranking (Zhong et al., CVPR 2017)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .base import Reranker, RetrievalView, chunk_ranges, resolve_chunk_size
from .joint import cut_lists, joint_size, joint_topk, joint_values, sparse_matmul, sparse_rows

__all__ = ["KReciprocal", "k_reciprocal"]


def _reciprocal(fwd: Tensor) -> Tensor:
    """``mask[i, p]``: item ``fwd[i, p]`` has ``i`` in its own list ``fwd[fwd[i, p]]`` (``-1``: padding)."""
    n, width = fwd.shape
    out = torch.empty_like(fwd, dtype=torch.bool)
    for a, b in chunk_ranges(n, max(1, (1 << 24) // width ** 2)):
        me = torch.arange(a, b, device=fwd.device)[:, None, None]
        out[a:b] = (fwd[fwd[a:b].clamp_min(0)] == me).any(dim=2) & (fwd[a:b] >= 0)
    return out


def _row_joint_min(view: RetrievalView) -> Tensor:
    """Smallest joint similarity of each joint row, :obj:`[T]`."""
    q = torch.minimum(view.query_intra.min(dim=1).values.to(view.sim.dtype), view.sim.min(dim=1).values)
    g = torch.minimum(view.sim.min(dim=0).values, view.gallery_intra.min(dim=1).values.to(view.sim.dtype))
    return torch.cat([q, g])


class KReciprocal(Reranker):
    r"""Re-ranking with k-reciprocal encoding from `"Re-ranking Person
    Re-identification with k-reciprocal Encoding" <https://arxiv.org/abs/1701.08398>`_.

    Works on the joint query+gallery graph with distances
    :math:`d(i, j) = (2 - 2 s(i, j)) / \max_l (2 - 2 s(i, l))` (the squared
    Euclidean distance of unit vectors, row-normalised as in the authors' code).

    1. :math:`\mathcal{R}(i, k)`: the items of :math:`i`'s top-:math:`(k+1)`
       list (itself included) that also have :math:`i` in their own top-:math:`(k+1)`.
    2. Expansion: :math:`\mathcal{R}^*(i)` adds :math:`\mathcal{R}(c, \mathrm{round}(k_1/2))`
       of every candidate :math:`c \in \mathcal{R}(i, k_1)` that shares more than
       two thirds of its members with :math:`\mathcal{R}(i, k_1)`.
    3. Encoding :math:`V_{ij} \propto e^{-d(i, j)}` on :math:`\mathcal{R}^*(i)`,
       rows summing to one, then local query expansion: :math:`V_i` becomes the
       mean of the rows of :math:`i`'s top-:math:`k_2` items (itself included).
    4. Jaccard distance
       :math:`d_J(p, g) = 1 - \frac{\sum_x \min(V_{px}, V_{gx})}{\sum_x \max(V_{px}, V_{gx})}`,
       and the final score is
       :math:`s'(p, g) = -\big((1 - \lambda) d_J(p, g) + \lambda d(p, g)\big)`.

    **One positive per query.** The method was designed for re-identification,
    where a query has several true matches in the gallery whose neighbourhoods
    overlap. In text-to-image retrieval a caption has exactly one image, so the
    overlap has to come from elsewhere: the joint graph also holds the image's
    other captions (other test queries, hence ``transductive``), and these,
    together with the image, form the reciprocal clique the encoding rewards.
    Nothing is assumed about the number of positives, so both directions use
    the same algorithm; sets are clipped to the joint graph's size, and with
    :math:`\lambda = 1` the base ranking is recovered exactly. Sparse
    throughout: memory grows with :math:`T k_1^2`, not :math:`T^2`.

    Args:
        k1 (int, optional): reciprocal neighbourhood size (default: :obj:`20`).
        k2 (int, optional): local query expansion size (default: :obj:`6`).
        lambda_value (float, optional): weight of the original distance (default: :obj:`0.3`).

    Shapes:
        - **input:** bundle with ``sim_i2t``, ``sim_i2i`` and ``sim_t2t``.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "k_reciprocal"
    aliases = ("k_reciprocal_encoding", "re_ranking")
    needs_intra = True
    intra_sides = ("query", "gallery")
    transductive = True

    def __init__(self, k1: int = 20, k2: int = 6, lambda_value: float = 0.3) -> None:
        for name, v in (("k1", k1), ("k2", k2)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not 0 <= float(lambda_value) <= 1:
            raise ValueError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")
        self.k1, self.k2, self.lambda_value = k1, k2, float(lambda_value)

    def encoding(self, view: RetrievalView) -> tuple[Tensor, Tensor]:
        """The k-reciprocal encoding ``V`` (sparse :obj:`[T, T]`) and each row's distance scale."""
        s = view.sim
        n = joint_size(view)
        k1 = min(self.k1, n - 1)
        kh = min(round(self.k1 / 2), n - 1)
        vals, idx = joint_topk(view, k1 + 1, view.chunk_size, drop_ties=True)
        scale = (2 - 2 * _row_joint_min(view)).clamp_min(torch.finfo(s.dtype).tiny)
        fwd, fwd_h = idx, cut_lists(idx, vals, kh + 1)              # -1: tied at a cut, left out
        rec, rec_h = _reciprocal(fwd), _reciprocal(fwd_h)           # [T, k1+1], [T, kh+1]
        members = torch.where(rec, fwd, -1)                         # R(i, k1), padded
        parts = [members]
        step = max(1, (1 << 24) // ((k1 + 1) ** 2 * (kh + 1)))
        expand = torch.empty(n, k1 + 1, kh + 1, dtype=torch.long, device=s.device)
        for a, b in chunk_ranges(n, step):
            cand = fwd[a:b].clamp_min(0)                            # [C, k1+1] (padding: rec False)
            cset = fwd_h[cand]                                      # [C, k1+1, kh+1]
            cmask = rec_h[cand]
            inside = (cset[..., None] == members[a:b, None, None, :]).any(-1) & cmask
            size = cmask.sum(-1)
            take = rec[a:b] & (inside.sum(-1) * 3 > 2 * size)       # |R_h(c) & R(i)| > 2/3 |R_h(c)|
            expand[a:b] = torch.where(take[..., None] & cmask, cset, -1)
        parts.append(expand.reshape(n, -1))
        cand = torch.cat(parts, dim=1)
        ones = torch.ones(cand.shape, dtype=s.dtype, device=s.device)
        support = sparse_rows(cand, ones, n)                        # duplicates merged
        r, c = support.indices()
        w = torch.exp(-(2 - 2 * joint_values(view, r, c)) / scale[r])
        total = torch.zeros(n, dtype=s.dtype, device=s.device).index_add_(0, r, w)
        v = torch.sparse_coo_tensor(support.indices(), w / total[r], (n, n),
                                    check_invariants=False).coalesce()
        k2 = min(self.k2, k1 + 1)
        if k2 > 1:
            near = cut_lists(idx, vals, k2)
            count = (near >= 0).sum(dim=1, keepdim=True).to(s.dtype)
            mean = sparse_rows(near, (1.0 / count).expand(n, k2), n)
            v = sparse_matmul(mean, v)
        return v, scale

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        nq, ng = s.shape
        v, scale = self.encoding(view)
        r, c = v.indices()
        val = v.values()
        # inverted index of the gallery rows: for every column x, which gallery items use it
        gmask = r >= nq
        gr, gc, gv = r[gmask] - nq, c[gmask], val[gmask]
        order = torch.argsort(gc, stable=True)
        gr, gc, gv = gr[order], gc[order], gv[order]
        n = joint_size(view)
        col_count = torch.bincount(gc, minlength=n)
        col_start = torch.cumsum(col_count, 0) - col_count
        qmask = r < nq
        qr, qc, qv = r[qmask], c[qmask], val[qmask]                 # row-sorted (coalesced)
        pairs = col_count[qc]                                       # work per query entry
        row_work = torch.zeros(nq, dtype=torch.long, device=s.device).index_add_(0, qr, pairs)
        row_start = torch.searchsorted(qr, torch.arange(nq + 1, device=s.device))
        lam = self.lambda_value
        out = torch.empty_like(s)
        per_row = max(int(row_work.max()) if nq else 1, 1) + ng
        for a, b in chunk_ranges(nq, resolve_chunk_size(view.chunk_size, nq, 3 * per_row)):
            e0, e1 = int(row_start[a]), int(row_start[b])
            ep = pairs[e0:e1]
            rep = torch.repeat_interleave(torch.arange(e0, e1, device=s.device), ep)
            offset = torch.arange(rep.numel(), device=s.device) - \
                torch.repeat_interleave(torch.cumsum(ep, 0) - ep, ep)
            pos = col_start[qc[rep]] + offset
            smin = torch.zeros(b - a, ng, dtype=s.dtype, device=s.device)
            smin.index_put_((qr[rep] - a, gr[pos]), torch.minimum(qv[rep], gv[pos]), accumulate=True)
            jaccard = 1 - smin / (2 - smin)
            dist = (2 - 2 * s[a:b]) / scale[a:b, None]
            out[a:b] = -((1 - lam) * jaccard + lam * dist)
        return out


def k_reciprocal(bundle: SimilarityBundle, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                 **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`KReciprocal`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return KReciprocal(k1=k1, k2=k2, lambda_value=lambda_value)(bundle, **call_kwargs)
