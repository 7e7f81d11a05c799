"""Validation and chunked column reductions shared by the score-normalising re-rankers.

Every functional re-ranker in this package works on a score matrix with the
queries along the rows and the gallery along the columns (``sim_i2t`` for
image-to-text retrieval, ``sim_i2t.T`` for text-to-image retrieval). The helpers
below bound their temporaries with :func:`~pillargraph.baselines.base.resolve_chunk_size`.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .base import chunk_ranges, resolve_chunk_size

__all__ = ["check_scores", "check_bank", "check_beta", "column_logsumexp", "column_topk_mean"]


def check_scores(sim: Tensor, name: str = "sim") -> None:
    """Raise :class:`ValueError` unless ``sim`` is a non-empty, finite, floating 2-D tensor."""
    if not isinstance(sim, Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(sim).__name__}")
    if sim.dim() != 2 or sim.shape[0] == 0 or sim.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D matrix, got shape {tuple(sim.shape)}")
    if not sim.is_floating_point():
        raise ValueError(f"{name}: expected a float dtype, got {sim.dtype}")
    if not bool(torch.isfinite(sim).all()):
        raise ValueError(f"{name}: contains non-finite values (NaN or inf)")


def check_beta(beta: float, name: str = "beta") -> float:
    """An inverse temperature: a positive number (not a bool), returned as a float.

    Raises:
        ValueError: ``beta`` is not a positive number.
    """
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not beta > 0:
        raise ValueError(f"{name}: expected a positive number, got {beta!r}")
    return float(beta)


def check_bank(bank: Optional[Tensor], num_columns: int, name: str = "bank",
               what: str = "gallery item") -> Tensor:
    """Validate a bank matrix with one column per ``what`` (``num_columns`` of them)."""
    if bank is None:
        raise ValueError(f"{name}: is required (a bank of extra queries scored against the gallery)")
    check_scores(bank, name)
    if bank.shape[1] != num_columns:
        raise ValueError(f"{name}: expected {num_columns} columns (one per {what}), "
                         f"got shape {tuple(bank.shape)}")
    return bank


def column_logsumexp(x: Tensor, scale: float, chunk_size: Optional[int] = None) -> Tensor:
    r"""``logsumexp(scale * x, dim=0)`` computed in column blocks, shape :obj:`[C]`."""
    out = torch.empty(x.shape[1], dtype=x.dtype, device=x.device)
    for a, b in chunk_ranges(x.shape[1], resolve_chunk_size(chunk_size, x.shape[1], x.shape[0])):
        out[a:b] = torch.logsumexp(x[:, a:b] * scale, dim=0)
    return out


def column_topk_mean(x: Tensor, k: int, chunk_size: Optional[int] = None) -> Tensor:
    """Mean of the ``k`` largest entries of every column of ``x``, shape :obj:`[C]`."""
    out = torch.empty(x.shape[1], dtype=x.dtype, device=x.device)
    for a, b in chunk_ranges(x.shape[1], resolve_chunk_size(chunk_size, x.shape[1], 2 * x.shape[0])):
        out[a:b] = torch.topk(x[:, a:b], k, dim=0).values.mean(dim=0)
    return out
