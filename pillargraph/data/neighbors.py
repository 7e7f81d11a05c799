r"""Top-k neighbour lists: similarity sources for galleries too large for dense matrices.

MS-COCO train has 113K images and 566K captions; its dense ``sim_t2t`` alone
would take more than a terabyte. The pillar and graph builders only need each
row's top neighbours and the similarities of a few pairs, so this module
computes the top-``k`` columns of every row in blocks of rows
(:func:`topk_neighbors` from embeddings, :func:`topk_from_matrix` from a dense
or memory-mapped matrix) and stores them as :class:`NeighborLists`, a
:class:`~pillargraph.data.source.SimilaritySource`.

Peak memory is :math:`O(R \cdot k + \text{chunk} \cdot G)` for ``R`` query rows
and a gallery of ``G`` items. Ties are broken deterministically towards the
lower column index (with the ``torch`` backend), so results are reproducible
and equal a stable descending sort of the dense matrix.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import torch
import torch.nn.functional as F
from torch import Tensor

from ..bundle import SimilarityBundle, as_tensor, check_txt2img
from ..io import atomic_write, read_npz
from .partition import episode_texts
from .source import KINDS, check_kind

__all__ = ["topk_neighbors", "topk_from_matrix", "faiss_available", "NeighborLists", "BACKENDS", "chunk_rows",
           "FAISS_BLOCK_ROWS", "resolve_backend", "check_embeddings", "SIMILARITIES", "check_similarity"]

#: Values of the ``backend`` argument of :func:`topk_neighbors`.
BACKENDS = ("auto", "torch", "faiss")
#: How :func:`topk_neighbors` scores two rows: ``"cosine"`` (both sides L2-normalised) or ``"dot"``
#: (the plain inner product, e.g. a BM25 query row against a BM25 document row).
SIMILARITIES = ("cosine", "dot")

# Elements per similarity block when no chunk size is given: 128 MiB of float32.
_CHUNK_ELEMENTS = 1 << 25
#: Fewest query rows per FAISS search call by default (see :func:`chunk_rows`).
FAISS_BLOCK_ROWS = 4096
# Pairs per block in NeighborLists.gather (bounds the [pairs, d] temporaries).
_GATHER_CHUNK = 1 << 16


def _is_outer(rows: Tensor, cols: Tensor) -> bool:
    """Whether ``rows [..., X, 1]`` and ``cols [..., 1, Y]`` ask for every (row, column) pair of each batch item."""
    return rows.dim() >= 2 and rows.dim() == cols.dim() and rows.shape[-1] == 1 and cols.shape[-2] == 1


def _outer_dots(a: Tensor, b: Tensor, rows: Tensor, cols: Tensor, shape: torch.Size) -> Tensor:
    """``a[rows] . b[cols]`` for outer-product index shapes (see :func:`_is_outer`) as batched matrix
    products: each batch item gathers its X + Y embeddings once instead of X * Y pairs of them."""
    lead = shape[:-2]
    r = rows.expand(*lead, shape[-2], 1).reshape(-1, shape[-2])
    c = cols.expand(*lead, 1, shape[-1]).reshape(-1, shape[-1])
    out = torch.empty(r.shape[0], shape[-2], shape[-1], dtype=a.dtype, device=a.device)
    step = max(1, _GATHER_CHUNK // max(1, shape[-2] + shape[-1]))
    for s in range(0, r.shape[0], step):
        torch.bmm(a[r[s:s + step]], b[c[s:s + step]].transpose(1, 2), out=out[s:s + step])
    return out.view(shape)

Device = Union[str, torch.device, None]


# ----------------------------------------------------------------------------- helpers
def _import_faiss():
    try:
        import faiss  # noqa: F401
    except ImportError:
        return None
    return faiss


def faiss_available() -> bool:
    """Whether the optional ``faiss`` package (``pip install 'pillargraph[faiss]'``) is installed."""
    return _import_faiss() is not None


def _float_matrix(value: Any, name: str) -> Tensor:
    t = as_tensor(value, name)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected a 2-D matrix, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a float dtype, got {t.dtype}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: empty matrix of shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name}: contains {int((~torch.isfinite(t)).sum())} non-finite value(s)")
    return t


def _embedding_side(value: Any, name: str) -> Any:
    """A dense float tensor, or a validated scipy sparse matrix passed through."""
    if scipy.sparse.issparse(value):
        _check_sparse_side(value, name)
        return value
    return _float_matrix(value, name)


def check_embeddings(img_emb: Any, txt_emb: Any, txt2img: Any, img_intra_emb: Any = None,
                     txt_intra_emb: Any = None) -> Dict[str, Any]:
    """The inputs of a neighbour search, checked whole before any search starts.

    :meth:`NeighborLists.from_embeddings` and every shard of
    :func:`~pillargraph.data.list_shards.neighbor_shard` check the same things,
    so a shard refuses exactly what the unsharded search refuses, whichever
    rows it holds.

    Returns:
        ``{'img_emb', 'txt_emb', 'txt2img', 'img_intra_emb', 'txt_intra_emb'}``:
        dense float tensors (or scipy sparse matrices, passed through), the
        ``txt2img`` index as a long tensor, ``None`` for an intra side not given.

    Raises:
        ValueError: a side that is not a non-empty 2-D float matrix of finite
            values, cross-modal sides of different dimensions, intra sides with
            other row counts, or a ``txt2img`` that is not one image per caption
            (see :func:`~pillargraph.bundle.check_txt2img`).
    """
    img, txt = _embedding_side(img_emb, "img_emb"), _embedding_side(txt_emb, "txt_emb")
    if img.shape[1] != txt.shape[1]:
        raise ValueError(f"txt_emb: dimension {txt.shape[1]} differs from img_emb's {img.shape[1]}")
    out = {"img_emb": img, "txt_emb": txt, "txt2img": check_txt2img(txt2img, img.shape[0], txt.shape[0])}
    for name, value, ref in (("img_intra_emb", img_intra_emb, img), ("txt_intra_emb", txt_intra_emb, txt)):
        side = None if value is None else _embedding_side(value, name)
        if side is not None and side.shape[0] != ref.shape[0]:
            raise ValueError(f"{name}: expected {ref.shape[0]} rows like {name[:3]}_emb, got {side.shape[0]}")
        out[name] = side
    return out


def chunk_rows(chunk_size: Optional[int], num_cols: int, backend: str = "torch") -> int:
    """Query rows per similarity block against a gallery of ``num_cols`` items.

    The blocks :func:`topk_neighbors` and :func:`topk_from_matrix` search: ``chunk_size``
    when given, otherwise as many rows as keep one block at :math:`2^{25}` scores. For the
    resolved ``'faiss'`` backend the default is at least :data:`FAISS_BLOCK_ROWS` rows: FAISS
    bounds its own temporaries, and its exact search runs several times slower per row on
    smaller query batches (6.6x at 59 rows against 2,048, a 566,435-item gallery, one thread).

    Raises:
        ValueError: ``chunk_size`` is not positive.
    """
    if chunk_size is None:
        rows = max(1, _CHUNK_ELEMENTS // max(num_cols, 1))
        return max(rows, FAISS_BLOCK_ROWS) if backend == "faiss" else rows
    if int(chunk_size) < 1:
        raise ValueError(f"chunk_size: must be a positive number of rows, got {chunk_size}")
    return int(chunk_size)


def _check_k(k: int, limit: int, what: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise ValueError(f"k: expected an int, got {type(k).__name__}")
    if not 1 <= k <= limit:
        raise ValueError(f"k: {k} neighbours asked for, but {what} has {limit} candidate(s) per row")
    return int(k)


def _order(index: Tensor, score: Tensor) -> Tuple[Tensor, Tensor]:
    """Sort each row by decreasing score, equal scores by increasing column index."""
    index, perm = torch.sort(index, dim=1)
    score = score.gather(1, perm)
    score, perm = torch.sort(score, dim=1, descending=True, stable=True)
    return index.gather(1, perm), score


def _select_topk(sim: Tensor, k: int) -> Tuple[Tensor, Tensor]:
    """Top-``k`` columns of each row of a block, ties broken towards the lower column index."""
    extra = int(k < sim.shape[1])
    score, index = torch.topk(sim, k + extra, dim=1)
    # torch.topk chooses arbitrarily among columns tied with the k-th score, which happens
    # exactly where the (k+1)-th score equals the k-th; those rows (rare on continuous
    # scores) are redone with a stable full sort.
    if extra:
        crowded = (score[:, k] == score[:, k - 1]).nonzero().flatten()
        score, index = score[:, :k], index[:, :k]
    else:  # k covers the whole row: nothing to choose
        crowded = torch.empty(0, dtype=torch.long, device=sim.device)
    if crowded.numel():
        s, i = torch.sort(sim[crowded], dim=1, descending=True, stable=True)
        score[crowded], index[crowded] = s[:, :k], i[:, :k]
    return _order(index, score)


def _progress(total: int, enabled: bool, desc: str):
    """A tqdm bar over ``total`` rows, or None when disabled."""
    if not enabled:
        return None
    from tqdm.auto import tqdm
    return tqdm(total=total, desc=desc, unit="rows", leave=False)


def check_similarity(similarity: str, name: str = "similarity") -> str:
    """``similarity`` when it is one of :data:`SIMILARITIES`.

    Raises:
        ValueError: any other value (the message names ``name`` and the choices).
    """
    if similarity not in SIMILARITIES:
        raise ValueError(f"{name}: expected one of {list(SIMILARITIES)}, got {similarity!r}")
    return similarity


def _unit_rows(x: Any) -> Any:
    """Rows scaled to unit L2 norm (zero rows stay zero); scipy sparse stays sparse (CSR, float32)."""
    if scipy.sparse.issparse(x):
        x = scipy.sparse.csr_matrix(x, dtype=np.float32)
        norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
        return scipy.sparse.diags(1.0 / np.maximum(norm, 1e-12)).astype(np.float32) @ x
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _check_sparse_side(x: Any, name: str) -> None:
    if len(x.shape) != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty 2-D matrix, got shape {tuple(x.shape)}")
    data = x.data if scipy.sparse.issparse(x) else np.asarray(x)
    if not np.issubdtype(data.dtype, np.floating):
        raise ValueError(f"{name}: expected a float dtype, got {data.dtype}")
    if not np.isfinite(data).all():
        raise ValueError(f"{name}: contains {int((~np.isfinite(data)).sum())} non-finite value(s)")


def _sparse_topk(queries: Any, gallery: Any, k: int, chunk_size: Optional[int], exclude_self: bool,
                 device: torch.device, progress: bool, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    r""":func:`topk_neighbors` where either side is a scipy sparse matrix (e.g. raw TF-IDF).

    Each block of query rows is made dense and multiplied with the sparse
    gallery (``G @ q_block^T``), so memory stays :math:`O(\text{chunk} \cdot G)`
    and no dense copy of a sparse side is ever made. Without ``normalize`` the
    scores are plain inner products (in float32).
    """
    if normalize:
        q, g = _unit_rows(queries), _unit_rows(gallery)
    else:
        q, g = (scipy.sparse.csr_matrix(x, dtype=np.float32) if scipy.sparse.issparse(x)
                else np.asarray(x, dtype=np.float32) for x in (queries, gallery))

    def block(a: int, b: int) -> Tensor:
        rows = q[a:b]
        if scipy.sparse.issparse(g):
            dense = rows.toarray() if scipy.sparse.issparse(rows) else rows
            sim = np.asarray(g @ dense.T).T
        else:
            sim = np.asarray(rows @ g.T)
        return torch.from_numpy(np.ascontiguousarray(sim, dtype=np.float32)).to(device)
    return _blockwise_topk(block, q.shape[0], k, chunk_rows(chunk_size, g.shape[0]), exclude_self,
                           device, torch.float32, _progress(q.shape[0], progress, "top-k (sparse)"))


def _blockwise_topk(block: Callable[[int, int], Tensor], rows: int, k: int, step: int, exclude_self: bool,
                    device: torch.device, dtype: torch.dtype, bar: Any) -> Tuple[Tensor, Tensor]:
    """Top-``k`` of each row of the similarity blocks ``block(a, b)`` (rows ``a..b``), row ``i``
    never returning item ``i`` with ``exclude_self``."""
    index = torch.empty(rows, k, dtype=torch.long, device=device)
    score = torch.empty(rows, k, dtype=dtype, device=device)
    for a in range(0, rows, step):
        sim = block(a, min(a + step, rows))
        if exclude_self:
            r = torch.arange(sim.shape[0], device=device)
            sim[r, a + r] = float("-inf")
        index[a:a + step], score[a:a + step] = _select_topk(sim, k)
        if bar is not None:
            bar.update(sim.shape[0])
    if bar is not None:
        bar.close()
    return index, score


def resolve_backend(backend: str, dtype: torch.dtype, device: torch.device) -> str:
    """The backend :func:`topk_neighbors` runs for ``backend`` on inputs of ``dtype`` on ``device``.

    Returns:
        ``'torch'`` or ``'faiss'`` (``'auto'`` is FAISS where it is installed, the
        device is the CPU and the inputs are float32).

    Raises:
        ValueError: an unknown backend, or ``'faiss'`` where it cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend: unknown backend {backend!r}; expected one of {list(BACKENDS)}")
    if backend == "faiss":
        if not faiss_available():
            raise ValueError("backend: 'faiss' needs the optional faiss package "
                             "(pip install 'pillargraph[faiss]', i.e. faiss-cpu); "
                             "use backend='torch' or 'auto'")
        if device.type != "cpu":
            raise ValueError(f"backend: 'faiss' (faiss-cpu) runs on the CPU, but device is {device}; "
                             f"use backend='torch' for {device.type}")
        return "faiss"
    if backend == "auto":
        # FAISS computes in float32: float64 inputs keep their precision with torch.
        if device.type == "cpu" and dtype == torch.float32 and faiss_available():
            return "faiss"
    return "torch"


