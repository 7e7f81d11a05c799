r"""Retrieval metrics: Recall@K, median and mean rank, rSum, and the MS-COCO 1K fold protocol.

Ranks are 1-based and ties count against the query: the rank of a positive is
one plus the number of gallery items, other than itself, that score greater
than or equal to it. A constant score matrix therefore never earns recall.
Image-to-text retrieval uses the best-ranked caption of the image.

Everything is vectorised and chunked: a 5000 x 25000 matrix evaluates in
seconds. Inputs may be numpy arrays or torch tensors on any device.

**Multi-positive metrics: R@K with any positive, R-Precision and mAP@R.**

MS-COCO pairs each caption with one image and misses many true matches. ECCV Caption
(Chun et al., ECCV 2022) and CxC (Parekh et al., EACL 2021) add human-verified positives
(:func:`pillargraph.data.coco5k_positives` loads them); any other source works the same way.
A :class:`Positives` holds the relevant pairs of each direction, and :func:`evaluate_positives`
scores a similarity matrix against them.

For a query :math:`q` with positives :math:`P_q`, :math:`R = |P_q|` and
:math:`r(p)` the 1-based rank of positive :math:`p`:

.. math::
    \mathrm{R@K} = [\min_{p \in P_q} r(p) \le K], \qquad
    \mathrm{R\text{-}P} = \frac{|\{p : r(p) \le R\}|}{R}, \qquad
    \mathrm{mAP@R} = \frac{1}{R} \sum_{p:\, r(p) \le R}
        \frac{|\{p' : r(p') \le r(p)\}|}{r(p)}

averaged over the queries that have at least one positive (the official ECCV Caption evaluator
likewise evaluates only the queries its ground truth lists). Ranks are tie-pessimistic like the
rest of this module: :math:`r(p)` is the number of gallery items scoring at least
as high as :math:`p`, itself included, so every positive sits at the end of its tie block and tied
positives count against each other. Without ties these are the usual definitions and the official
evaluator's numbers. A positive outside the gallery (``*_unreachable``) counts in :math:`R` but is
never retrieved.

Everything is vectorised: each positive's rank is one chunked comparison against its query's
scores, and the per-query sums are scatter operations, so a 5000 x 25000 matrix with tens of
thousands of positives evaluates in seconds.

:mod:`pillargraph.multi_positive` re-exports the multi-positive names for code that imports them
from there.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from .bundle import ArrayLike, SimilarityBundle, as_tensor
from .io import atomic_write, read_npz
from .modality import DIRECTIONS, check_direction

__all__ = ["evaluate", "evaluate_folds", "evaluate_lists", "check_list_cutoffs", "i2t_ranks", "t2i_ranks", "recall_at_k",
           "rank_summary", "join_summaries",
           "METRIC_KEYS", "Positives", "evaluate_positives", "positive_ranks", "MULTI_POSITIVE_KEYS",
           "POSITIVES_NPZ_KEYS", "score_matrices"]

#: Keys of :func:`evaluate`'s result for the default ``ks=(1, 5, 10)``.
METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum",
               "i2t_medr", "i2t_meanr", "t2i_medr", "t2i_meanr")

_CHUNK_ELEMENTS = 1 << 24  # bounds the temporary boolean matrix of a rank count


def _inputs(sim_i2t: ArrayLike, txt2img: ArrayLike) -> tuple[Tensor, Tensor]:
    s = sim_i2t if isinstance(sim_i2t, Tensor) else torch.as_tensor(np.asarray(sim_i2t))
    t = txt2img if isinstance(txt2img, Tensor) else torch.as_tensor(np.asarray(txt2img))
    if s.dim() != 2:
        raise ValueError(f"sim_i2t: expected shape (N x M), got {tuple(s.shape)}")
    if not s.is_floating_point():
        s = s.double()
    if t.dim() != 1 or t.numel() != s.shape[1]:
        raise ValueError(f"txt2img: expected shape ({s.shape[1]},), got {tuple(t.shape)}")
    t = t.to(device=s.device, dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= s.shape[0]):
        raise ValueError(f"txt2img: values must lie in [0, {s.shape[0]})")
    # a full isnan pass costs as much as a rank count; a NaN always makes the sum non-finite
    if not bool(torch.isfinite(s.sum())) and bool(torch.isnan(s).any()):
        raise ValueError("sim_i2t: contains NaN")
    return s, t


def _as_numpy(s: Tensor) -> np.ndarray:
    """A zero-copy numpy view of a CPU score matrix (cast where numpy lacks the dtype)."""
    s = s.detach()
    if s.dtype not in (torch.float32, torch.float64):
        s = s.float()
    return s.numpy()


def _count_ge_per_row(s: Tensor, thr: Tensor) -> Tensor:
    """``(s >= thr[:, None]).sum(1)`` in row blocks; on the CPU numpy compares into one reused
    buffer and sums it as uint8, several times faster than torch's bool reduction."""
    n, m = s.shape
    step = max(1, _CHUNK_ELEMENTS // max(m, 1))
    if s.device.type == "cpu":
        a, b = _as_numpy(s), _as_numpy(thr.to(s.dtype))
        buf = np.empty((min(step, n), m), dtype=bool)
        out = np.empty(n, dtype=np.int64)
        for lo in range(0, n, step):
            ge = np.greater_equal(a[lo:lo + step], b[lo:lo + step, None], out=buf[:min(step, n - lo)])
            out[lo:lo + step] = ge.view(np.uint8).sum(axis=1, dtype=np.int64)
        return torch.from_numpy(out)
    return torch.cat([(s[lo:lo + step] >= thr[lo:lo + step, None]).sum(dim=1)
                      for lo in range(0, n, step)])


def _count_ge_per_col(s: Tensor, thr: Tensor) -> Tensor:
    """``(s >= thr[None, :]).sum(0)``; on the CPU summed as uint8 over blocks of <= 255 rows,
    which numpy vectorises across columns (several times faster than a bool reduction)."""
    n, m = s.shape
    if s.device.type == "cpu":
        a, b = _as_numpy(s), _as_numpy(thr.to(s.dtype))
        rows = max(1, min(255, n, _CHUNK_ELEMENTS // max(m, 1)))
        buf = np.empty((rows, m), dtype=bool)
        out = np.zeros(m, dtype=np.int64)
        for lo in range(0, n, rows):
            ge = np.greater_equal(a[lo:lo + rows], b, out=buf[:min(rows, n - lo)])
            out += ge.view(np.uint8).sum(axis=0, dtype=np.uint8)
        return torch.from_numpy(out)
    step = max(1, _CHUNK_ELEMENTS // max(n, 1))
    return torch.cat([(s[:, lo:lo + step] >= thr[None, lo:lo + step]).sum(dim=0)
                      for lo in range(0, m, step)])


def _pos_scores(s: Tensor, t: Tensor) -> Tensor:
    """Score of each caption against its own image, shape [M]."""
    return s[t, torch.arange(t.numel(), device=s.device)]


def i2t_ranks(sim_i2t: ArrayLike, txt2img: ArrayLike) -> Tensor:
    """1-based rank of each image's best-ranked caption, shape :obj:`[N]`.

    An image without captions gets rank ``M + 1`` (it can never be a hit).
    """
    return _i2t_ranks(*_inputs(sim_i2t, txt2img))


def _i2t_ranks(s: Tensor, t: Tensor) -> Tensor:
    n, m = s.shape
    pos = _pos_scores(s, t)
    best = torch.full((n,), float("inf"), dtype=s.dtype, device=s.device)
    best = best.scatter_reduce(0, t, pos, reduce="amax", include_self=False)
    has = torch.bincount(t, minlength=n) > 0
    # the best positive counts itself, so the count equals 1 + others >= it
    cnt = _count_ge_per_row(s, best).to(s.device)
    return torch.where(has, cnt, torch.full_like(cnt, m + 1))


def t2i_ranks(sim_i2t: ArrayLike, txt2img: ArrayLike) -> Tensor:
    """1-based rank of each caption's image, shape :obj:`[M]`."""
    return _t2i_ranks(*_inputs(sim_i2t, txt2img))


def _t2i_ranks(s: Tensor, t: Tensor) -> Tensor:
    return _count_ge_per_col(s, _pos_scores(s, t)).to(s.device)


def recall_at_k(ranks: ArrayLike, k: int) -> float:
    """Percentage of queries whose rank is at most ``k``."""
    r = ranks if isinstance(ranks, Tensor) else torch.as_tensor(np.asarray(ranks))
    return 100.0 * float((r <= k).double().mean())


def rank_summary(prefix: str, ranks: Tensor, ks: Sequence[int] = (1, 5, 10)) -> Dict[str, float]:
    """One direction's metrics from its 1-based ranks: ``{prefix}_r{k}`` for each ``k``,
    ``{prefix}_medr`` and ``{prefix}_meanr``."""
    out = {f"{prefix}_r{k}": recall_at_k(ranks, k) for k in ks}
    r = ranks.double().cpu().numpy()
    out[f"{prefix}_medr"] = float(np.floor(np.median(r)))
    out[f"{prefix}_meanr"] = float(r.mean())
    return out


def join_summaries(i2t: Dict[str, float], t2i: Dict[str, float], ks: Sequence[int] = (1, 5, 10)
                   ) -> Dict[str, float]:
    """:func:`evaluate`'s result from the two directions' :func:`rank_summary` (``rsum`` summed in
    :func:`evaluate`'s order, so equal ranks give bit-equal results)."""
    out: Dict[str, float] = {}
    out.update({f"i2t_r{k}": i2t[f"i2t_r{k}"] for k in ks})
    out.update({f"t2i_r{k}": t2i[f"t2i_r{k}"] for k in ks})
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in ks)
    for key in ("i2t_medr", "i2t_meanr"):
        out[key] = i2t[key]
    for key in ("t2i_medr", "t2i_meanr"):
        out[key] = t2i[key]
    return out


def evaluate(sim_i2t: Union[ArrayLike, SimilarityBundle], txt2img: ArrayLike = None,
             ks: Iterable[int] = (1, 5, 10), sim_t2i: Optional[ArrayLike] = None) -> Dict[str, float]:
    r"""Recall@K in both directions, rSum, median and mean rank.

    Args:
        sim_i2t: :obj:`[N, M]` image-to-text scores, or a
            :class:`~pillargraph.SimilarityBundle` (then ``txt2img`` and, when the
            bundle stores one, ``sim_t2i`` are taken from it).
        txt2img: :obj:`[M]` image index of each caption.
        ks: cut-offs for Recall@K (default: ``(1, 5, 10)``).
        sim_t2i: :obj:`[M, N]` scores that rank the images of each caption, when
            they differ from ``sim_i2t.T`` (default: ``sim_i2t.T``).

    Returns:
        A dict with ``i2t_r{k}`` and ``t2i_r{k}`` (percent) for each ``k``,
        ``rsum`` (the sum of all recalls), and ``i2t_medr``, ``i2t_meanr``,
        ``t2i_medr``, ``t2i_meanr`` (1-based ranks).
    """
    sim_i2t, txt2img, sim_t2i = _unpack(sim_i2t, txt2img, sim_t2i)
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    s, t = _inputs(sim_i2t, txt2img)
    i2t = rank_summary("i2t", _i2t_ranks(s, t), ks)
    t2i = rank_summary("t2i", _t2i_ranks(_t2i_as_columns(sim_t2i, s), t), ks)
    return join_summaries(i2t, t2i, ks)


def _unpack(sim_i2t, txt2img, sim_t2i) -> tuple:
    """``(sim_i2t, txt2img, sim_t2i)`` from a bundle or from matrices."""
    if isinstance(sim_i2t, SimilarityBundle):
        txt2img = sim_i2t.txt2img if txt2img is None else txt2img
        sim_t2i = sim_i2t.sim_t2i if sim_t2i is None else sim_t2i
        sim_i2t = sim_i2t.sim_i2t
    if txt2img is None:
        raise ValueError("txt2img: required when sim_i2t is a matrix")
    return sim_i2t, txt2img, sim_t2i


def _t2i_as_columns(sim_t2i: Optional[ArrayLike], s: Tensor) -> Tensor:
    """The t2i scores laid out like ``sim_i2t`` (captions along columns)."""
    if sim_t2i is None:
        return s
    st = sim_t2i if isinstance(sim_t2i, Tensor) else torch.as_tensor(np.asarray(sim_t2i))
    if tuple(st.shape) != (s.shape[1], s.shape[0]):
        raise ValueError(f"sim_t2i: expected shape ({s.shape[1]}, {s.shape[0]}), got {tuple(st.shape)}")
    if not st.is_floating_point():
        st = st.double()
    if not bool(torch.isfinite(st.sum())) and bool(torch.isnan(st).any()):
        raise ValueError("sim_t2i: contains NaN")
    return st.T.to(s.device)


def fold_slices(num_images: int, folds: int) -> list[np.ndarray]:
    """Consecutive image index blocks of the fold protocol (as even as possible)."""
    if folds < 1 or folds > num_images:
        raise ValueError(f"folds: expected 1..{num_images}, got {folds}")
    return np.array_split(np.arange(num_images), folds)


def evaluate_folds(sim_i2t: Union[ArrayLike, SimilarityBundle], txt2img: ArrayLike = None,
                   folds: int = 5, ks: Iterable[int] = (1, 5, 10),
                   sim_t2i: Optional[ArrayLike] = None) -> Dict[str, float]:
    """The MS-COCO 1K protocol: metrics averaged over consecutive image folds.

    Images are split into ``folds`` consecutive blocks (1000 each for the 5K
    test set); each block is evaluated against its own captions only, and the
    metrics (rSum included) are averaged over the blocks.
    """
    sim_i2t, txt2img, sim_t2i = _unpack(sim_i2t, txt2img, sim_t2i)
    s, t = _inputs(sim_i2t, txt2img)
    st = _t2i_as_columns(sim_t2i, s)
    results = []
    for block in fold_slices(s.shape[0], folds):
        lo, hi = int(block[0]), int(block[-1]) + 1
        texts = ((t >= lo) & (t < hi)).nonzero().flatten()
        results.append(evaluate(s[lo:hi][:, texts], t[texts] - lo, ks=ks,
                                sim_t2i=None if sim_t2i is None else st[lo:hi][:, texts].T))
    return {k: float(np.mean([r[k] for r in results])) for k in results[0]}


def _list_ranks(index: Tensor, score: Tensor, positive: Tensor, num_cols: int) -> Tensor:
    """Tie-pessimistic 1-based rank of each row's best positive in its top list, ``inf`` when not provable.

    A positive tied with the list's last score may have unseen ties outside a
    truncated list, so its rank is unknown and counted as beyond the list.
    """
    pos_score = torch.where(positive, score.double(), torch.full_like(score, float("-inf"), dtype=torch.float64))
    best = pos_score.max(dim=1).values
    rank = (score.double() >= best[:, None]).sum(dim=1).double()
    truncated = index.shape[1] < num_cols
    unknown = torch.isinf(best) | (truncated & (best <= score[:, -1].double()))
    return torch.where(unknown, torch.full_like(rank, float("inf")), rank)


def check_list_cutoffs(source, ks: Iterable[int] = (1, 5, 10)) -> Tuple[int, ...]:
    """The cut-offs as a tuple, checked against the depth of neighbour lists before they are evaluated.

    A truncated list proves ranks up to its depth minus one (its last entry may
    tie with items it does not hold), so R@10 needs lists 11 deep.

    Raises:
        ValueError: a cut-off below 1, or deeper than the ``i2t`` or ``t2i`` lists prove.
    """
    ks = tuple(int(k) for k in ks)
    i_depth, t_depth = source.lists("i2t")[0].shape[1], source.lists("t2i")[0].shape[1]
    depth = min(i_depth - (i_depth < source.num_texts), t_depth - (t_depth < source.num_images))
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: cut-offs must be positive, got {ks}")
    if max(ks) > depth:
        raise ValueError(f"lists: of depth {i_depth} (i2t) and {t_depth} (t2i) prove ranks up to {depth}, but "
                         f"R@{max(ks)} needs depth {max(ks) + 1}; rebuild them with `pillargraph neighbors "
                         f"--k {max(ks) + 1}` or more")
    return ks


def evaluate_lists(source, ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    """Recall@K and rSum from top-k neighbour lists (no dense matrix needed).

    Each direction reads its own lists: ``i2t`` lists rank the captions of each
    image, ``t2i`` lists the images of each caption, so a re-ranked
    :class:`~pillargraph.data.NeighborLists` is evaluated exactly like a dense
    result whose two directions were re-scored separately. Ranks follow
    :func:`evaluate` (1-based, ties against the query); a positive beyond a list,
    or tied with its last stored score, is a miss. Median and mean ranks need
    every rank, hence a dense matrix, and are not returned.

    Args:
        source: a :class:`~pillargraph.data.NeighborLists` (anything with
            ``lists(kind)``, ``txt2img``, ``num_images`` and ``num_texts``).
        ks: cut-offs, each below the depth of both cross-modal lists (e.g. lists of
            depth 11 or more for R@10).

    Raises:
        ValueError: a cut-off deeper than the stored lists.
    """
    ks = check_list_cutoffs(source, ks)
    t = source.txt2img.long()
    i_idx, i_score = source.lists("i2t")
    t_idx, t_score = source.lists("t2i")
    rows = torch.arange(i_idx.shape[0], device=i_idx.device)[:, None]
    ranks = {"i2t": _list_ranks(i_idx, i_score, t.to(i_idx.device)[i_idx] == rows, source.num_texts),
             "t2i": _list_ranks(t_idx, t_score, t_idx == t.to(t_idx.device)[:, None], source.num_images)}
    out = {f"{d}_r{k}": recall_at_k(ranks[d], k) for d in ("i2t", "t2i") for k in ks}
    out["rsum"] = sum(out.values())
    return out


# ===================================================== multi-positive metrics (ECCV Caption, CxC, ...)
#: Keys of :func:`evaluate_positives`'s result for the default ``ks=(1, 5, 10)`` (all in percent).
MULTI_POSITIVE_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
                       "map_at_r_i2t", "map_at_r_t2i", "rprecision_i2t", "rprecision_t2i")

#: Keys of a positives ``.npz`` file (:meth:`Positives.save`); the first four are required.
#: ``i2t_rows[k]`` (an image) has ``i2t_cols[k]`` (a caption) as a positive; ``t2i_cols[k]`` (a
#: caption) has ``t2i_rows[k]`` (an image) as a positive. ``shape`` is ``[N, M]``;
#: ``i2t_unreachable`` (``[N]``) and ``t2i_unreachable`` (``[M]``) count positives outside the gallery.
POSITIVES_NPZ_KEYS = ("i2t_rows", "i2t_cols", "t2i_rows", "t2i_cols", "shape",
                      "i2t_unreachable", "t2i_unreachable")

RelevanceLike = Union[ArrayLike, "scipy.sparse.spmatrix", Tuple[ArrayLike, ArrayLike]]
ScoresLike = Union[ArrayLike, SimilarityBundle, Mapping[str, ArrayLike]]


# ------------------------------------------------------------------ relevance input
def _index(value: Any, name: str) -> Tensor:
    t = value if isinstance(value, Tensor) else as_tensor(value, name)
    if t.dim() != 1:
        raise ValueError(f"{name}: expected a 1-D index array, got shape {tuple(t.shape)}")
    if t.numel() and (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool):
        raise ValueError(f"{name}: expected an integer dtype, got {t.dtype}")
    return t.long().cpu()


def _nonzero_pairs(value: Any, name: str) -> Tuple[Tensor, Tensor, Optional[Tuple[int, int]]]:
    """``(rows, cols, matrix shape or None)`` of a relevance given in any accepted form."""
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ValueError(f"{name}: index pairs are a tuple (rows, cols), got {len(value)} items")
        rows, cols = _index(value[0], f"{name} rows"), _index(value[1], f"{name} cols")
        if rows.numel() != cols.numel():
            raise ValueError(f"{name}: {rows.numel()} rows but {cols.numel()} cols")
        return rows, cols, None
    if scipy.sparse.issparse(value):
        coo = scipy.sparse.coo_matrix(value)
        keep = coo.data != 0
        return (torch.from_numpy(coo.row[keep].astype(np.int64)),
                torch.from_numpy(coo.col[keep].astype(np.int64)), tuple(coo.shape))
    t = value if isinstance(value, Tensor) else as_tensor(value, name)
    if t.layout != torch.strided:
        t = t.to_sparse_coo().coalesce() if t.layout != torch.sparse_coo else t.coalesce()
        keep = t.values() != 0
        return t.indices()[0][keep].cpu(), t.indices()[1][keep].cpu(), tuple(t.shape)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected an [N, M] relevance matrix, sparse matrix or a tuple "
                         f"(rows, cols), got shape {tuple(t.shape)}")
    if t.is_floating_point() and bool(torch.isnan(t).any()):
        raise ValueError(f"{name}: contains NaN")
    nz = (t != 0).nonzero().cpu()
    return nz[:, 0], nz[:, 1], tuple(t.shape)


def _sorted_pairs(rows: Tensor, cols: Tensor, shape: Tuple[int, int], by_col: bool, name: str) -> Tensor:
    """Deduplicated ``[2, P]`` (image, caption) pairs, sorted by query then positive."""
    n, m = shape
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"{name}: image indices must lie in [0, {n})")
    if cols.numel() and (int(cols.min()) < 0 or int(cols.max()) >= m):
        raise ValueError(f"{name}: caption indices must lie in [0, {m})")
    key = torch.unique(cols * n + rows if by_col else rows * m + cols)
    return torch.stack([key % n, key // n]) if by_col else torch.stack([key // m, key % m])


def _counts(value: Any, size: int, name: str) -> Tensor:
    if value is None:
        return torch.zeros(size, dtype=torch.long)
    t = _index(value, name)
    if t.numel() != size:
        raise ValueError(f"{name}: expected shape ({size},), got ({t.numel()},)")
    if t.numel() and int(t.min()) < 0:
        raise ValueError(f"{name}: counts must be non-negative")
    return t


@dataclass(frozen=True, eq=False)
class Positives:
    r"""The relevant image-caption pairs of each retrieval direction.

    Both directions are given as an image x caption relevance (rows images, columns captions,
    like ``sim_i2t``): for ``i2t`` row :math:`i` lists the captions that are positives of image
    query :math:`i`; for ``t2i`` column :math:`j` lists the images that are positives of caption
    query :math:`j`. ECCV Caption annotates the two directions separately, so they may differ.

    Args:
        i2t: relevance of the image queries, as a scipy or torch sparse matrix, a dense
            :obj:`[N, M]` array or tensor (non-zero means relevant), or a tuple
            ``(image_indices, caption_indices)`` of index arrays.
        t2i (optional): relevance of the caption queries, in the same forms
            (default: ``i2t``).
        shape (tuple of int, optional): ``(N, M)``; required when both relevances are index
            pairs, else taken from the matrices (which must agree).
        i2t_unreachable (optional): :obj:`[N]` int, positives of each image query that are
            not in the gallery: they count in :math:`R` but are never retrieved (default: none).
        t2i_unreachable (optional): :obj:`[M]` int, the same for caption queries.

    After construction ``i2t`` and ``t2i`` are :obj:`[2, P]` long tensors of (image, caption)
    pairs without duplicates (``i2t`` sorted by image, ``t2i`` by caption), and the
    ``*_unreachable`` fields long tensors. Invalid input raises :class:`ValueError`.
    """

    i2t: Any
    t2i: Any = None
    shape: Optional[Tuple[int, int]] = None
    i2t_unreachable: Any = None
    t2i_unreachable: Any = None

    def __post_init__(self) -> None:
        parsed = {"i2t": _nonzero_pairs(self.i2t, "i2t")}
        parsed["t2i"] = parsed["i2t"] if self.t2i is None else _nonzero_pairs(self.t2i, "t2i")
        shape = self._resolve_shape(parsed)
        for d in DIRECTIONS:
            rows, cols, _ = parsed[d]
            object.__setattr__(self, d, _sorted_pairs(rows, cols, shape, d == "t2i", d))
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "i2t_unreachable", _counts(self.i2t_unreachable, shape[0], "i2t_unreachable"))
        object.__setattr__(self, "t2i_unreachable", _counts(self.t2i_unreachable, shape[1], "t2i_unreachable"))

    def _resolve_shape(self, parsed: Dict[str, tuple]) -> Tuple[int, int]:
        shape = None if self.shape is None else tuple(int(x) for x in self.shape)
        if shape is not None and (len(shape) != 2 or min(shape) < 1):
            raise ValueError(f"shape: expected (N, M) with N, M >= 1, got {self.shape}")
        for d in DIRECTIONS:
            got = parsed[d][2]
            if got is None:
                continue
            if shape is not None and got != shape:
                raise ValueError(f"{d}: relevance of shape {got} does not match shape {shape}")
            shape = got
        if shape is None:
            raise ValueError("shape: required (N, M) when the positives are index pairs")
        return shape

    # ---------------------------------------------------------------- constructors
    @classmethod
    def from_txt2img(cls, txt2img: ArrayLike, num_images: Optional[int] = None) -> "Positives":
        """The single-label ground truth of a bundle (caption :math:`j` and image ``txt2img[j]``).

        With these positives :func:`evaluate_positives`'s R@K equals :func:`pillargraph.evaluate`'s.
        """
        t = _index(txt2img, "txt2img")
        if t.numel() == 0:
            raise ValueError("txt2img: empty")
        n = int(t.max()) + 1 if num_images is None else int(num_images)
        pairs = (t, torch.arange(t.numel()))
        return cls(pairs, pairs, shape=(n, t.numel()))

    # -------------------------------------------------------------------- queries
    def pairs(self, direction: str) -> Tensor:
        """:obj:`[2, P]` (image, caption) pairs of ``direction``."""
        return getattr(self, check_direction(direction))

    def num_positives(self, direction: str) -> Tensor:
        """Per query of ``direction``, its :math:`R`: positives in the gallery plus unreachable ones."""
        pairs, size = self.pairs(direction), self.shape[0 if direction == "i2t" else 1]
        query = pairs[0] if direction == "i2t" else pairs[1]
        return torch.bincount(query, minlength=size) + getattr(self, f"{direction}_unreachable")

    def num_queries(self, direction: str) -> int:
        """Queries of ``direction`` that have a positive (the ones that are evaluated)."""
        return int((self.num_positives(direction) > 0).sum())

    # ------------------------------------------------------------------------ I/O
    def save(self, path: Union[str, os.PathLike]) -> os.PathLike:
        """Write the ``.npz`` format of :data:`POSITIVES_NPZ_KEYS` (uncompressed, atomically)."""
        arrays = {"i2t_rows": self.i2t[0], "i2t_cols": self.i2t[1], "t2i_rows": self.t2i[0],
                  "t2i_cols": self.t2i[1], "shape": torch.tensor(self.shape),
                  "i2t_unreachable": self.i2t_unreachable, "t2i_unreachable": self.t2i_unreachable}
        arrays = {k: v.numpy() for k, v in arrays.items()}
        return atomic_write(path, lambda fh: np.savez(fh, **arrays))

    @classmethod
    def load(cls, path: Union[str, os.PathLike], shape: Optional[Tuple[int, int]] = None) -> "Positives":
        """Read a positives ``.npz`` (see :data:`POSITIVES_NPZ_KEYS`).

        Args:
            path: the file.
            shape: the ``(N, M)`` of the scores it will evaluate; required when the file has
                no ``shape`` key, and checked against it when it has.

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: unknown or missing keys, or invalid contents.
        """
        arrays = read_npz(path, "positives", POSITIVES_NPZ_KEYS, required=POSITIVES_NPZ_KEYS[:4])
        stored = arrays.get("shape")
        if stored is not None:
            stored = tuple(int(x) for x in np.asarray(stored).ravel())
            if shape is not None and stored != tuple(shape):
                raise ValueError(f"{path}: positives of shape {stored} do not match the scores' {tuple(shape)}")
        try:
            return cls((arrays["i2t_rows"], arrays["i2t_cols"]), (arrays["t2i_rows"], arrays["t2i_cols"]),
                       shape=stored or shape, i2t_unreachable=arrays.get("i2t_unreachable"),
                       t2i_unreachable=arrays.get("t2i_unreachable"))
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    def __repr__(self) -> str:
        return (f"Positives(shape={self.shape}, i2t={self.i2t.shape[1]} pairs over "
                f"{self.num_queries('i2t')} queries, t2i={self.t2i.shape[1]} pairs over "
                f"{self.num_queries('t2i')} queries)")


# ------------------------------------------------------------------------ metrics
def _matrix(value: ArrayLike, name: str) -> Tensor:
    s = value if isinstance(value, Tensor) else as_tensor(value, name)
    if s.dim() != 2:
        raise ValueError(f"{name}: expected shape (N x M), got {tuple(s.shape)}")
    if not s.is_floating_point():
        s = s.double()
    if not bool(torch.isfinite(s.sum())) and bool(torch.isnan(s).any()):
        raise ValueError(f"{name}: contains NaN")
    return s


def score_matrices(scores: ScoresLike) -> Dict[str, Tensor]:
    """One score matrix per direction, ``{'i2t': [N, M], 't2i': [N, M]}``, from a matrix, a bundle or
    ``{'i2t': .., 't2i': ..}`` (what :func:`evaluate_positives` and :func:`positive_ranks` accept).

    Both are laid out like ``sim_i2t`` (images x captions); a single matrix serves both directions.

    A bundle's t2i rankings come from :attr:`~pillargraph.SimilarityBundle.t2i_scores` (its own
    ``sim_t2i`` when it stores one, as a re-ranked result does), laid out like ``sim_i2t``.
    """
    if isinstance(scores, SimilarityBundle):
        scores = {"i2t": scores.sim_i2t, "t2i": scores.t2i_scores.T}
    if isinstance(scores, Mapping):
        if sorted(scores) != sorted(DIRECTIONS):
            raise ValueError(f"scores: expected the keys {list(DIRECTIONS)}, got {sorted(scores)}")
        out = {d: _matrix(scores[d], f"scores[{d!r}]") for d in DIRECTIONS}
        if out["i2t"].shape != out["t2i"].shape:
            raise ValueError(f"scores: 'i2t' is {tuple(out['i2t'].shape)} but 't2i' is "
                             f"{tuple(out['t2i'].shape)}")
        return out
    s = _matrix(scores, "scores")
    return {d: s for d in DIRECTIONS}


def _exact_ranks(s: Tensor, query: Tensor, thr: Tensor, i2t: bool) -> Tensor:
    """Each positive's count of gallery items scoring >= it: its query's row (i2t) or column
    (t2i), gathered in blocks and compared with its own score."""
    step = max(1, _CHUNK_ELEMENTS // max(s.shape[1] if i2t else s.shape[0], 1))
    parts = [_count_ge_per_row(s[query[lo:lo + step]], thr[lo:lo + step]) if i2t else
             _count_ge_per_col(s[:, query[lo:lo + step]], thr[lo:lo + step])
             for lo in range(0, query.numel(), step)]
    return torch.cat(parts).to(s.device)


def _capped_row_ranks(s: Tensor, query: Tensor, thr: Tensor, max_rank: int) -> Tensor:
    """:func:`_exact_ranks` for image queries, up to ``max_rank``; larger ranks come out as
    ``max_rank + 1``. Only each query's top ``max_rank + 1`` scores are compared (a row top-k is
    several times cheaper than comparing a whole row per positive)."""
    rows, inv = torch.unique(query, return_inverse=True)
    step = max(1, _CHUNK_ELEMENTS // max(s.shape[1], 1))
    top = torch.cat([s[rows[lo:lo + step]].topk(max_rank + 1, dim=1).values
                     for lo in range(0, rows.numel(), step)])
    # all items >= the positive are in the top list unless the whole list is >= it
    return (top[inv] >= thr[:, None]).sum(1)


def _ranks(s: Tensor, positives: Positives, direction: str,
           max_rank: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    img, cap = positives.pairs(direction).to(s.device)
    i2t = direction == "i2t"
    query, size = (img, s.shape[1]) if i2t else (cap, s.shape[0])
    if query.numel() == 0:
        return query, torch.zeros(0, dtype=torch.long, device=s.device)
    thr = s[img, cap]
    if i2t and max_rank is not None and max_rank + 1 < size:
        rank = _capped_row_ranks(s, query, thr, max_rank)
    else:
        rank = _exact_ranks(s, query, thr, i2t)
        if max_rank is not None:
            rank = rank.clamp_max(max_rank + 1)
    order = torch.argsort(query * (size + 1) + rank)
    return query[order], rank[order]


def positive_ranks(scores: ScoresLike, positives: Positives, direction: str,
                   max_rank: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """The tie-pessimistic 1-based rank of every positive in the gallery.

    Args:
        scores: :obj:`[N, M]` image-to-text scores, a :class:`~pillargraph.SimilarityBundle`
            (t2i from its :attr:`~pillargraph.SimilarityBundle.t2i_scores`), or
            ``{'i2t': [N, M], 't2i': [N, M]}`` (one matrix per direction).
        positives: the relevant pairs.
        direction: ``'i2t'`` (image queries rank the captions of their row) or ``'t2i'``
            (caption queries rank the images of their column).
        max_rank (int, optional): ranks above it are returned as ``max_rank + 1``, which lets
            image queries look at their top ``max_rank + 1`` scores only (default: exact ranks).

    Returns:
        ``(query, rank)``, both :obj:`[P]` long, sorted by query and then rank; ``rank`` is the
        number of gallery items scoring at least as high as the positive, itself included.
    """
    s = score_matrices(scores)[check_direction(direction)]
    _check_shape(s, positives)
    if max_rank is not None and int(max_rank) < 1:
        raise ValueError(f"max_rank: expected a positive int, got {max_rank}")
    return _ranks(s, positives, direction, None if max_rank is None else int(max_rank))


def _check_shape(s: Tensor, positives: Positives) -> None:
    if tuple(s.shape) != tuple(positives.shape):
        raise ValueError(f"positives: of shape {positives.shape}, but the scores are {tuple(s.shape)}")


def _direction_metrics(query: Tensor, rank: Tensor, num_pos: Tensor, ks: Tuple[int, ...],
                       direction: str) -> Dict[str, float]:
    """R@K, R-Precision and mAP@R (percent) from the sorted ``(query, rank)`` of the positives."""
    num_pos = num_pos.to(rank.device)
    evaluated = num_pos > 0
    if not bool(evaluated.any()):
        raise ValueError(f"positives: no {direction} query has a positive")
    key = query * (int(rank.max()) + 1 if rank.numel() else 1) + rank  # sorted, as (query, rank) is
    counts = torch.bincount(query, minlength=num_pos.numel())
    start = (torch.cumsum(counts, 0) - counts)[query]
    # positives ranked at or above each positive (tied positives all count)
    upto = torch.searchsorted(key, key, right=True) - start
    within = rank <= num_pos[query]
    r = num_pos.double().clamp_min(1)
    zeros = torch.zeros(num_pos.numel(), dtype=torch.float64, device=rank.device)
    ap = zeros.index_add(0, query, torch.where(within, upto.double() / rank.double(), 0.0)) / r
    rp = zeros.index_add(0, query, within.double()) / r
    best = torch.full_like(num_pos, torch.iinfo(torch.long).max).scatter_reduce(0, query, rank, "amin")
    out = {f"{direction}_r{k}": 100.0 * float((best[evaluated] <= k).double().mean()) for k in ks}
    out[f"map_at_r_{direction}"] = 100.0 * float(ap[evaluated].mean())
    out[f"rprecision_{direction}"] = 100.0 * float(rp[evaluated].mean())
    return out


def evaluate_positives(scores: ScoresLike, positives: Positives,
                       ks: Iterable[int] = (1, 5, 10)) -> Dict[str, float]:
    r"""R@K with any positive, R-Precision and mAP@R in both directions.

    Args:
        scores: :obj:`[N, M]` image-to-text scores, a :class:`~pillargraph.SimilarityBundle`
            (i2t from its ``sim_i2t``, t2i from its
            :attr:`~pillargraph.SimilarityBundle.t2i_scores`, i.e. its own ``sim_t2i`` when
            stored), or ``{'i2t': [N, M], 't2i': [N, M]}``: one matrix per direction (rows
            images; i2t ranks along rows, t2i along columns), e.g. a re-ranker's output.
        positives: the relevant pairs of each direction (:class:`Positives`).
        ks: cut-offs for R@K (default: ``(1, 5, 10)``).

    Returns:
        A dict with ``i2t_r{k}``, ``t2i_r{k}``, ``map_at_r_i2t``, ``map_at_r_t2i``,
        ``rprecision_i2t`` and ``rprecision_t2i``, in percent, each averaged over the queries
        of its direction that have a positive (:meth:`Positives.num_queries`).

    Raises:
        ValueError: bad scores or cut-offs, a shape mismatch, or a direction without any
            positive.
    """
    if not isinstance(positives, Positives):
        raise ValueError(f"positives: expected a Positives, got {type(positives).__name__}")
    ks = tuple(int(k) for k in ks)
    if not ks or min(ks) < 1:
        raise ValueError(f"ks: expected positive cut-offs, got {ks}")
    mats = score_matrices(scores)
    res: Dict[str, Dict[str, float]] = {}
    for d in DIRECTIONS:
        _check_shape(mats[d], positives)
        num_pos = positives.num_positives(d)
        # no metric looks past rank max(R, K): R-P and mAP@R stop at R, R@K at K
        max_rank = max(int(num_pos.max()), max(ks))
        query, rank = _ranks(mats[d], positives, d, max_rank)
        res[d] = _direction_metrics(query, rank, num_pos, ks, d)
    out = {f"{d}_r{k}": res[d][f"{d}_r{k}"] for d in DIRECTIONS for k in ks}
    for name in ("map_at_r", "rprecision"):
        out.update({f"{name}_{d}": res[d][f"{name}_{d}"] for d in DIRECTIONS})
    return out
