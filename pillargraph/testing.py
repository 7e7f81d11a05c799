"""Reference implementations for tests and speed comparisons: per-query Python-loop losses, as the
research prototype computes them.

Deliberately plain, one query at a time; not for training. It lives in the
package so that the test suite and the benchmarks import it the same way
(neither imports from the other's folder).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

__all__ = ["triplet_loss_reference"]


def triplet_loss_reference(scores: Tensor, y: Tensor, candidate_mask: Optional[Tensor] = None,
                           margin: float = 0.2) -> Tensor:
    """Mean over queries with a positive of sum_neg [margin + s_neg - min_pos s_pos]_+, one query at a time."""
    if candidate_mask is None:
        candidate_mask = torch.ones(scores.shape[1], dtype=torch.bool, device=scores.device)
    losses = []
    for q in range(scores.shape[0]):
        s = scores[q][candidate_mask]
        labels = y[q][candidate_mask]
        pos, neg = s[labels], s[~labels]
        if pos.numel() == 0:
            continue
        losses.append(torch.clamp(margin + neg - pos.min(), min=0).sum())
    if not losses:
        return scores.sum() * 0.0
    return torch.stack(losses).mean()