# ------------------------------------------------------------------------ top-k search
def topk_neighbors(queries: Any, gallery: Any, k: int, *, chunk_size: Optional[int] = None,
                   exclude_self: bool = False, backend: str = "auto",
                   device: Device = None, progress: bool = False,
                   similarity: str = "cosine") -> Tuple[Tensor, Tensor]:
    r"""Top-``k`` gallery items of every query by cosine similarity (or inner product), in chunks.

    Both sides are L2-normalised, so the score is

    .. math::
        s(q, g) = \frac{q^\top g}{\lVert q \rVert \, \lVert g \rVert},

    or, with ``similarity="dot"``, neither side is and :math:`s(q, g) = q^\top g`.

    The similarity block of ``chunk_size`` queries against the whole gallery is
    the only large temporary, so memory is :math:`O(R \cdot k + \text{chunk}
    \cdot G)`. The result equals a stable descending sort of the dense matrix,
    truncated to ``k`` columns: ties are broken towards the lower gallery index
    (``torch`` backend; FAISS breaks ties among the items it returns the same
    way, but may choose differently which of several items tied at the ``k``-th
    score it returns).

    Either side may be a :mod:`scipy.sparse` matrix (e.g. raw TF-IDF); then
    blocks of query rows are multiplied with the sparse side (sparse-dense
    products, never a dense copy of a sparse matrix), in float32 on the CPU,
    and ``backend`` is ignored.

    Args:
        queries (Tensor, ndarray or scipy.sparse matrix): query embeddings :obj:`[R, d]`.
        gallery (Tensor, ndarray or scipy.sparse matrix): gallery embeddings :obj:`[G, d]`.
        k (int): neighbours per query, :obj:`1 <= k <= G` (:obj:`G - 1` with
            ``exclude_self``).
        chunk_size (int, optional): queries per block (default: as many as keep
            one block at :math:`2^{25}` scores, i.e. 128 MiB in float32).
        exclude_self (bool, optional): queries and gallery are the same set and
            query ``i`` must not return gallery item ``i`` (default: :obj:`False`).
        backend (str, optional): ``'torch'`` (matrix products and
            :func:`torch.topk`), ``'faiss'`` (an exact inner-product index,
            :class:`faiss.IndexFlatIP`, float32, CPU) or ``'auto'`` (FAISS when it
            is installed, the device is the CPU and the inputs are float32;
            otherwise torch) (default: ``'auto'``).
        device (torch.device or str, optional): where to compute and return the
            result (default: the device of ``queries``).
        progress (bool, optional): show a progress bar over query rows
            (default: :obj:`False`).
        similarity (str, optional): ``"cosine"`` or ``"dot"`` (see
            :data:`SIMILARITIES`; default: ``"cosine"``).

    Returns:
        ``(index, score)``: :obj:`[R, k]` long gallery indices and their scores,
        each row sorted by decreasing score.

    Raises:
        ValueError: bad shapes, non-finite values, ``k`` out of range, an
            unknown backend or similarity, or ``backend='faiss'`` without FAISS installed.
    """
    normalize = check_similarity(similarity) == "cosine"
    if scipy.sparse.issparse(queries) or scipy.sparse.issparse(gallery):
        _check_sparse_side(queries, "queries")
        _check_sparse_side(gallery, "gallery")
        k = _check_pair(queries.shape, gallery.shape, k, exclude_self)
        return _sparse_topk(queries, gallery, k, chunk_size, exclude_self,
                            torch.device(device or "cpu"), progress, normalize)
    q = _float_matrix(queries, "queries")
    g = _float_matrix(gallery, "gallery")
    k = _check_pair(q.shape, g.shape, k, exclude_self)
    device = torch.device(device) if device is not None else q.device
    dtype = torch.promote_types(q.dtype, g.dtype)
    resolved = resolve_backend(backend, dtype, device)
    step = chunk_rows(chunk_size, g.shape[0], resolved)
    if resolved == "faiss":
        return _faiss_topk(q, g, k, step, exclude_self, progress, normalize)

    return _torch_topk(q, g, k, step, exclude_self, device, dtype, progress, normalize)


