"""Hinge keeping re-ranked scores above the base scores' top-K boundary (the prototype's extra term)."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._lists import as_float, candidates, check_reduction, reduce

__all__ = ["hinge_loss"]


def hinge_loss(scores: Tensor, base_score: Tensor, candidate_mask: Optional[Tensor] = None, margin: float = 0.0,
               reduction: str = "mean") -> Tensor:
    r"""Penalises candidates whose learned score falls below the lowest base score in the list.

    .. math::
        \ell_q = \sum_{c \in C_q} \big[\, \min_{c' \in C_q} b_{qc'} + m - s_{qc} \,\big]_+

    where :math:`b` are the base scores. Items outside the top-K have base
    scores at most :math:`\min_{c'} b_{qc'}`, so this keeps re-ranked scores
    above them. pillargraph's write-back maps scores monotonically into the
    base range instead, so the term is optional (weight 0 in
    :class:`PillarLoss` by default).

    Args:
        scores (Tensor): :obj:`[B, K]` learned scores.
        base_score (Tensor): :obj:`[B, K]` base scores.
        candidate_mask (Tensor, optional): :obj:`[K]` or :obj:`[B, K]` bool;
            every column when :obj:`None`.
        margin (float, optional): Margin :math:`m`. (default: :obj:`0.0`)
        reduction (str, optional): ``'mean'`` over queries, ``'sum'`` or ``'none'``.
            (default: :obj:`'mean'`)

    Returns:
        Tensor: a scalar, or :obj:`[B]` for ``reduction='none'``.
    """
    check_reduction(reduction)
    scores = as_float(scores, "scores")
    base = as_float(base_score, "base_score")
    if base.shape != scores.shape:
        raise ValueError(f"base_score: expected shape {list(scores.shape)}, got {list(base.shape)}")
    cand = candidates(scores, candidate_mask)
    valid = cand.any(dim=-1)
    floor = base.masked_fill(~cand, float("inf")).amin(dim=-1)
    floor = torch.where(valid, floor, torch.zeros_like(floor)).unsqueeze(-1)
    per_query = ((floor + margin - scores).clamp(min=0) * cand).sum(dim=-1)
    return reduce(per_query, valid, reduction)
