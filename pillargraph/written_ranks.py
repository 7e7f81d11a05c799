r"""Exact retrieval ranks of score matrices that differ from a base matrix only in fixed entries.

A re-ranking write-back (:func:`pillargraph.rerank.write_back`) changes each
query's top-``K`` candidates and nothing else. Choosing fusion weights on dev
evaluates many such matrices; ranking each one in full compares every score of
the split again. :class:`WrittenRanks` ranks the base matrix once (one sort of
each row) and then gets a written matrix's ranks from the written entries
alone:

.. math::
    |\{c : x_{rc} \ge \theta_r\}| = |\{c : b_{rc} \ge \theta_r\}|
    - |\{c \in W_r : b_{rc} \ge \theta_r\}| + |\{c \in W_r : x_{rc} \ge \theta_r\}|

with :math:`W_r` the written columns of row :math:`r`, the first term a binary
search in the sorted base row. Comparisons are made in the matrix's own dtype,
so the ranks equal :func:`pillargraph.metrics.evaluate`'s exactly (ties
included).
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["pair_slots", "WrittenRanks"]


def pair_slots(rows: Tensor, cols: Tensor, num_cols: int, q_rows: Tensor, q_cols: Tensor) -> Tensor:
    """Where each query pair ``(q_rows, q_cols)`` lies among the pairs ``(rows[:, None], cols)``.

    Args:
        rows: :obj:`[Q]` row of each list.
        cols: :obj:`[Q, C]` columns of each list (pairs distinct).
        num_cols: columns of the matrix (ids are below it).
        q_rows, q_cols: query pairs, broadcast together.

    Returns:
        The flat index into ``cols`` (:obj:`[Q * C]`) of each query pair, ``-1`` where
        it is not one of the pairs; the shape of the broadcast query.
    """
    keys = (rows[:, None] * num_cols + cols).reshape(-1)
    q = torch.broadcast_tensors(q_rows, q_cols)
    query = (q[0] * num_cols + q[1]).reshape(-1)
    if keys.numel() == 0:
        return torch.full(q[0].shape, -1, dtype=torch.long, device=query.device)
    keys, order = torch.sort(keys)
    pos = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return torch.where(keys[pos] == query, order[pos], torch.full_like(pos, -1)).view(q[0].shape)


class WrittenRanks:
    """Ranks of the rows of matrices equal to ``base`` outside the entries ``(rows[:, None], cols)``.

    The rank of row ``r`` is :func:`~pillargraph.metrics.evaluate`'s: one plus
    the number of other entries of the row scoring at least its best positive,
    i.e. the number of entries ``>=`` that positive; a row without positives
    gets ``G + 1``.

    Args:
        base: :obj:`[R, G]` base scores.
        rows: :obj:`[Q]` distinct rows whose entries are written.
        cols: :obj:`[Q, C]` the written columns of each of those rows (distinct per row).
        pos_rows, pos_cols: :obj:`[P]` the positive pairs (e.g. every caption
            with its image).
    """

    def __init__(self, base: Tensor, rows: Tensor, cols: Tensor, pos_rows: Tensor, pos_cols: Tensor) -> None:
        self.num_rows, self.num_cols = base.shape
        self.dtype = base.dtype
        self.rows, self.cols = rows, cols
        self.sorted = torch.sort(base, dim=1).values
        self.base_written = base[rows[:, None], cols]
        self.pos_rows = pos_rows
        self.pos_base = base[pos_rows, pos_cols]
        self.pos_slot = pair_slots(rows, cols, self.num_cols, pos_rows, pos_cols)
        self.has_positive = torch.bincount(pos_rows, minlength=self.num_rows) > 0

    def ranks(self, written: Tensor) -> Tensor:
        """:obj:`[R]` ranks of the matrix whose entries ``(rows, cols)`` hold ``written`` (:obj:`[Q, C]`)."""
        flat = written.to(self.dtype).reshape(-1)
        hit = self.pos_slot >= 0
        pos = torch.where(hit, flat[self.pos_slot.clamp(min=0)], self.pos_base)
        best = torch.full((self.num_rows,), float("inf"), dtype=self.dtype)
        best = best.scatter_reduce(0, self.pos_rows, pos, reduce="amax", include_self=False)
        below = torch.searchsorted(self.sorted, best[:, None]).squeeze(1)
        count = self.num_cols - below
        thr = best[self.rows][:, None]
        change = (written.to(self.dtype) >= thr).sum(1) - (self.base_written >= thr).sum(1)
        count = count.index_add(0, self.rows, change)
        return torch.where(self.has_positive, count, torch.full_like(count, self.num_cols + 1))