def _check_pair(q_shape: Tuple[int, ...], g_shape: Tuple[int, ...], k: int, exclude_self: bool) -> int:
    """Check that queries and gallery match (and ``k``); returns ``k`` as an int."""
    if q_shape[1] != g_shape[1]:
        raise ValueError(f"gallery: dimension {g_shape[1]} differs from the queries' {q_shape[1]}")
    if exclude_self and q_shape[0] != g_shape[0]:
        raise ValueError(f"exclude_self: needs queries and gallery to be the same set, got "
                         f"{q_shape[0]} queries and {g_shape[0]} gallery items")
    return _check_k(k, g_shape[0] - int(exclude_self),
                    "the gallery (without the query itself)" if exclude_self else "the gallery")


def _maybe_unit(x: Tensor, normalize: bool) -> Tensor:
    return F.normalize(x, dim=1) if normalize else x


def _torch_topk(q: Tensor, g: Tensor, k: int, step: int, exclude_self: bool, device: torch.device,
                dtype: torch.dtype, progress: bool, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    """Blocks of ``step`` query rows against the whole gallery, top-``k`` of each."""
    qn = _maybe_unit(q.to(device=device, dtype=dtype), normalize)
    gn_t = _maybe_unit(g.to(device=device, dtype=dtype), normalize).T
    return _blockwise_topk(lambda a, b: qn[a:b] @ gn_t, q.shape[0], k, step, exclude_self, device, dtype,
                           _progress(q.shape[0], progress, "top-k"))


def _faiss_topk(q: Tensor, g: Tensor, k: int, step: int, exclude_self: bool,
                progress: bool = False, normalize: bool = True) -> Tuple[Tensor, Tensor]:
    faiss = _import_faiss()
    qn = _maybe_unit(q.detach().cpu().float(), normalize).numpy()
    gn = np.ascontiguousarray(_maybe_unit(g.detach().cpu().float(), normalize).numpy())
    flat = faiss.IndexFlatIP(gn.shape[1])
    flat.add(gn)
    depth = k + int(exclude_self)
    index = torch.empty(q.shape[0], k, dtype=torch.long)
    score = torch.empty(q.shape[0], k, dtype=torch.float32)
    bar = _progress(q.shape[0], progress, "top-k (faiss)")
    for a in range(0, q.shape[0], step):
        if bar is not None:
            bar.update(min(step, q.shape[0] - a))
        d, i = flat.search(np.ascontiguousarray(qn[a:a + step]), depth)
        d, i = torch.from_numpy(d), torch.from_numpy(i).long()
        if exclude_self:
            rows = torch.arange(i.shape[0])
            is_self = i == (a + rows)[:, None]
            # drop the query itself, or the deepest hit where the query was not returned
            drop = torch.where(is_self.any(dim=1), is_self.int().argmax(dim=1), depth - 1)
            keep = torch.ones_like(is_self)
            keep[rows, drop] = False
            i, d = i[keep].view(-1, k), d[keep].view(-1, k)
        index[a:a + step], score[a:a + step] = _order(i, d)
    if bar is not None:
        bar.close()
    return index, score


def _rows_of(x: Any, rows: Tensor) -> Any:
    """Rows of a dense tensor or of a scipy sparse matrix."""
    return x[rows.cpu().numpy()] if scipy.sparse.issparse(x) else x[rows.to(x.device)]


def _episode_ids(episodes: Sequence[Tensor], num_images: int) -> Tensor:
    """:obj:`[N]` episode of each image from the episodes' image ids (each image in exactly one)."""
    ep = torch.full((num_images,), -1, dtype=torch.long)
    for e, images in enumerate(episodes):
        ep[torch.as_tensor(images, dtype=torch.long).cpu()] = e
    if bool((ep < 0).any()) or sum(int(torch.as_tensor(p).numel()) for p in episodes) != num_images:
        raise ValueError(f"episodes: expected every one of the {num_images} images in exactly one episode")
    return ep


def _episode_topk(q: Any, g: Any, kind: str, depth: int, episodes: Sequence[Tensor], txt2img: Tensor,
                  opts: Dict[str, Any]) -> Tuple[Tensor, Tensor]:
    """Top-``depth`` lists of ``kind`` searched within each episode, as global ids (depth capped at the
    smallest episode's gallery)."""
    parts = [torch.as_tensor(p, dtype=torch.long).cpu() for p in episodes]
    ids = {"i": parts, "t": [episode_texts(txt2img.cpu(), p) for p in parts]}
    rows, cols = ids[kind[0]], ids[kind[2]]
    k = min(depth, min(c.numel() for c in cols))
    index = score = None
    for r, c in zip(rows, cols):
        idx, val = topk_neighbors(_rows_of(q, r), _rows_of(g, c), k, **opts)
        if index is None:
            index = torch.empty(q.shape[0], k, dtype=torch.long, device=idx.device)
            score = torch.empty(q.shape[0], k, dtype=val.dtype, device=val.device)
        index[r.to(idx.device)] = c.to(idx.device)[idx]
        score[r.to(idx.device)] = val
    return index, score


def topk_from_matrix(matrix: Any, k: int, chunk_size: Optional[int] = None, *,
                     exclude_self: bool = False, device: Device = None) -> Tuple[Tensor, Tensor]:
    """Top-``k`` columns of every row of a dense similarity matrix, in chunks of rows.

    Only one block of rows is converted and searched at a time, so ``matrix``
    may be a :class:`numpy.memmap` or a transposed view (``sim_i2t.T`` for
    ``t2i`` lists) without a dense copy. Ties are broken towards the lower column
    index, so the result equals a stable descending sort truncated to ``k``.

    Args:
        matrix (Tensor or ndarray): :obj:`[R, C]` float scores.
        k (int): columns per row, :obj:`1 <= k <= C` (:obj:`C - 1` with ``exclude_self``).
        chunk_size (int, optional): rows per block (default: blocks of about
            :math:`2^{25}` scores).
        exclude_self (bool, optional): the matrix is square and row ``i`` must not
            return column ``i`` (default: :obj:`False`).
        device (torch.device or str, optional): where to compute and return the
            result (default: the matrix's device; the CPU for arrays).

    Returns:
        ``(index, score)``: :obj:`[R, k]` long column indices and their scores,
        each row sorted by decreasing score.
    """
    if not isinstance(matrix, (Tensor, np.ndarray)):
        matrix = as_tensor(matrix, "matrix")
    if len(matrix.shape) != 2 or matrix.shape[0] == 0 or matrix.shape[1] == 0:
        raise ValueError(f"matrix: expected a non-empty 2-D matrix, got shape {tuple(matrix.shape)}")
    is_float = matrix.is_floating_point() if isinstance(matrix, Tensor) else \
        np.issubdtype(matrix.dtype, np.floating)
    if not is_float:
        raise ValueError(f"matrix: expected a float dtype, got {matrix.dtype}")
    rows, cols = matrix.shape
    if exclude_self and rows != cols:
        raise ValueError(f"exclude_self: needs a square matrix, got shape {(rows, cols)}")
    k = _check_k(k, cols - int(exclude_self), "the matrix (without the diagonal)"
                 if exclude_self else "the matrix")
    if device is None:
        device = matrix.device if isinstance(matrix, Tensor) else torch.device("cpu")
    device = torch.device(device)
    step = chunk_rows(chunk_size, cols)
    index = score = None
    for a in range(0, rows, step):
        block = matrix[a:a + step]
        block = (block if isinstance(block, Tensor) else torch.from_numpy(np.array(block)))
        block = block.to(device).contiguous()
        if not bool(torch.isfinite(block).all()):
            raise ValueError(f"matrix: non-finite value(s) in rows {a}..{a + block.shape[0] - 1}")
        if exclude_self:  # out of place: the block may be a view of the caller's matrix
            r = torch.arange(block.shape[0], device=device)
            block = block.index_put((r, a + r), torch.tensor(float("-inf"), dtype=block.dtype,
                                                             device=device))
        i, s = _select_topk(block, k)
        if index is None:
            index = torch.empty(rows, k, dtype=torch.long, device=device)
            score = torch.empty(rows, k, dtype=s.dtype, device=device)
        index[a:a + step], score[a:a + step] = i, s
    return index, score


def _is_symmetric(m: Tensor, step: int) -> bool:
    """Whether a square matrix is symmetric up to rounding, checked a block of rows at a time.

    A cosine matrix from one matrix product is not bit-symmetric, hence the tolerance.
    """
    atol = 16 * torch.finfo(m.dtype).eps * max(1.0, float(m.abs().max()))
    return all(bool(((m[a:a + step] - m[:, a:a + step].T).abs() <= atol).all())
               for a in range(0, m.shape[0], step))


# ---------------------------------------------------------------------- neighbour lists
_INDEX_FIELDS = tuple(f"{kind}_index" for kind in KINDS)
_SCORE_FIELDS = tuple(f"{kind}_score" for kind in KINDS)
_EMB_FIELDS = ("img_emb", "txt_emb", "img_intra_emb", "txt_intra_emb")
_FIELDS = ("txt2img",) + tuple(f for kind in KINDS for f in (f"{kind}_index", f"{kind}_score")) \
    + _EMB_FIELDS + ("symmetric_intra", "image_episode")
_TRANSPOSE = {"i2t": "t2i", "t2i": "i2t", "i2i": "i2i", "t2t": "t2t"}


class NeighborLists:
    r"""Top-``k`` neighbour lists of a split: a :class:`~pillargraph.data.source.SimilaritySource`
    that never holds a dense matrix.

    For each kind (``i2t`` image rows and caption columns, ``t2i``, ``i2i``,
    ``t2t``) it stores the indices and scores of every row's top columns,
    sorted by decreasing score. Build it with :meth:`from_embeddings` (chunked
    or FAISS search) or :meth:`from_bundle` (from dense matrices, chunked), and
    keep it with :meth:`save` / :meth:`load`.

    :meth:`gather` is exact when embeddings are kept. Without them a pair is
    looked up in the stored lists: in the row's list, and for ``i2t`` / ``t2i``
    (and ``i2i`` / ``t2t`` when :attr:`symmetric_intra`) also in the column's list
    of the transposed kind. A pair found in neither is filled with the smallest
    score stored for its row. That fill is an approximation: the true score is at
    most this value (the row's list holds every column above it), so it is the
    tightest value the row's list proves, an upper bound on the truth and the
    lower bound of everything the list stores.

    Args:
        txt2img (Tensor): :obj:`[M]` image index of each caption (each image needs
            at least one caption).
        i2t_index, i2t_score (Tensor): :obj:`[N, k]` caption indices and scores of
            each image's top captions.
        t2i_index, t2i_score (Tensor): :obj:`[M, k]` for each caption's top images.
        i2i_index, i2i_score (Tensor, optional): :obj:`[N, k]` image-image lists.
        t2t_index, t2t_score (Tensor, optional): :obj:`[M, k]` caption-caption lists.
        img_emb, txt_emb (Tensor, optional): :obj:`[N, d]` / :obj:`[M, d]`
            cross-modal embeddings (both or neither), used for exact :meth:`gather`.
        img_intra_emb, txt_intra_emb (Tensor, optional): unimodal embeddings the
            intra lists were computed from; when absent, ``i2i`` / ``t2t`` use
            ``img_emb`` / ``txt_emb``.
        symmetric_intra (bool, optional): the intra-modal similarities are
            symmetric, so ``gather`` may also look ``(a, b)`` up in ``b``'s list
            (default: :obj:`False`).
        image_episode (Tensor, optional): :obj:`[N]` episode of each image, for lists
            searched within episodes (:mod:`pillargraph.data.episodes`; a caption is
            in its image's episode): every list then holds only items of its row's
            episode (default: none, lists over the whole split).

    The depth ``k`` may differ between kinds. Intra lists include the row
    itself when it ranks among its top ``k`` (as dense :func:`torch.topk`
    does), so both sources give the same answers.

    Raises:
        ValueError: naming the field, for wrong shapes or dtypes, indices out of
            range, repeated columns in a row, non-finite scores or scores that are
            not sorted in decreasing order, or a ``txt2img`` that leaves an image
            without captions.
    """

    def __init__(self, txt2img: Any, i2t_index: Any, i2t_score: Any, t2i_index: Any, t2i_score: Any,
                 i2i_index: Any = None, i2i_score: Any = None, t2t_index: Any = None,
                 t2t_score: Any = None, img_emb: Any = None, txt_emb: Any = None,
                 img_intra_emb: Any = None, txt_intra_emb: Any = None,
                 symmetric_intra: bool = False, image_episode: Any = None) -> None:
        n = as_tensor(i2t_index, "i2t_index").shape[0] if i2t_index is not None else 0
        if n == 0:
            raise ValueError("i2t_index: is required and needs one row per image")
        t = check_txt2img(txt2img, n)  # one i2t row per image
        m = t.numel()
        self._txt2img = t
        self._n, self._m = n, m
        given = dict(i2t=(i2t_index, i2t_score), t2i=(t2i_index, t2i_score),
                     i2i=(i2i_index, i2i_score), t2t=(t2t_index, t2t_score))
        self._index: Dict[str, Optional[Tensor]] = {}
        self._score: Dict[str, Optional[Tensor]] = {}
        for kind, (idx, val) in given.items():
            required = kind in ("i2t", "t2i")
            if idx is None and val is None and not required:
                self._index[kind] = self._score[kind] = None
                continue
            for value, field in ((idx, f"{kind}_index"), (val, f"{kind}_score")):
                if value is None:
                    raise ValueError(f"{field}: is required" if required else
                                     f"{field}: missing while its {kind} partner is given")
            self._index[kind], self._score[kind] = self._check_lists(kind, idx, val)
        device = self._index["i2t"].device
        self._emb: Dict[str, Optional[Tensor]] = {}
        embs = dict(img_emb=(img_emb, n), txt_emb=(txt_emb, m), img_intra_emb=(img_intra_emb, n),
                    txt_intra_emb=(txt_intra_emb, m))
        for field, (value, rows) in embs.items():
            self._emb[field] = None if value is None else self._check_emb(field, value, rows)
        if (self._emb["img_emb"] is None) != (self._emb["txt_emb"] is None):
            missing = "txt_emb" if self._emb["txt_emb"] is None else "img_emb"
            raise ValueError(f"{missing}: img_emb and txt_emb must be given together")
        if self._emb["img_emb"] is not None and \
                self._emb["img_emb"].shape[1] != self._emb["txt_emb"].shape[1]:
            raise ValueError(f"txt_emb: dimension {self._emb['txt_emb'].shape[1]} differs from "
                             f"img_emb's {self._emb['img_emb'].shape[1]}")
        for name, value in list(self._emb.items()) + [("txt2img", self._txt2img)]:
            if value is not None and value.device != device:
                raise ValueError(f"{name}: on {value.device}, but the lists are on {device}")
        self.symmetric_intra = bool(symmetric_intra)
        self._episode = None if image_episode is None else self._check_episodes(image_episode)
        self._keys: Dict[str, Tuple[Tensor, Tensor]] = {}
        self._unit: Dict[str, Tensor] = {}

    # ----------------------------------------------------------------- validation
    def _rows_cols(self, kind: str) -> Tuple[int, int]:
        size = {"i": self._n, "t": self._m}
        return size[kind[0]], size[kind[2]]

    def _check_lists(self, kind: str, idx: Any, val: Any) -> Tuple[Tensor, Tensor]:
        rows, cols = self._rows_cols(kind)
        fi, fs = f"{kind}_index", f"{kind}_score"
        idx, val = as_tensor(idx, fi), as_tensor(val, fs)
        if idx.is_floating_point() or idx.is_complex() or idx.dtype == torch.bool:
            raise ValueError(f"{fi}: expected an integer dtype, got {idx.dtype}")
        if idx.dim() != 2 or idx.shape[0] != rows or not 1 <= idx.shape[1] <= cols:
            raise ValueError(f"{fi}: expected shape ({rows} x k) with 1 <= k <= {cols}, "
                             f"got {tuple(idx.shape)}")
        idx = idx.long()
        if int(idx.min()) < 0 or int(idx.max()) >= cols:
            raise ValueError(f"{fi}: values must lie in [0, {cols}), got range "
                             f"[{int(idx.min())}, {int(idx.max())}]")
        if idx.shape[1] > 1:
            srt = torch.sort(idx, dim=1).values
            dup = (srt[:, 1:] == srt[:, :-1]).any(dim=1)
            if bool(dup.any()):
                raise ValueError(f"{fi}: row {int(dup.nonzero()[0])} lists a column more than once")
        if not val.is_floating_point():
            raise ValueError(f"{fs}: expected a float dtype, got {val.dtype}")
        if tuple(val.shape) != tuple(idx.shape):
            raise ValueError(f"{fs}: expected shape {tuple(idx.shape)} like {fi}, got {tuple(val.shape)}")
        if not bool(torch.isfinite(val).all()):
            raise ValueError(f"{fs}: contains {int((~torch.isfinite(val)).sum())} non-finite value(s)")
        unsorted = (val[:, 1:] > val[:, :-1]).any(dim=1)
        if bool(unsorted.any()):
            raise ValueError(f"{fs}: row {int(unsorted.nonzero()[0])} is not sorted by decreasing score")
        if val.device != idx.device:
            raise ValueError(f"{fs}: on {val.device}, but {fi} is on {idx.device}")
        return idx, val

    def _check_episodes(self, value: Any) -> Tensor:
        """``image_episode`` as a long tensor; every stored list must stay inside its row's episode."""
        ep = as_tensor(value, "image_episode")
        if ep.is_floating_point() or ep.is_complex() or ep.dtype == torch.bool or ep.dim() != 1 \
                or ep.numel() != self._n:
            raise ValueError(f"image_episode: expected {self._n} integer episode ids, got {ep.dtype} "
                             f"of shape {tuple(ep.shape)}")
        ep = ep.long().to(self._txt2img.device)
        if int(ep.min()) < 0:
            raise ValueError("image_episode: episode ids must be non-negative")
        of = {"i": ep, "t": ep[self._txt2img]}
        for kind in KINDS:
            if self._index[kind] is not None:
                outside = of[kind[2]][self._index[kind]] != of[kind[0]][:, None]
                if bool(outside.any()):
                    row = int(outside.any(1).nonzero()[0])
                    raise ValueError(f"image_episode: the {kind} list of row {row} holds items of another "
                                     f"episode; episodic lists must be searched within each episode")
        return ep

    @staticmethod
    def _check_emb(field: str, value: Any, rows: int) -> Tensor:
        e = _float_matrix(value, field)
        if e.shape[0] != rows:
            raise ValueError(f"{field}: expected {rows} rows, got {e.shape[0]}")
        return e

    # ------------------------------------------------------------------ protocol
    @property
    def num_images(self) -> int:
        """Number of images ``N``."""
        return self._n

    @property
    def num_texts(self) -> int:
        """Number of captions ``M``."""
        return self._m

    @property
    def txt2img(self) -> Tensor:
        """:obj:`[M]` image index of each caption."""
        return self._txt2img

    @property
    def device(self) -> torch.device:
        """Device of the stored lists."""
        return self._index["i2t"].device

    @property
    def image_episode(self) -> Optional[Tensor]:
        """:obj:`[N]` episode of each image for lists searched within episodes, else None."""
        return self._episode

    @property
    def episode_sizes(self) -> Optional[List[int]]:
        """Images of each episode (in episode-id order) for episodic lists, else None."""
        return None if self._episode is None else torch.bincount(self._episode).tolist()

    def smallest_gallery(self, kind: str) -> int:
        """Columns of ``kind`` a row can rank: the gallery, or for episodic lists the smallest episode's
        (see :func:`~pillargraph.data.source.gallery_size`)."""
        check_kind(kind)
        if self._episode is None:
            return self.num_cols(kind)
        images = torch.bincount(self._episode)
        texts = torch.bincount(self._episode[self._txt2img], minlength=images.numel())
        sizes = images if kind[2] == "i" else texts
        return int(sizes[sizes > 0].min())

    @property
    def has_embeddings(self) -> bool:
        """Whether :meth:`gather` is exact for the cross-modal kinds."""
        return self._emb["img_emb"] is not None

    def has_kind(self, kind: str) -> bool:
        """Whether lists of ``kind`` are stored."""
        return self._index[check_kind(kind)] is not None

    def num_cols(self, kind: str) -> int:
        """Gallery size of ``kind`` (the modality named by its last letter)."""
        return self._rows_cols(check_kind(kind))[1]

    def depth(self, kind: str) -> int:
        """Number of neighbours stored per row for ``kind``."""
        return self.lists(kind)[0].shape[1]

    def lists(self, kind: str) -> Tuple[Tensor, Tensor]:
        """The stored ``(index, score)`` of ``kind``, :obj:`[R, depth]` (not copies)."""
        check_kind(kind)
        if self._index[kind] is None:
            field = f"{kind}_index"
            raise ValueError(f"{field}: these neighbour lists have no {kind} lists; build them with "
                             f"from_embeddings(), or from a bundle that has sim_{kind} "
                             f"(see SimilarityBundle.with_second_order_intra)")
        return self._index[kind], self._score[kind]

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-``k`` columns of each row, sorted by decreasing score (a slice of the stored lists).

        Args:
            kind (str): ``'i2t'``, ``'t2i'``, ``'i2i'`` or ``'t2t'``.
            k (int): neighbours per row, at most :meth:`depth`.
            rows (Tensor, optional): :obj:`[R]` row indices (default: all rows).

        Returns:
            ``(index, score)``, both :obj:`[R, k]`.
        """
        index, score = self.lists(kind)
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= index.shape[1]:
            raise ValueError(f"k: {k} neighbours asked for, but only the top {index.shape[1]} {kind} "
                             f"neighbours are stored (rebuild the lists with a larger k)")
        if rows is None:
            return index[:, :k].clone(), score[:, :k].clone()
        rows = self._check_index(rows, index.shape[0], "rows")
        if rows.dim() != 1:
            raise ValueError(f"rows: expected a 1-D index, got shape {tuple(rows.shape)}")
        return index[rows, :k], score[rows, :k]

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Similarities of (row, column) pairs; ``rows`` and ``cols`` broadcast together.

        Exact cosine similarities when embeddings are kept. Otherwise each pair is
        looked up in the stored lists (also in the transposed kind's lists where the
        similarity is known to be symmetric), and a pair stored nowhere is filled with
        the smallest score stored for its row: an approximation from above of the true
        score, which is at most that value.

        Returns:
            A tensor of the broadcast shape of ``rows`` and ``cols``.
        """
        check_kind(kind)
        nrows, ncols = self._rows_cols(kind)
        rows = self._check_index(rows, nrows, "rows")
        cols = self._check_index(cols, ncols, "cols")
        try:
            shape = torch.broadcast_shapes(rows.shape, cols.shape)
        except RuntimeError:
            raise ValueError(f"cols: shape {tuple(cols.shape)} does not broadcast with rows' "
                             f"{tuple(rows.shape)}") from None
        r = rows.expand(shape).reshape(-1)
        c = cols.expand(shape).reshape(-1)
        emb = self._embeddings(kind)
        if emb is not None:
            if _is_outer(rows, cols):
                return _outer_dots(*emb, rows, cols, shape)
            a, b = emb
            out = torch.empty(r.numel(), dtype=a.dtype, device=a.device)
            for s in range(0, r.numel(), _GATHER_CHUNK):
                out[s:s + _GATHER_CHUNK] = (a[r[s:s + _GATHER_CHUNK]] * b[c[s:s + _GATHER_CHUNK]]).sum(dim=1)
            return out.view(shape)
        index, score = self.lists(kind)
        out = score[r, -1].clone()
        found = self._lookup(kind, r, c, out)
        other = _TRANSPOSE[kind]
        if other != kind or self.symmetric_intra:
            if self._index[other] is not None and not bool(found.all()):
                miss = (~found).nonzero().flatten()
                vals = out[miss]
                self._lookup(other, c[miss], r[miss], vals)
                out[miss] = vals
        return out.view(shape)

    def find(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Whether each (row, column) pair is stored in the row's ``kind`` list; ``rows`` and ``cols``
        broadcast together."""
        check_kind(kind)
        nrows, ncols = self._rows_cols(kind)
        rows, cols = torch.broadcast_tensors(self._check_index(rows, nrows, "rows"),
                                             self._check_index(cols, ncols, "cols"))
        scratch = torch.empty(rows.numel(), dtype=self.lists(kind)[1].dtype, device=self.device)
        return self._lookup(kind, rows.reshape(-1), cols.reshape(-1), scratch).view(rows.shape)

    # ------------------------------------------------------------------- internals
    def _check_index(self, value: Any, size: int, name: str) -> Tensor:
        t = as_tensor(value, name)
        if t.is_floating_point() or t.is_complex() or t.dtype == torch.bool:
            raise ValueError(f"{name}: expected an integer index, got {t.dtype}")
        t = t.to(device=self.device, dtype=torch.long)
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= size):
            raise ValueError(f"{name}: indices must lie in [0, {size}), got range "
                             f"[{int(t.min())}, {int(t.max())}]")
        return t

    def _unit_emb(self, field: str) -> Optional[Tensor]:
        """The L2-normalised embeddings of ``field`` (cached), or None."""
        if self._emb[field] is None:
            return None
        if field not in self._unit:
            self._unit[field] = F.normalize(self._emb[field], dim=1)
        return self._unit[field]

    def _embeddings(self, kind: str) -> Optional[Tuple[Tensor, Tensor]]:
        img, txt = self._unit_emb("img_emb"), self._unit_emb("txt_emb")
        if kind == "i2t":
            return None if img is None else (img, txt)
        if kind == "t2i":
            return None if img is None else (txt, img)
        e = self._unit_emb("img_intra_emb" if kind == "i2i" else "txt_intra_emb")
        e = e if e is not None else (img if kind == "i2i" else txt)
        return None if e is None else (e, e)

    def _sorted_keys(self, kind: str) -> Tuple[Tensor, Tensor]:
        """Flat keys ``row * num_cols + col`` in increasing order, with their scores (cached)."""
        if kind not in self._keys:
            index, score = self.lists(kind)
            ncols = self._rows_cols(kind)[1]
            # sorting within rows sorts the keys globally: row r's keys lie in [r*C, (r+1)*C)
            idx, perm = torch.sort(index, dim=1)
            row = torch.arange(index.shape[0], device=index.device)[:, None]
            self._keys[kind] = ((row * ncols + idx).reshape(-1), score.gather(1, perm).reshape(-1))
        return self._keys[kind]

    def _lookup(self, kind: str, r: Tensor, c: Tensor, out: Tensor) -> Tensor:
        """Write the stored score of each pair found into ``out``; return the found mask."""
        keys, vals = self._sorted_keys(kind)
        ncols = self._rows_cols(kind)[1]
        found = torch.zeros(r.numel(), dtype=torch.bool, device=r.device)
        for s in range(0, r.numel(), _GATHER_CHUNK):
            q = r[s:s + _GATHER_CHUNK] * ncols + c[s:s + _GATHER_CHUNK]
            pos = torch.searchsorted(keys, q).clamp_(max=keys.numel() - 1)
            hit = keys[pos] == q
            found[s:s + _GATHER_CHUNK] = hit
            block = out[s:s + _GATHER_CHUNK]
            block[hit] = vals[pos[hit]].to(out.dtype)
        return found

    # --------------------------------------------------------------- constructors
    @classmethod
    def from_embeddings(cls, img_emb: Any, txt_emb: Any, txt2img: Any,
                        k: Union[int, Mapping[str, int]] = 100, img_intra_emb: Any = None,
                        txt_intra_emb: Any = None, *, keep_embeddings: bool = True,
                        chunk_size: Optional[int] = None, backend: str = "auto",
                        device: Device = None, progress: bool = False,
                        episodes: Optional[Sequence[Tensor]] = None,
                        cross_similarity: str = "cosine") -> "NeighborLists":
        """Neighbour lists of all four kinds by chunked cosine search.

        Cross-modal lists (``i2t``, ``t2i``) come from ``img_emb`` / ``txt_emb``.
        The intra lists come from the unimodal ``img_intra_emb`` / ``txt_intra_emb``
        when given (real systems and :mod:`pillargraph.data.synthetic` have
        per-modality encoders), otherwise from the cross-modal embeddings.

        Any of the embeddings may be a :mod:`scipy.sparse` matrix (raw TF-IDF);
        those are searched with sparse products (see :func:`topk_neighbors`) and
        never kept, so :meth:`gather` answers their kinds from the lists.

        Args:
            img_emb (Tensor): :obj:`[N, d]` image embeddings.
            txt_emb (Tensor): :obj:`[M, d]` caption embeddings.
            txt2img (Tensor): :obj:`[M]` image index of each caption.
            k (int or dict, optional): neighbours per row, one depth for all kinds or
                a dict by kind; capped at the gallery size (default: :obj:`100`).
            img_intra_emb (Tensor, optional): :obj:`[N, d']` unimodal image embeddings.
            txt_intra_emb (Tensor, optional): :obj:`[M, d'']` unimodal caption embeddings.
            keep_embeddings (bool, optional): keep the (dense) embeddings so that
                :meth:`gather` is exact (default: :obj:`True`).
            chunk_size, backend, device, progress: as in :func:`topk_neighbors`.
            episodes (sequence of Tensor, optional): image ids of each episode (e.g.
                :func:`~pillargraph.data.partition.episode_partition`): every row is
                searched only against the items of its own episode, and ``k`` is
                capped at the smallest episode's gallery (default: the whole split).
            cross_similarity (str, optional): how ``i2t`` / ``t2i`` score a pair:
                ``"cosine"`` or ``"dot"``, the inner product of ``img_emb`` (queries)
                and ``txt_emb`` (documents) rows, e.g. BM25 (default: ``"cosine"``).
                Intra lists are always cosine, so ``"dot"`` needs the intra
                embeddings. ``"dot"`` embeddings are not kept (:meth:`gather`
                computes cosines), so those kinds are answered from the lists.
        """
        if check_similarity(cross_similarity, "cross_similarity") == "dot" and (
                img_intra_emb is None or txt_intra_emb is None):
            raise ValueError("img_intra_emb, txt_intra_emb: needed with cross_similarity='dot' (a "
                             "query-document score is no intra-modal similarity)")
        checked = check_embeddings(img_emb, txt_emb, txt2img, img_intra_emb, txt_intra_emb)
        img, txt = checked["img_emb"], checked["txt_emb"]
        img_intra = img if img_intra_emb is None else checked["img_intra_emb"]
        txt_intra = txt if txt_intra_emb is None else checked["txt_intra_emb"]
        depth = cls._depths(k)
        opts = dict(chunk_size=chunk_size, backend=backend, device=device, progress=progress)
        pairs = dict(i2t=(img, txt), t2i=(txt, img), i2i=(img_intra, img_intra), t2t=(txt_intra, txt_intra))
        t = checked["txt2img"]
        episode = None if episodes is None else _episode_ids(episodes, img.shape[0])
        lists: Dict[str, Tensor] = {}
        for kind, (q, g) in pairs.items():
            kind_opts = dict(opts, similarity=cross_similarity if kind in ("i2t", "t2i") else "cosine")
            if episodes is None:
                idx, val = topk_neighbors(q, g, min(depth[kind], g.shape[0]), **kind_opts)
            else:
                idx, val = _episode_topk(q, g, kind, depth[kind], episodes, t, kind_opts)
            lists[f"{kind}_index"], lists[f"{kind}_score"] = idx, val
        dev = lists["i2t_index"].device

        def kept(x: Any, given: Any = True) -> Optional[Tensor]:
            dense = keep_embeddings and given is not None and not scipy.sparse.issparse(x)
            return x.to(dev) if dense else None

        keep_cross = True if cross_similarity == "cosine" else None  # gather() would take dot rows as cosines
        embs = dict(img_emb=kept(img, keep_cross), txt_emb=kept(txt, keep_cross),
                    img_intra_emb=kept(img_intra, img_intra_emb),
                    txt_intra_emb=kept(txt_intra, txt_intra_emb))
        if embs["img_emb"] is None or embs["txt_emb"] is None:  # both or neither
            embs["img_emb"] = embs["txt_emb"] = None
            for side, name in ((img_intra, "img_intra_emb"), (txt_intra, "txt_intra_emb")):
                if embs[name] is None and side is (img if name == "img_intra_emb" else txt):
                    embs[name] = kept(side)  # intra from the dense cross side: keep it as intra
        return cls(txt2img=t.to(dev), symmetric_intra=True, image_episode=None if episode is None else episode.to(dev),
                   **lists, **embs)

    @classmethod
    def from_bundle(cls, bundle: SimilarityBundle, k: Union[int, Mapping[str, int]] = 100, *,
                    chunk_size: Optional[int] = None, device: Device = None) -> "NeighborLists":
        """Neighbour lists from the dense matrices of a bundle, a block of rows at a time.

        Intra lists are built where the bundle has ``sim_i2i`` / ``sim_t2t``. The
        bundle's embeddings are not kept: its matrices are the scores to reproduce
        (they may be re-ranked or come from a one-tower model), so :meth:`gather`
        answers from the lists.

        Args:
            bundle (SimilarityBundle): the split.
            k (int or dict, optional): neighbours per row, one depth for all kinds or
                a dict by kind; capped at the gallery size (default: :obj:`100`).
            chunk_size (int, optional): rows per block (see :func:`topk_from_matrix`).
            device (torch.device or str, optional): where to compute and keep the lists
                (default: the bundle's device).
        """
        if not isinstance(bundle, SimilarityBundle):
            raise ValueError(f"bundle: expected a SimilarityBundle, got {type(bundle).__name__}")
        depth = cls._depths(k)
        mats = dict(i2t=bundle.sim_i2t, t2i=bundle.t2i_scores, i2i=bundle.sim_i2i, t2t=bundle.sim_t2t)
        lists: Dict[str, Tensor] = {}
        for kind, mat in mats.items():
            if mat is None:
                continue
            idx, val = topk_from_matrix(mat, min(depth[kind], mat.shape[1]), chunk_size, device=device)
            lists[f"{kind}_index"], lists[f"{kind}_score"] = idx, val
        symmetric = all(_is_symmetric(m, chunk_rows(chunk_size, m.shape[1]))
                        for m in (bundle.sim_i2i, bundle.sim_t2t) if m is not None)
        t = bundle.txt2img.to(lists["i2t_index"].device)
        return cls(txt2img=t, symmetric_intra=symmetric, **lists)

    @staticmethod
    def _depths(k: Union[int, Mapping[str, int]]) -> Dict[str, int]:
        if isinstance(k, Mapping):
            unknown = sorted(set(k) - set(KINDS))
            if unknown:
                raise ValueError(f"k: unknown kind(s) {unknown}; expected keys among {list(KINDS)}")
            depth = {kind: k.get(kind, 100) for kind in KINDS}
        else:
            depth = {kind: k for kind in KINDS}
        for kind, d in depth.items():
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1:
                raise ValueError(f"k: expected a positive int for {kind}, got {d!r}")
        return {kind: int(d) for kind, d in depth.items()}

    # -------------------------------------------------------------------- utilities
    def to(self, device: Device) -> "NeighborLists":
        """A copy with every tensor on ``device``."""
        return NeighborLists(**{name: (v.to(device) if isinstance(v, Tensor) else v)
                                for name, v in self._state().items()})

    def with_lists(self, keep_embeddings: bool = False, **lists: Tuple[Tensor, Tensor]) -> "NeighborLists":
        """A copy with some kinds' lists replaced, e.g. ``with_lists(i2t=(index, score))`` (validated).

        Args:
            keep_embeddings: keep the embeddings (default: False: replaced lists,
                e.g. re-ranked ones, are no longer what the embeddings score, so
                :meth:`gather` answers from the lists).
            **lists: ``kind=(index, score)`` for the kinds to replace.
        """
        state = self._state()
        for kind, (index, score) in lists.items():
            check_kind(kind)
            state[f"{kind}_index"], state[f"{kind}_score"] = index, score
        if not keep_embeddings:
            state.update({name: None for name in _EMB_FIELDS})
        return NeighborLists(**state)

    def _state(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"txt2img": self._txt2img}
        for kind in KINDS:
            state[f"{kind}_index"], state[f"{kind}_score"] = self._index[kind], self._score[kind]
        state.update(self._emb)
        state["symmetric_intra"] = self.symmetric_intra
        state["image_episode"] = self._episode
        return state

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write an uncompressed ``.npz`` keyed by the constructor's argument names.

        Absent lists and embeddings are left out. The file is written to a
        temporary file in the same folder and renamed into place, so an existing
        file is never left half-written.
        """
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
        arrays = {}
        for name, value in self._state().items():
            if isinstance(value, Tensor):
                arrays[name] = value.detach().cpu().numpy()
            elif name == "symmetric_intra":
                arrays[name] = np.array(value)
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike], device: Device = None) -> "NeighborLists":
        """Read lists written by :meth:`save` (validated like the constructor).

        Raises:
            FileNotFoundError: the file does not exist.
            ValueError: not an ``.npz``, unknown or missing keys, or invalid contents.
        """
        arrays = read_npz(path, "neighbour lists", _FIELDS,
                          required=("txt2img", "i2t_index", "i2t_score", "t2i_index", "t2i_score"))
        kwargs: Dict[str, Any] = {}
        for name, value in arrays.items():
            if name == "symmetric_intra":
                if value.shape != () or value.dtype != np.bool_:
                    raise ValueError(f"symmetric_intra: expected a boolean scalar, got {value.dtype} "
                                     f"of shape {value.shape}")
                kwargs[name] = bool(value)
            else:
                kwargs[name] = torch.from_numpy(value).to(device) if device is not None \
                    else torch.from_numpy(value)
        return cls(**kwargs)

    def __repr__(self) -> str:
        kinds = ", ".join(f"{kind}={self.depth(kind)}" for kind in KINDS if self.has_kind(kind))
        episodes = "" if self._episode is None else \
            f", episode_images={','.join(str(s) for s in sorted(set(self.episode_sizes)))}"
        return (f"NeighborLists(num_images={self._n}, num_texts={self._m}, k=({kinds}), "
                f"embeddings={self.has_embeddings}{episodes})")
