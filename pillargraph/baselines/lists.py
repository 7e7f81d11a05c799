r"""Training-free re-ranking straight from top-k neighbour lists.

Most training-free re-rankers read whole columns of the score matrix (a
gallery item's scores against every query, or its intra-modal row), which
:class:`~pillargraph.data.NeighborLists` do not hold. Some need only what the
lists hold, or are well approximated by it, and run on lists of any split size
here:

* KRNN needs only where a query stands in each candidate's own ranking of the
  queries, which the transposed kind's lists answer up to their depth;
* dual softmax, GNN re-ranking, alpha-QE and DBA score any pair from the lists
  (:data:`LIST_SCORERS`: :class:`~pillargraph.baselines.dual_softmax.DualSoftmaxPairs`,
  :class:`~pillargraph.baselines.gnn_rerank.GNNRerankPairs`,
  :class:`~pillargraph.baselines.alpha_qe.AlphaQEPairs`,
  :class:`~pillargraph.baselines.dba.DBAPairs`); each equals the dense
  method when the lists hold every item, and says what a shallower list leaves out.

Scores stay in the lists' own range: each re-sorted prefix takes the prefix's
base scores in decreasing order, so the lists stay sorted, the prefix stays
above the rest, and the result does not depend on the scale of the scores.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Protocol, Tuple

import torch
from torch import Tensor

from ..data.neighbors import NeighborLists
from .alpha_qe import AlphaQEPairs
from .base import Reranker, tie_positions
from .dba import DBAPairs
from .dual_softmax import DualSoftmaxPairs
from .gnn_rerank import GNNRerankPairs

__all__ = ["krnn_lists", "reverse_ranks_from_lists", "LIST_METHODS", "LIST_SCORERS", "PairScores", "list_scores",
           "rescore_lists"]

_CHUNK = 8192  # queries per reverse-rank block


def reverse_ranks_from_lists(lists: NeighborLists, direction: str, k1: int) -> Tuple[Tensor, Tensor]:
    """``(candidates, reverse ranks)``: each query's top-``k1`` candidates and the query's 0-based
    position in each candidate's own list (the transposed kind), capped at that list's depth.

    Positions are pessimistic: a query tied with others in a candidate's list
    takes the last position of the tied group, so list order never breaks ties.
    """
    other = "t2i" if direction == "i2t" else "i2t"
    index, _ = lists.lists(direction)
    back, back_score = lists.lists(other)
    if not 1 <= k1 <= index.shape[1]:
        raise ValueError(f"k1_{direction}: expected 1..{index.shape[1]} (the depth of the {direction} lists), "
                         f"got {k1}")
    back_pos = tie_positions(back_score)
    cand = index[:, :k1]
    pos = torch.empty_like(cand)
    for a in range(0, cand.shape[0], _CHUNK):
        c = cand[a:a + _CHUNK]
        queries = torch.arange(a, a + c.shape[0], device=c.device)
        hit = back[c] == queries[:, None, None]                   # [chunk, k1, depth]
        at = back_pos[c].gather(-1, hit.int().argmax(-1, keepdim=True)).squeeze(-1)
        pos[a:a + _CHUNK] = torch.where(hit.any(-1), at, back.shape[1])
    return cand, pos


def _resort(lists: NeighborLists, direction: str, cand: Tensor, rev: Tensor) -> Tuple[Tensor, Tensor]:
    """Re-sort each row's first ``k1`` entries by reverse rank, then base score; the prefix keeps its
    sorted base scores in the new order, candidates equal in both sharing the lower score. Entries tied
    with the first one past the prefix stay where they are (list order must not pick among them)."""
    index, score = (t.clone() for t in lists.lists(direction))
    k1 = cand.shape[1]
    vals = score[:, :k1]
    keep = vals > score[:, k1:k1 + 1] if score.shape[1] > k1 else torch.ones_like(vals, dtype=torch.bool)
    key = torch.where(keep, rev * (k1 + 1) + tie_positions(vals), torch.iinfo(rev.dtype).max)
    key, order = torch.sort(key, dim=1, stable=True)
    last_of_group = torch.searchsorted(key, key, right=True) - 1
    index[:, :k1] = cand.gather(1, order)
    score[:, :k1] = torch.where(keep, vals.gather(1, last_of_group), vals)
    return index, score


def krnn_lists(lists: NeighborLists, k1_i2t: int = 15, k1_t2i: int = 20) -> NeighborLists:
    """KRNN (MTFN-RR, Wang et al. 2019) on neighbour lists; see :func:`~pillargraph.baselines.krnn.krnn_scores`.

    A query absent from a candidate's list stands behind every query in it, so
    lists as deep as the base ranking matters for (a few times ``k1``) give the
    dense result. Transductive like the dense method: a candidate's list ranks
    all the split's queries.
    """
    out = {}
    for direction, k1 in (("i2t", k1_i2t), ("t2i", k1_t2i)):
        cand, rev = reverse_ranks_from_lists(lists, direction, k1)
        out[direction] = _resort(lists, direction, cand, rev)
    return lists.with_lists(**out)


class PairScores(Protocol):
    """A training-free method's scores of any (query, gallery item) pairs of a split (one object per split)."""

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Scores of the ``kind`` pairs (``'i2t'`` or ``'t2i'``); ``rows`` and ``cols`` broadcast together."""
        ...


#: Methods that score any pair of a split given as neighbour lists, by registry name.
LIST_SCORERS: Dict[str, Callable[..., PairScores]] = {"dual_softmax": DualSoftmaxPairs,
                                                      "gnn_rerank": GNNRerankPairs, "alpha_qe": AlphaQEPairs,
                                                      "dba": DBAPairs}


def list_scores(method: Reranker, lists: NeighborLists) -> PairScores:
    """``method``'s pair scores on ``lists`` (its :meth:`~pillargraph.baselines.Reranker.params` passed on).

    Raises:
        ValueError: the method has no neighbour-list form (the message lists those that do).
    """
    if method.name not in LIST_SCORERS:
        raise ValueError(f"{method.name}: needs dense scores (it reads whole rows or columns of the score matrix, "
                         f"which neighbour lists do not hold); methods that score neighbour lists: "
                         f"{', '.join(sorted(LIST_SCORERS))}")
    return LIST_SCORERS[method.name](lists, **method.params())


def rescore_lists(lists: NeighborLists, scores: PairScores) -> NeighborLists:
    """``lists`` with every stored ``i2t`` and ``t2i`` entry re-scored and each row re-sorted.

    The new scores are mapped affinely (so monotonically) onto each row's stored
    base range, so the lists stay in the lists' own score range and sorted.
    """
    out: Dict[str, Tuple[Tensor, Tensor]] = {}
    for kind in ("i2t", "t2i"):
        index, base = lists.lists(kind)
        rows = torch.arange(index.shape[0], device=index.device)[:, None]
        new = scores.gather(kind, rows, index).double()
        lo, hi = base.min(1, keepdim=True).values.double(), base.max(1, keepdim=True).values.double()
        nlo, nhi = new.min(1, keepdim=True).values, new.max(1, keepdim=True).values
        span = nhi - nlo
        mapped = torch.where(span > 0, lo + (new - nlo) / span.clamp_min(1e-300) * (hi - lo), base.double())
        order = torch.sort(mapped, dim=1, descending=True, stable=True).indices
        out[kind] = (index.gather(1, order), mapped.gather(1, order).to(base.dtype))
    return lists.with_lists(**out)


def _rescorer(name: str) -> Callable[..., NeighborLists]:
    def run(lists: NeighborLists, **params: Any) -> NeighborLists:
        return rescore_lists(lists, LIST_SCORERS[name](lists, **params))
    run.__name__ = f"{name}_lists"
    return run


#: Training-free methods that run on neighbour lists, by registry name: re-ranked lists out.
LIST_METHODS: Dict[str, Callable[..., NeighborLists]] = {"krnn": krnn_lists,
                                                         **{name: _rescorer(name) for name in LIST_SCORERS}}
