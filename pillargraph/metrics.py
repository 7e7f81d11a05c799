r"""Retrieval metrics: Recall@K, median and mean rank, rSum, and the MS-COCO 1K fold protocol.

Ranks are 1-based and ties count against the query: the rank of a positive is
one plus the number of gallery items, other than itself, that score greater
than or equal to it. A constant score matrix therefore never earns recall.
Image-to-text retrieval uses the best-ranked caption of the image.

Everything is vectorised and chunked: a 5000 x 25000 matrix evaluates in
seconds. Inputs may be numpy arrays or torch tensors on any device.

Extra positives per query (ECCV Caption, CxC, or any other source) are evaluated by
:func:`evaluate_positives` (R@K with any positive, R-Precision, mAP@R), defined in
:mod:`pillargraph.multi_positive` and re-exported here.
"""
from __future__ import annotations

from typing import Dict, Iterable, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .bundle import ArrayLike, SimilarityBundle

__all__ = ["evaluate", "evaluate_folds", "evaluate_lists", "check_list_cutoffs", "i2t_ranks", "t2i_ranks", "recall_at_k",
           "rank_summary", "join_summaries",
           "METRIC_KEYS", "Positives", "evaluate_positives", "positive_ranks", "MULTI_POSITIVE_KEYS"]

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


# Multi-positive metrics (ECCV Caption, CxC, any extra positives) live in their own module;
# imported last because that module uses the rank counts above.
from .multi_positive import (MULTI_POSITIVE_KEYS, Positives, evaluate_positives,  # noqa: E402
                             positive_ranks)
