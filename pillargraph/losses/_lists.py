"""Shared checks for losses over per-query candidate lists."""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

#: Stand-in for minus infinity in masked logits: exp() of it is exactly 0 while gradients stay finite.
MASKED = -1e30
REDUCTIONS = ("mean", "sum", "none")


def as_float(scores: Tensor, name: str) -> Tensor:
    """Scores in at least single precision (losses stay accurate under mixed precision)."""
    if not torch.is_tensor(scores) or scores.dim() != 2 or not scores.is_floating_point():
        raise ValueError(f"{name}: expected a float tensor [B, K], got "
                         f"{getattr(scores, 'dtype', type(scores).__name__)} {list(getattr(scores, 'shape', []))}")
    return scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores


def candidates(scores: Tensor, candidate_mask: Optional[Tensor]) -> Tensor:
    """The candidate mask broadcast to :obj:`[B, K]` (every column when :obj:`None`)."""
    b, k = scores.shape
    if candidate_mask is None:
        return torch.ones(b, k, dtype=torch.bool, device=scores.device)
    if candidate_mask.dtype != torch.bool or candidate_mask.shape not in ((k,), (b, k)):
        raise ValueError(f"candidate_mask: expected a bool [{k}] or [{b}, {k}] tensor, got "
                         f"{candidate_mask.dtype} {list(candidate_mask.shape)}")
    return candidate_mask.expand(b, k)


def positives(scores: Tensor, y: Tensor, cand: Tensor) -> Tuple[Tensor, Tensor]:
    """Positive and negative candidates, each :obj:`[B, K]` bool."""
    if y.dtype != torch.bool or y.shape != scores.shape:
        raise ValueError(f"y: expected a bool tensor of shape {list(scores.shape)}, got {y.dtype} {list(y.shape)}")
    return y & cand, ~y & cand


def reduce(per_query: Tensor, valid: Tensor, reduction: str) -> Tensor:
    """Mean over the valid queries (0 when there are none), sum, or the per-query values."""
    if reduction == "none":
        return per_query
    if reduction == "sum":
        return per_query.sum()
    if reduction == "mean":
        return per_query.sum() / valid.sum().clamp(min=1)
    raise ValueError(f"reduction: unknown {reduction!r}; expected one of {list(REDUCTIONS)}")


def check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction: unknown {reduction!r}; expected one of {list(REDUCTIONS)}")
