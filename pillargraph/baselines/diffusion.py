r"""Diffusion on a mutual kNN graph of the gallery (Iscen et al., CVPR 2017)."""
from __future__ import annotations

from typing import Any, Callable, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .base import Reranker, RetrievalView, chunk_ranges, fill_unreached, topk_without_boundary_ties

__all__ = ["Diffusion", "diffusion", "batched_cg"]


def batched_cg(matvec: Callable[[Tensor], Tensor], b: Tensor, maxiter: int = 20,
               tol: float = 1e-6) -> Tensor:
    r"""Conjugate gradient for :math:`A X = B` with several right-hand sides at once.

    Each column runs its own CG recurrence and stops (is frozen) once
    :math:`\|r\| \le \text{tol}\, \|b\|`, the criterion of :func:`scipy.sparse.linalg.cg`.

    Args:
        matvec: ``X -> A X`` for a symmetric positive definite ``A``, on :obj:`[G, C]` blocks.
        b: :obj:`[G, C]` right-hand sides.
        maxiter: iteration cap (default: :obj:`20`).
        tol: relative residual tolerance (default: :obj:`1e-6`).
    """
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = (r * r).sum(0)
    stop = tol * b.norm(dim=0)
    active = rs.sqrt() > stop
    for _ in range(maxiter):
        if not bool(active.any()):
            break
        ap = matvec(p)
        pap = (p * ap).sum(0)
        step = torch.where(active & (pap > 0), rs / torch.where(pap > 0, pap, torch.ones_like(pap)),
                           torch.zeros_like(rs))
        x += step * p
        r -= step * ap
        rs_new = (r * r).sum(0)
        active = active & (rs_new.sqrt() > stop) & (pap > 0)
        beta = torch.where(rs > 0, rs_new / torch.where(rs > 0, rs, torch.ones_like(rs)),
                           torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    return x


class Diffusion(Reranker):
    r"""Query-time diffusion from `"Efficient Diffusion on Region Manifolds"
    <https://arxiv.org/abs/1611.05113>`_.

    The gallery forms a mutual :math:`k`-nearest-neighbour graph (from the
    gallery-side intra matrix) with affinities
    :math:`a_{ij} = \max(s(g_i, g_j), 0)^{\gamma}` (symmetrised, no self-loops),
    normalised as :math:`W = D^{-1/2} A D^{-1/2}`. A query seeds
    :math:`y_j = \max(s(q, g_j), 0)^{\gamma}` on its top-:math:`k_q` gallery
    items (zero elsewhere), and its new scores solve

    .. math::
        (I - \alpha W)\, f = y

    by conjugate gradient, all queries of a chunk at once. Gallery items the
    walk cannot reach from the seeds keep :math:`f = 0`; they are ranked after
    the reached ones in their base order (see
    :func:`~pillargraph.baselines.base.fill_unreached`) instead of tying.

    Args:
        alpha (float, optional): walk continuation probability in ``[0, 1)`` (default: :obj:`0.99`).
        gamma (float, optional): affinity exponent (default: :obj:`3.0`).
        k (int, optional): neighbours in the gallery graph (default: :obj:`50`).
        kq (int, optional): seeds per query (default: :obj:`10`).
        maxiter (int, optional): conjugate gradient iterations (default: :obj:`20`).
        tol (float, optional): relative residual to stop at (default: :obj:`1e-6`).

    Shapes:
        - **input:** bundle with ``sim_i2t`` :obj:`[N, M]` and the gallery-side
          intra matrix of each requested direction.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "diffusion"
    scale_invariant = True
    needs_intra = True
    intra_sides = ("gallery",)

    def __init__(self, alpha: float = 0.99, gamma: float = 3.0, k: int = 50, kq: int = 10,
                 maxiter: int = 20, tol: float = 1e-6) -> None:
        if not 0 <= float(alpha) < 1:
            raise ValueError(f"alpha: expected a number in [0, 1), got {alpha!r}")
        if not float(gamma) > 0:
            raise ValueError(f"gamma: expected a positive number, got {gamma!r}")
        for name, v in (("k", k), ("kq", kq), ("maxiter", maxiter)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if not float(tol) > 0:
            raise ValueError(f"tol: expected a positive number, got {tol!r}")
        self.alpha, self.gamma, self.k, self.kq = float(alpha), float(gamma), k, kq
        self.maxiter, self.tol = maxiter, float(tol)

    def graph(self, gallery_intra: Tensor, chunk_size: Any = None) -> Tensor:
        r"""The normalised mutual kNN affinity :math:`W` as a sparse :obj:`[G, G]` COO tensor.

        Neighbours tied with the first one left out are left out too (index
        order never picks among them), and affinities are computed on scores
        divided by their maximum, which leaves :math:`W` unchanged and keeps
        the power from overflowing on large scores.
        """
        g = gallery_intra.shape[0]
        k = min(self.k, g - 1)
        val, idx, kept = topk_without_boundary_ties(gallery_intra, k, chunk_size, exclude_self=True)
        mutual = torch.zeros_like(idx, dtype=torch.bool)
        for a, b in chunk_ranges(g, max(1, (1 << 24) // max(k * k, 1))):
            me = torch.arange(a, b, device=idx.device)[:, None, None]
            mutual[a:b] = ((idx[idx[a:b]] == me) & kept[idx[a:b]]).any(dim=2)
        rows = torch.arange(g, device=idx.device)[:, None].expand_as(idx)
        w = _powered(val, self.gamma, val.max())
        keep = mutual & kept & (w > 0)
        ind = torch.stack([rows[keep], idx[keep]])
        a = torch.sparse_coo_tensor(ind, w[keep], (g, g), check_invariants=False)
        a = ((a + a.t()) / 2).coalesce()  # symmetric even if the intra matrix is not quite
        deg = torch.zeros(g, dtype=w.dtype, device=w.device).index_add_(0, a.indices()[0], a.values())
        dinv = torch.where(deg > 0, deg.rsqrt(), torch.zeros_like(deg))
        i, j = a.indices()
        return torch.sparse_coo_tensor(a.indices(), a.values() * dinv[i] * dinv[j], (g, g),
                                       check_invariants=False).coalesce()

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        q, g = s.shape
        if g < 2:
            return s.clone()
        w = self.graph(view.gallery_intra, view.chunk_size).to(s.dtype)
        kq = min(self.kq, g)
        alpha = self.alpha

        def matvec(x: Tensor) -> Tensor:
            return x - alpha * torch.sparse.mm(w, x)

        out = torch.empty_like(s)
        for a, b in chunk_ranges(q, view.chunk(6 * g)):
            val, idx, kept = topk_without_boundary_ties(s[a:b], kq)
            seed = _powered(val, self.gamma, val.max(dim=1, keepdim=True).values) * kept
            y = torch.zeros(b - a, g, dtype=s.dtype, device=s.device).scatter_(1, idx, seed)
            f = batched_cg(matvec, y.T.contiguous(), self.maxiter, self.tol).T
            out[a:b] = fill_unreached(f, f != 0, s[a:b])
        return out


def _powered(val: Tensor, gamma: float, unit: Tensor) -> Tensor:
    """``max(val / unit, 0) ** gamma``: the affinity up to one positive factor, which the
    normalisation (graph) or the linear solve (seeds) cancels; never overflows."""
    return (val / unit.clamp_min(torch.finfo(val.dtype).tiny)).clamp_min(0).pow(gamma)


def diffusion(bundle: SimilarityBundle, alpha: float = 0.99, gamma: float = 3.0, k: int = 50,
              kq: int = 10, **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`Diffusion`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return Diffusion(alpha=alpha, gamma=gamma, k=k, kq=kq)(bundle, **call_kwargs)
