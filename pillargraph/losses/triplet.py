"""Local triplet loss: every negative against the hardest positive of its list."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._lists import as_float, candidates, check_reduction, positives, reduce

__all__ = ["triplet_loss"]


def triplet_loss(scores: Tensor, y: Tensor, candidate_mask: Optional[Tensor] = None, margin: float = 0.2,
                 reduction: str = "mean") -> Tensor:
    r"""Hinge of every negative candidate against the lowest-scored positive, vectorised over queries.

    .. math::
        \ell_q = \sum_{n \in N_q} \big[\, m + s_{qn} - \min_{p \in P_q} s_{qp} \,\big]_+

    with :math:`P_q` / :math:`N_q` the positive / negative candidates. Queries
    with no positive in the list are skipped (0, not counted in the mean).

    Args:
        scores (Tensor): :obj:`[B, K]` scores.
        y (Tensor): :obj:`[B, K]` bool, the positives.
        candidate_mask (Tensor, optional): :obj:`[K]` or :obj:`[B, K]` bool;
            every column when :obj:`None`.
        margin (float, optional): Margin :math:`m`. (default: :obj:`0.2`)
        reduction (str, optional): ``'mean'`` over queries with a positive,
            ``'sum'``, or ``'none'``. (default: :obj:`'mean'`)

    Returns:
        Tensor: a scalar, or :obj:`[B]` for ``reduction='none'``.
    """
    check_reduction(reduction)
    scores = as_float(scores, "scores")
    cand = candidates(scores, candidate_mask)
    pos, neg = positives(scores, y, cand)
    valid = pos.any(dim=-1)
    hardest = scores.masked_fill(~pos, float("inf")).amin(dim=-1)
    hardest = torch.where(valid, hardest, torch.zeros_like(hardest))
    hinge = (margin + scores - hardest.unsqueeze(-1)).clamp(min=0)
    per_query = (hinge * neg).sum(dim=-1) * valid
    return reduce(per_query, valid, reduction)
