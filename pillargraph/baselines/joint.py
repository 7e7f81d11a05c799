r"""The joint query+gallery graph that k-reciprocal, ECN and GNN re-ranking work on.

Items ``0..Q-1`` are the queries and ``Q..Q+G-1`` the gallery items of one
:class:`~pillargraph.baselines.RetrievalView`; the joint similarity is the
block matrix

.. math::
    J = \begin{pmatrix} S_{qq} & S_{qg} \\ S_{qg}^\top & S_{gg} \end{pmatrix}

and is never materialised whole: rows are built a chunk at a time.
"""
from __future__ import annotations

import warnings
from typing import Callable, Optional

import torch
from torch import Tensor

from ..data.neighbors import NeighborLists
from .base import RetrievalView, chunk_ranges, resolve_chunk_size

__all__ = ["joint_size", "joint_rows", "joint_values", "joint_topk", "cut_lists", "sparse_rows", "sparse_matmul",
           "RowSlicer", "row_inner_products", "joint_topk_from_lists", "sparse_pair_products"]


def joint_size(view: RetrievalView) -> int:
    """Number of joint items ``T = Q + G``."""
    return view.num_queries + view.num_gallery


def joint_rows(view: RetrievalView, start: int, stop: int) -> Tensor:
    """Dense rows ``start:stop`` of the joint similarity, shape :obj:`[stop - start, T]`."""
    q = view.num_queries
    parts = []
    if start < q:
        b = min(stop, q)
        parts.append(torch.cat([view.query_intra[start:b].to(view.sim.dtype), view.sim[start:b]], 1))
    if stop > q:
        a = max(start, q)
        parts.append(torch.cat([view.sim[:, a - q:stop - q].T,
                                view.gallery_intra[a - q:stop - q].to(view.sim.dtype)], 1))
    return parts[0] if len(parts) == 1 else torch.cat(parts, 0)


def joint_values(view: RetrievalView, rows: Tensor, cols: Tensor) -> Tensor:
    """Entries ``J[rows[i], cols[i]]`` of the joint similarity (element-wise index pairs)."""
    q = view.num_queries
    out = torch.empty(rows.shape, dtype=view.sim.dtype, device=view.sim.device)
    rq, cq = rows < q, cols < q
    for rmask, cmask, mat, roff, coff, tr in (
            (rq, cq, view.query_intra, 0, 0, False), (rq, ~cq, view.sim, 0, q, False),
            (~rq, cq, view.sim, q, 0, True), (~rq, ~cq, view.gallery_intra, q, q, False)):
        m = rmask & cmask
        r, c = rows[m] - roff, cols[m] - coff
        out[m] = (mat[c, r] if tr else mat[r, c]).to(out.dtype)
    return out


def joint_topk(view: RetrievalView, k: int, chunk_size: Optional[int] = None,
               drop_ties: bool = False) -> tuple[Tensor, Tensor]:
    """Each joint item's top-``k`` list, the item itself always first.

    Args:
        view: the direction's matrices.
        k: list length, ``1 <= k <= T``.
        chunk_size: rows per block (default: from the memory budget).
        drop_ties: mark the entries tied with the first one left out of a list
            as ``-1`` (padding that :func:`sparse_rows` skips), so that index
            order never decides who makes the list.

    Returns:
        ``(values, indices)``, each :obj:`[T, k]`; ``values[:, 0]`` is the
        item's own (diagonal) similarity.
    """
    t = joint_size(view)
    if not 1 <= k <= t:
        raise ValueError(f"k: expected 1..{t} (queries + gallery items), got {k}")
    extra = int(drop_ties and k < t)
    vals = view.sim.new_empty((t, k))
    idx = torch.empty((t, k), dtype=torch.long, device=view.sim.device)
    step = resolve_chunk_size(chunk_size, t, 2 * t)
    for a, b in chunk_ranges(t, step):
        rows = joint_rows(view, a, b)
        ar = torch.arange(b - a, device=rows.device)
        diag = rows[ar, ar + a].clone()
        rows[ar, ar + a] = float("inf")  # the item itself heads its own list
        v, i = rows.topk(k + extra, dim=1)
        if extra:
            i = torch.where(v[:, :k] > v[:, k:], i[:, :k], -1)
        vals[a:b], idx[a:b] = v[:, :k], i[:, :k]
        vals[a:b, 0] = diag
    return vals, idx


def joint_topk_from_lists(lists: NeighborLists, k: int, drop_ties: bool = False) -> tuple[Tensor, Tensor]:
    """:func:`joint_topk` of the joint graph of all images (ids ``0..N-1``) and captions (``N..N+M-1``),
    from neighbour lists.

    An image's joint list merges its ``i2i`` and ``i2t`` lists (a caption's its ``t2t`` and
    ``t2i`` lists), so it equals the dense joint list whenever those lists are at least
    ``k`` deep besides the item itself: the top ``k`` of a union lie in the union of each
    part's top ``k``. Both directions share this graph.

    Raises:
        ValueError: lists too shallow for ``k`` (the message names the kind and the depth needed).
    """
    n, m = lists.num_images, lists.num_texts
    if not 1 <= k <= n + m:
        raise ValueError(f"k: expected 1..{n + m} (images + captions), got {k}")
    extra = int(drop_ties and k < n + m)
    vals, idx = [], []
    for rows, intra, cross, off_intra, off_cross in ((n, "i2i", "i2t", 0, n), (m, "t2t", "t2i", n, 0)):
        need = k - 1 + extra
        for kind in (intra, cross):
            have = lists.depth(kind) - (kind == intra)
            if have < min(need, lists.smallest_gallery(kind) - (kind == intra)):
                raise ValueError(f"{kind}_index: joint lists of {k} items need {kind} lists of depth "
                                 f"{need + (kind == intra)}, these have {lists.depth(kind)}")
        ii, vi = lists.lists(intra)
        ci, cv = lists.lists(cross)
        own = torch.arange(rows, device=ii.device)
        self_sim = lists.gather(intra, own, own).to(cv.dtype)
        vi = vi.to(cv.dtype).masked_fill(ii == own[:, None], float("-inf"))  # the item itself heads the list
        v, pos = torch.cat([vi, cv], 1).topk(min(need, vi.shape[1] + cv.shape[1]), dim=1)
        i = torch.cat([ii + off_intra, ci + off_cross], 1).gather(1, pos)
        if extra and v.shape[1] == need:
            i = torch.where(v[:, :k - 1] > v[:, k - 1:k], i[:, :k - 1], -1)
            v = v[:, :k - 1]
        vals.append(torch.cat([self_sim[:, None], v], 1))
        idx.append(torch.cat([own[:, None] + off_intra, i], 1))
    return torch.cat(vals), torch.cat(idx)


