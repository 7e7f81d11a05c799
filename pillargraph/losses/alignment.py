"""Structure alignment: one direction's ranking distribution against the other direction's on the mirrored list."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from ._lists import MASKED, as_float, candidates, check_reduction, reduce

__all__ = ["alignment_loss"]


def alignment_loss(scores: Tensor, mirror_scores: Tensor, candidate_mask: Optional[Tensor] = None,
                   tau: float = 1.0, reduction: str = "mean") -> Tensor:
    r"""KL divergence between two score distributions over the same candidate lists.

    .. math::
        \ell_q = \mathrm{KL}\big(\mathrm{softmax}(\mathbf{s}^{a}_q / \tau) \,\Vert\,
        \mathrm{softmax}(\mathbf{s}^{b}_q / \tau)\big)
        = \sum_{c \in C_q} p_{qc} \left(\log p_{qc} - \log p'_{qc}\right)

    In pillargraph :math:`\mathbf{s}^a` is one direction's network on its own
    list (e.g. an image's i2t list) and :math:`\mathbf{s}^b` the other
    direction's network on the same list mirrored (the t2i network scoring the
    list with texts replaced by their images). Gradients flow into both.

    Args:
        scores (Tensor): :obj:`[B, K]` scores :math:`\mathbf{s}^a`.
        mirror_scores (Tensor): :obj:`[B, K]` scores :math:`\mathbf{s}^b`.
        candidate_mask (Tensor, optional): :obj:`[K]` or :obj:`[B, K]` bool;
            every column when :obj:`None`.
        tau (float, optional): Temperature. (default: :obj:`1.0`)
        reduction (str, optional): ``'mean'`` over queries, ``'sum'`` or ``'none'``.
            (default: :obj:`'mean'`)

    Returns:
        Tensor: a scalar, or :obj:`[B]` for ``reduction='none'``.
    """
    check_reduction(reduction)
    if tau <= 0:
        raise ValueError(f"tau: must be positive, got {tau}")
    a = as_float(scores, "scores")
    b = as_float(mirror_scores, "mirror_scores")
    if a.shape != b.shape:
        raise ValueError(f"mirror_scores: expected shape {list(a.shape)}, got {list(b.shape)}")
    cand = candidates(a, candidate_mask)
    log_p = torch.log_softmax((a / tau).masked_fill(~cand, MASKED), dim=-1)
    log_q = torch.log_softmax((b / tau).masked_fill(~cand, MASKED), dim=-1)
    per_query = (log_p.exp() * (log_p - log_q) * cand).sum(dim=-1)
    return reduce(per_query, cand.any(dim=-1), reduction)
