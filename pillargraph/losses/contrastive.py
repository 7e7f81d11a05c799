"""Multi-positive InfoNCE over each query's candidate list."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._lists import MASKED, as_float, candidates, check_reduction, positives, reduce

__all__ = ["contrastive_loss"]


def contrastive_loss(scores: Tensor, y: Tensor, candidate_mask: Optional[Tensor] = None, tau: float = 2.0,
                     reduction: str = "mean") -> Tensor:
    r"""Multi-positive contrastive loss over the local candidate list of every query.

    .. math::
        \ell_q = -\log \frac{\sum_{p \in P_q} e^{s_{qp} / \tau}}{\sum_{c \in C_q} e^{s_{qc} / \tau}}

    with :math:`C_q` the candidates and :math:`P_q \subseteq C_q` the positives
    among them. A query with no positive in its list carries no signal and is
    skipped: it contributes 0 and does not count in the mean.

    Args:
        scores (Tensor): :obj:`[B, K]` scores.
        y (Tensor): :obj:`[B, K]` bool, the positives.
        candidate_mask (Tensor, optional): :obj:`[K]` or :obj:`[B, K]` bool,
            the positions that form the list (e.g.
            :attr:`GraphBatch.candidate_mask <pillargraph.graphs.GraphBatch.candidate_mask>`,
            which leaves out the query node); every column when :obj:`None`.
        tau (float, optional): Temperature. (default: :obj:`2.0`, the prototype's)
        reduction (str, optional): ``'mean'`` over queries with a positive,
            ``'sum'``, or ``'none'`` for :obj:`[B]` values. (default: :obj:`'mean'`)

    Returns:
        Tensor: a scalar, or :obj:`[B]` for ``reduction='none'``.
    """
    check_reduction(reduction)
    if tau <= 0:
        raise ValueError(f"tau: must be positive, got {tau}")
    scores = as_float(scores, "scores")
    cand = candidates(scores, candidate_mask)
    pos, _ = positives(scores, y, cand)
    valid = pos.any(dim=-1)
    logits = scores / tau
    log_all = torch.logsumexp(logits.masked_fill(~cand, MASKED), dim=-1)
    log_pos = torch.logsumexp(logits.masked_fill(~pos, MASKED), dim=-1)
    per_query = torch.where(valid, log_all - log_pos, torch.zeros_like(log_all))
    return reduce(per_query, valid, reduction)
