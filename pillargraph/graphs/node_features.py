r"""Candidate features beyond the pillar space: what hand-made re-rankers read.

The pillar vectors describe *where* a node lies among the query's
neighbours; the base retriever's own verdict and the candidates' view of the
query are not in them. These groups append a few columns to every node's
features (zeros for the query node and context nodes), so a model can learn
what KRNN and QB-Norm hand-code:

* ``'rank'``: the candidate's base score standardised over the query's
  candidates, its tie-aware rank among them (the number of candidates scoring
  strictly higher, over ``C - 1``) and its gap to the best candidate (over the
  candidates' score range).
* ``'reciprocal'``: where the query stands in the candidate's own ranking of
  the split's queries (the reverse list, e.g. a caption's t2i list for an image
  query), as :math:`\log(1 + r) / \log(1 + D)` and :math:`1 / r` with
  :math:`r` the tie-pessimistic 1-based rank, capped at the reverse lists'
  depth :math:`D`. This reads other queries of the split, so a model that uses
  it is **transductive** at test time, like KRNN.
* ``'prior:<method>'``: a training-free re-ranker's scores of the candidates,
  as the three ``'rank'`` columns computed from them (see
  :mod:`pillargraph.graphs.priors`); transductive when the method is.

Every column is invariant to scaling the scores by :math:`c > 0` and gives
tied candidates equal values, so no feature orders candidates by their
position in the gallery.
"""
from __future__ import annotations

import math
from typing import Sequence, Tuple

import torch
from torch import Tensor

from ..data.source import SimilaritySource
from ..modality import check_direction
from .priors import is_prior, prior_reranker

__all__ = ["NODE_FEATURES", "check_node_features", "num_node_features", "rank_features",
           "reciprocal_features", "TRANSDUCTIVE_FEATURES", "is_transductive", "split_node_features"]

#: Feature groups and their column counts (besides any number of ``'prior:<method>'`` groups, 3 each).
NODE_FEATURES = {"rank": 3, "reciprocal": 2}
#: Columns of every ``'prior:<method>'`` group.
PRIOR_COLUMNS = 3
#: Groups that read other queries of the split at test time.
TRANSDUCTIVE_FEATURES = ("reciprocal",)

# relative tolerance when comparing a pair's score with the same pair in a reverse list
_REL_TOL = 1e-6


def check_node_features(groups: Sequence[str]) -> Tuple[str, ...]:
    """The groups as a tuple in canonical order, or :class:`ValueError` naming an unknown one.

    Fixed groups come first in :data:`NODE_FEATURES` order, then the
    ``'prior:<method>'`` groups in the order given (each is resolved here, so a
    bad method name or parameter fails at once).
    """
    groups = tuple(groups)
    unknown = [g for g in groups if g not in NODE_FEATURES and not is_prior(g)]
    if unknown:
        raise ValueError(f"node_features: unknown group(s) {unknown}; expected some of {list(NODE_FEATURES)} "
                         f"or 'prior:<method>'")
    if len(set(groups)) != len(groups):
        raise ValueError(f"node_features: repeated group in {list(groups)}")
    priors = tuple(g for g in groups if is_prior(g))
    seen = {}
    for g in priors:  # the same method with the same parameters, however it is spelt, is one group
        method = prior_reranker(g)
        key = repr(method)
        if key in seen:
            raise ValueError(f"node_features: {g!r} repeats {seen[key]!r} (both are {key}); give each "
                             f"prior once")
        seen[key] = g
    return tuple(g for g in NODE_FEATURES if g in groups) + priors


def num_node_features(groups: Sequence[str]) -> int:
    """Columns the groups add."""
    return sum(PRIOR_COLUMNS if is_prior(g) else NODE_FEATURES[g] for g in check_node_features(groups))


def is_transductive(groups: Sequence[str]) -> bool:
    """Whether any group reads other queries of the split (``'reciprocal'``, a transductive prior)."""
    return any(g in TRANSDUCTIVE_FEATURES or (is_prior(g) and prior_reranker(g).transductive)
               for g in check_node_features(groups))


def split_node_features(text: str) -> Tuple[str, ...]:
    """A comma-separated list of groups, commas inside a prior's parentheses kept:
    ``'rank,prior:gnn_rerank(k1=10, k2=3)'`` -> ``('rank', 'prior:gnn_rerank(k1=10, k2=3)')``."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "(") - (ch == ")")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return tuple(p.strip() for p in parts if p.strip())


def rank_features(base: Tensor, candidate_mask: Tensor) -> Tensor:
    """``'rank'`` columns :obj:`[Q, K, 3]` from the base scores :obj:`[Q, K]` of the graph nodes."""
    cmask = candidate_mask.to(base.device)
    s = base[:, cmask].double()
    c = s.shape[1]
    mean, std = s.mean(1, keepdim=True), s.std(1, unbiased=False, keepdim=True)
    z = torch.where(std > 0, (s - mean) / std.clamp_min(1e-300), torch.zeros_like(s))
    higher = (s[:, None, :] > s[:, :, None]).sum(-1).double()            # strictly better candidates
    lo, hi = s.min(1, keepdim=True).values, s.max(1, keepdim=True).values
    gap = torch.where(hi > lo, (hi - s) / (hi - lo).clamp_min(1e-300), torch.zeros_like(s))
    out = torch.zeros(*base.shape, 3, dtype=torch.float32, device=base.device)
    out[:, cmask] = torch.stack([z, higher / max(c - 1, 1), gap], dim=-1).float()
    return out


def reciprocal_features(source: SimilaritySource, direction: str, nodes: Tensor, candidate_mask: Tensor,
                        base: Tensor, depth: int) -> Tensor:
    """``'reciprocal'`` columns :obj:`[Q, K, 2]`: the query's rank in each candidate's reverse list.

    Args:
        source: the split (its reverse lists: ``t2i`` for i2t graphs, ``i2t`` for t2i).
        direction: the graphs' direction.
        nodes: :obj:`[Q, K]` node ids (node 0 the query).
        candidate_mask: :obj:`[K]` candidate positions.
        base: :obj:`[Q, K]` base score of each node against the query.
        depth: :math:`D`, reverse-list depth read (ranks beyond it count as :math:`D`).
    """
    reverse = "t2i" if check_direction(direction) == "i2t" else "i2t"
    cmask = candidate_mask.to(nodes.device)
    cand = nodes[:, cmask]
    _, scores = source.topk(reverse, depth, cand.reshape(-1).to(source.txt2img.device))
    scores = scores.to(nodes.device).view(*cand.shape, depth).double()
    s = base[:, cmask].double()[..., None]
    tol = _REL_TOL * s.abs()
    # tie-pessimistic 1-based rank: every reverse-list entry scoring at least the pair's own score
    r = (scores >= s - tol).sum(-1).clamp(1, depth).double()
    out = torch.zeros(*nodes.shape, 2, dtype=torch.float32, device=nodes.device)
    out[:, cmask] = torch.stack([torch.log1p(r) / math.log1p(depth), 1.0 / r], dim=-1).float()
    return out