def sparse_pair_products(a: Tensor, left: Tensor, right: Tensor, chunk: int = 1 << 15) -> Tensor:
    """Inner products of rows ``left[p]`` and ``right[p]`` of a coalesced sparse COO matrix, for each pair ``p``.

    Each product walks the stored entries of the right row and looks the same
    columns up in the left row, so memory grows with the pairs, never with
    :math:`T^2`.
    """
    a = a.coalesce()
    rows, cols = a.indices()
    values = a.values()
    width = a.shape[1]
    keys = rows * width + cols  # sorted: the entries of a coalesced matrix are in row-major order
    ptr = torch.searchsorted(rows, torch.arange(a.shape[0] + 1, device=rows.device))
    out = torch.zeros(left.numel(), dtype=values.dtype, device=values.device)
    left, right = left.reshape(-1).to(rows.device), right.reshape(-1).to(rows.device)
    for s in range(0, left.numel(), chunk):
        lo, ro = left[s:s + chunk], right[s:s + chunk]
        start, count = ptr[ro], ptr[ro + 1] - ptr[ro]
        pair = torch.repeat_interleave(torch.arange(ro.numel(), device=ro.device), count)
        first = torch.cumsum(count, 0) - count
        entry = start[pair] + torch.arange(pair.numel(), device=ro.device) - first[pair]
        query = lo[pair] * width + cols[entry]
        at = torch.searchsorted(keys, query).clamp_(max=max(keys.numel() - 1, 0))
        hit = keys[at] == query
        prod = torch.where(hit, values[at], torch.zeros((), dtype=values.dtype)) * values[entry]
        out[s:s + chunk] = torch.zeros(ro.numel(), dtype=values.dtype).index_add_(0, pair, prod)
    return out


def cut_lists(idx: Tensor, vals: Tensor, m: int) -> Tensor:
    """The first ``m`` entries of :func:`joint_topk` lists, ``-1`` where an entry ties with the first
    one past the cut (index order must not pick among them); the item itself always stays."""
    if m >= idx.shape[1]:
        return idx[:, :m]
    v = vals.clone()
    v[:, 0] = float("inf")
    return torch.where(v[:, :m] > v[:, m:m + 1], idx[:, :m], -1)


def sparse_rows(idx: Tensor, values: Tensor, num_cols: int) -> Tensor:
    """A coalesced sparse COO matrix with ``values[i, j]`` at ``(i, idx[i, j])`` (duplicates summed).

    Entries where ``idx < 0`` are dropped (padding).
    """
    r = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
    keep = idx >= 0
    ind = torch.stack([r[keep], idx[keep]])
    return torch.sparse_coo_tensor(ind, values[keep], (idx.shape[0], num_cols),
                                   check_invariants=False).coalesce()


def sparse_matmul(a: Tensor, b: Tensor) -> Tensor:
    """Sparse times sparse, coalesced (torch's beta-state CSR notice silenced)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse.mm(a, b).coalesce()


class RowSlicer:
    """Dense row blocks of a coalesced sparse COO matrix, without re-indexing it each time."""

    def __init__(self, a: Tensor) -> None:
        a = a.coalesce()
        self.shape = a.shape
        self.rows, self.cols = a.indices()
        self.values = a.values()
        self.ptr = torch.searchsorted(self.rows, torch.arange(a.shape[0] + 1, device=a.device))

    def __call__(self, start: int, stop: int) -> Tensor:
        """Rows ``start:stop`` as a dense :obj:`[stop - start, C]` tensor."""
        e0, e1 = int(self.ptr[start]), int(self.ptr[stop])
        out = self.values.new_zeros((stop - start, self.shape[1]))
        out[self.rows[e0:e1] - start, self.cols[e0:e1]] = self.values[e0:e1]
        return out


def row_inner_products(left: Callable[[int, int], Tensor], right: Callable[[int, int], Tensor],
                       num_left: int, num_right: int, width: int,
                       chunk_size: Optional[int] = None) -> Tensor:
    """``L @ R.T`` for row-block callables ``left``/``right`` of ``width`` columns, block by block.

    Dense blocks keep the work in one fast matrix product (also on GPUs) while
    only two blocks of rows are ever materialised.
    """
    first = left(0, min(1, num_left))
    out = first.new_empty((num_left, num_right))
    step_l = resolve_chunk_size(chunk_size, num_left, 2 * width)
    step_r = resolve_chunk_size(None, num_right, 2 * width)
    for a, b in chunk_ranges(num_left, step_l):
        lb = left(a, b)
        for c, d in chunk_ranges(num_right, step_r):
            out[a:b, c:d] = lb @ right(c, d).T
    return out
