r"""MTFN-RR / KRNN: re-sort each query's top candidates by reverse ranks.

Wang et al., `"Matching Images and Text with Multi-modal Tensor Fusion and
Re-ranking" <https://arxiv.org/abs/1908.04011>`_ (ACM MM 2019).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ._chunks import check_scores
from .base import (Reranker, RetrievalView, chunk_ranges, resolve_chunk_size, tie_positions,
                   topk_without_boundary_ties)

__all__ = ["KRNN", "krnn", "krnn_scores", "reverse_ranks"]


def reverse_ranks(sim: Tensor, candidates: Tensor, chunk_size: Optional[int] = None) -> Tensor:
    r"""Where each query stands in the reverse ranking of each of its candidates.

    The reverse ranking of gallery item :math:`g` orders all queries by
    :math:`s(\cdot, g)`, best first. Tied queries share the worst position of
    their group (pessimistic), so a query's index never decides its rank.

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        candidates (Tensor): :obj:`[Q, K]` gallery indices.
        chunk_size (int, optional): gallery columns sorted at once (default:
            sized from the memory budget).

    Returns:
        :obj:`[Q, K]` long, the 0-based position of query ``q`` in the
        reverse ranking of ``candidates[q, j]``: the number of other queries
        scoring ``candidates[q, j]`` at least as high.
    """
    q, g = sim.shape
    k = candidates.shape[1]
    flat_g = candidates.reshape(-1)
    flat_q = torch.arange(q, device=sim.device).repeat_interleave(k)
    # visit the (query, candidate) pairs grouped by candidate, one block of columns at a time
    by_g = torch.argsort(flat_g)
    g_sorted = flat_g[by_g]
    out = torch.empty_like(flat_g)
    step = resolve_chunk_size(chunk_size, g, 4 * q)
    for a, b in chunk_ranges(g, step):
        lo = int(torch.searchsorted(g_sorted, a))
        hi = int(torch.searchsorted(g_sorted, b))
        if lo == hi:
            continue
        cols = sim[:, a:b].T.contiguous()                        # [B, Q], one row per gallery item
        ascending = torch.sort(cols, dim=1).values
        below = torch.searchsorted(ascending, cols)              # queries scoring strictly lower
        idx = by_g[lo:hi]
        out[idx] = (q - 1 - below)[flat_g[idx] - a, flat_q[idx]]
    return out.view(q, k)


def krnn_scores(sim: Tensor, k1: int, chunk_size: Optional[int] = None) -> Tensor:
    r"""Re-sort every query's top-``k1`` candidates by reverse rank.

    For query :math:`q` with candidates :math:`g_1, \dots, g_{K_1}` (its
    top-:math:`K_1` by score), the new order sorts them by
    :math:`r(q \mid g_j)`, the position of :math:`q` in :math:`g_j`'s own
    ranking of all queries (see :func:`reverse_ranks`); ties keep the
    original order. Items outside the top-:math:`K_1` keep their scores.

    The work is done in rank space, so the result does not depend on the scale
    of the scores: the candidate at new position :math:`p` takes the
    :math:`p`-th best of the candidates' own scores, so the candidates stay
    above every other item and a score multiplied by :math:`c > 0` gives the
    same ranking.

    Ties never follow index order: candidates tied with the best item left out
    of the top-:math:`K_1` are left out too; tied reverse ranks are
    pessimistic; and candidates equal in both reverse rank and score keep
    equal scores. On all-equal scores the result is all-equal.

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        k1 (int): candidates re-sorted per query, ``1 <= k1 <= G``.
        chunk_size (int, optional): rows / columns per block (default: from the
            memory budget).

    Returns:
        :obj:`[Q, G]` re-scored matrix (a new tensor).
    """
    check_scores(sim, "sim")
    q, g = sim.shape
    if isinstance(k1, bool) or not isinstance(k1, int) or not 1 <= k1 <= g:
        raise ValueError(f"k1: expected an int in [1, {g}] (the gallery size), got {k1!r}")
    vals, cand, keep = topk_without_boundary_ties(sim, k1, chunk_size)
    rev = reverse_ranks(sim, cand, chunk_size)
    key = rev * (k1 + 1) + tie_positions(vals)          # reverse rank first, then base score
    key = torch.where(keep, key, torch.iinfo(key.dtype).max)
    key, order = torch.sort(key, dim=1, stable=True)
    last_of_group = torch.searchsorted(key, key, right=True) - 1
    out = sim.clone()
    new_cand, new_vals = cand.gather(1, order), vals.gather(1, last_of_group)
    return out.scatter_(1, new_cand, torch.where(keep, new_vals, vals))


class KRNN(Reranker):
    r"""MTFN-RR's cross-modal re-ranking (KRNN), as a :class:`Reranker`.

    See :func:`krnn_scores` for the rule. The reverse ranking of a candidate ranks
    *all test queries*, so a query's result depends on the other test queries:
    the method is flagged transductive.

    Args:
        k1_i2t (int, optional): candidates re-sorted per image query (default: 15).
        k1_t2i (int, optional): candidates re-sorted per caption query (default: 20).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]`.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "krnn"
    scale_invariant = True
    aliases = ("mtfn_rr",)
    transductive = True

    def __init__(self, k1_i2t: int = 15, k1_t2i: int = 20) -> None:
        for key, value in (("k1_i2t", k1_i2t), ("k1_t2i", k1_t2i)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{key}: expected a positive int, got {value!r}")
        self.k1_i2t = k1_i2t
        self.k1_t2i = k1_t2i

    def rerank(self, view: RetrievalView) -> Tensor:
        k1 = self.k1_i2t if view.direction == "i2t" else self.k1_t2i
        if k1 > view.num_gallery:
            raise ValueError(f"k1_{view.direction}: {k1} exceeds the gallery size {view.num_gallery}")
        return krnn_scores(view.sim, k1, view.chunk_size)


def krnn(bundle: SimilarityBundle, k1_i2t: int = 15, k1_t2i: int = 20,
         **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`KRNN`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return KRNN(k1_i2t=k1_i2t, k1_t2i=k1_t2i)(bundle, **call_kwargs)
