r"""Sharded neighbour lists: split the query rows of a large split over workers, then merge.

A worker searches shard ``I`` of ``N`` (``I`` counted from 1) with
:func:`neighbor_shard`: a contiguous slice of the query rows of each of the
four kinds (images for ``i2t`` and ``i2i``, captions for ``t2i`` and ``t2t``)
against the whole galleries, exactly as
:meth:`~pillargraph.data.NeighborLists.from_embeddings` searches them. It keeps
the slices' lists, and the rows of the embeddings and of ``txt2img`` that the
lists file keeps, in a :class:`ListPart`. :func:`merge_list_parts` checks that
the parts are exactly the ``N`` shards of one search (same input fingerprint,
``k``, blocks, backends and kept arrays) and concatenates them into the
:class:`~pillargraph.data.NeighborLists` the unsharded search returns; the
parts alone suffice, the input file is not read again.

**Exactness.** Each kind's shards are cut on multiples of its search block
(:func:`~pillargraph.data.neighbors.chunk_rows`, via
:func:`~pillargraph.shard.shard_range`), so every shard runs exactly the block
products and top-k selections of the unsharded search for its rows: the merge
is bit-for-bit the unsharded result (same chunk size, backend and device type).
With the default chunk size a block holds :math:`2^{25}` scores, so a small
split may be one block and all its rows go to the last shard ``N``
(see :func:`~pillargraph.shard.shard_range`).

The sharded search takes dense embeddings (what embeddings files hold); a
:mod:`scipy.sparse` side is refused.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from ..bundle import as_tensor
from ..io import atomic_write, read_npz
from .sharding import check_shard_set, part_names, shard_range
from .files import npz_format
from .neighbors import NeighborLists, check_embeddings, chunk_rows, resolve_backend, topk_neighbors
from .source import KINDS

__all__ = ["ListPart", "neighbor_shard", "list_ranges", "check_list_parts", "merge_list_parts",
           "LIST_PART_FORMAT"]

#: Written into every neighbour-list part; :meth:`ListPart.load` refuses other formats.
LIST_PART_FORMAT = "pillargraph-lists-part/1"

# The NeighborLists fields a part may hold (rows of its shard), stored under "part_<field>".
_FIELDS = tuple(f"{kind}_{a}" for kind in KINDS for a in ("index", "score")) + (
    "txt2img", "img_emb", "txt_emb", "img_intra_emb", "txt_intra_emb")
_REQUIRED = _FIELDS[:9]
_META = "list_part"
# Which kind's row range slices each per-row field: image fields follow i2t, caption fields t2i.
_ROWS_OF = {"txt2img": "t2i", "img_emb": "i2t", "txt_emb": "t2i", "img_intra_emb": "i2t", "txt_intra_emb": "t2i"}


def list_ranges(num_images: int, num_texts: int, index: int, count: int,
                blocks: Dict[str, int]) -> Dict[str, Tuple[int, int]]:
    """``{kind: (start, stop)}``: the query rows of shard ``index`` (from 1) of ``count``.

    Args:
        num_images, num_texts: the split's sizes (rows of the image and caption kinds).
        index, count: which shard.
        blocks: ``{kind: rows per search block}``; shards are cut on its multiples.
    """
    rows = {"i": num_images, "t": num_texts}
    return {kind: shard_range(rows[kind[0]], index, count, blocks[kind]) for kind in KINDS}


@dataclass
class ListPart:
    """What one worker's :func:`neighbor_shard` produced (see the module docstring).

    Args:
        index, count: shard ``index`` (from 1) of ``count``.
        k: the neighbours asked for per row (capped at each gallery's size).
        num_images, num_texts: the whole split's sizes.
        row_ranges: ``{kind: (start, stop)}`` of the shard's query rows.
        blocks: ``{kind: rows per search block}``.
        backends: ``{kind: 'torch' or 'faiss'}``, the backend each kind ran.
        arrays: the shard's rows of the lists file's fields (``i2t_index``, ...,
            ``txt2img`` and the kept embeddings), as NumPy arrays.
        inputs: ``{'embeddings': fingerprint}`` (see :func:`~pillargraph.shard.file_fingerprint`).
        input_path: where the embeddings were read from (for messages).
        source: the file the part was loaded from (not saved; for messages).
    """

    index: int
    count: int
    k: int
    num_images: int
    num_texts: int
    row_ranges: Dict[str, Tuple[int, int]]
    blocks: Dict[str, int]
    backends: Dict[str, str]
    arrays: Dict[str, np.ndarray]
    inputs: Dict[str, Any] = field(default_factory=dict)
    input_path: Optional[str] = None
    source: Optional[str] = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """The part's file name, or ``'shard I/N'`` for a part not read from a file."""
        return self.source if self.source is not None else f"shard {self.index}/{self.count}"

    def ranges(self) -> Dict[str, Tuple[int, int]]:
        """``{kind: (start, stop)}`` of the shard's query rows."""
        return dict(self.row_ranges)

    def check(self) -> None:
        """Check that every array has its shard's rows and each kind's lists their width.

        Raises:
            ValueError: one line naming the array that does not fit (a damaged part).
        """
        sizes = {"i": self.num_images, "t": self.num_texts}
        for name, value in self.arrays.items():
            kind = _ROWS_OF.get(name, name[:3])
            start, stop = self.row_ranges[kind]
            shape = tuple(value.shape)
            width = min(self.k, sizes[kind[2]]) if name[:3] in KINDS else None
            if shape[:1] != (stop - start,) or (width is not None and shape != (stop - start, width)):
                want = (stop - start,) if width is None else (stop - start, width)
                raise ValueError(f"{name}: expected {want[0]} rows (rows [{start}, {stop}) of {kind})"
                                 f"{f' of {width} neighbours' if width else ''}, got shape {shape}")

    def meta(self) -> Dict[str, Any]:
        """Everything but the arrays, JSON-friendly (what :meth:`save` writes as ``list_part``)."""
        return {"format": LIST_PART_FORMAT, "shard": self.index, "count": self.count, "k": self.k,
                "num_images": self.num_images, "num_texts": self.num_texts,
                "ranges": {kind: list(r) for kind, r in self.row_ranges.items()}, "blocks": dict(self.blocks),
                "backends": dict(self.backends), "inputs": self.inputs, "input_path": self.input_path}

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the part to ``path`` (an uncompressed ``.npz`` of plain arrays, atomically)."""
        path = Path(path)
        if path.suffix != ".npz":
            raise ValueError(f"path: expected a .npz file name, got {path.name!r}")
        arrays = {_META: np.array(json.dumps(self.meta(), sort_keys=True))}
        arrays.update({f"part_{name}": value for name, value in self.arrays.items()})
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "ListPart":
        """Read a part written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            ValueError: not a neighbour-list part (the message names the file).
        """
        kind = npz_format(path)
        if kind not in (None, "lists-part"):
            what = {"bundle": "a bundle", "lists": "neighbour lists", "rerank-part": "a re-ranking part"}
            raise ValueError(f"{path}: holds {what.get(kind, kind)}, not a neighbour-list part (parts are "
                             f"written by `pillargraph neighbors --shard I/N`)")
        keys = (_META,) + tuple(f"part_{name}" for name in _FIELDS)
        raw = read_npz(path, "neighbour-list part", keys, required=keys[:len(_REQUIRED) + 1])
        try:
            meta = json.loads(str(raw.pop(_META)[()]))
            if meta.get("format") != LIST_PART_FORMAT:
                raise ValueError(f"format {meta.get('format')!r}")
            ranges = {kind: tuple(int(v) for v in meta["ranges"][kind]) for kind in KINDS}
            part = cls(int(meta["shard"]), int(meta["count"]), int(meta["k"]), int(meta["num_images"]),
                       int(meta["num_texts"]), ranges, {kind: int(meta["blocks"][kind]) for kind in KINDS},
                       {kind: str(meta["backends"][kind]) for kind in KINDS},
                       {name[5:]: value for name, value in raw.items()}, dict(meta["inputs"]),
                       meta.get("input_path"), str(path))
            part.check()
            return part
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not a pillargraph neighbour-list part ({LIST_PART_FORMAT}): "
                             f"{err}") from None


def _refuse_sparse(value: Any, name: str) -> None:
    """Refuse a sparse side (checked further by :func:`~pillargraph.data.neighbors.check_embeddings`)."""
    if scipy.sparse.issparse(value):
        raise ValueError(f"{name}: a sharded neighbour search needs dense embeddings, got a sparse matrix")


def _search(query: Tensor, gallery: Tensor, k: int, rows: Tuple[int, int], block: int, backend: str,
            device: torch.device, progress: bool) -> Tuple[np.ndarray, np.ndarray]:
    """Top-``k`` of the query rows ``[start, stop)`` against the whole gallery, as NumPy arrays."""
    start, stop = rows
    k = min(k, gallery.shape[0])
    if stop > start:
        index, score = topk_neighbors(query[start:stop], gallery, k, chunk_size=block, backend=backend,
                                      device=device, progress=progress)
        return index.cpu().numpy(), score.cpu().numpy()
    dtype = torch.promote_types(query.dtype, gallery.dtype) if backend == "torch" else torch.float32
    return np.empty((0, k), dtype=np.int64), torch.empty(0, k, dtype=dtype).numpy()


def neighbor_shard(img_emb: Any, txt_emb: Any, txt2img: Any, k: int, img_intra_emb: Any = None,
                   txt_intra_emb: Any = None, *, index: int, count: int, keep_embeddings: bool = True,
                   chunk_size: Optional[int] = None, backend: str = "auto",
                   device: Union[str, torch.device, None] = None, progress: bool = False,
                   inputs: Optional[Dict[str, Any]] = None, input_path: Optional[str] = None) -> ListPart:
    """Search shard ``index`` (from 1) of ``count`` of the query rows of all four kinds.

    Takes the arguments of :meth:`~pillargraph.data.NeighborLists.from_embeddings`
    (dense embeddings, one ``k`` for all kinds); :func:`merge_list_parts` of the
    ``count`` parts equals ``NeighborLists.from_embeddings(img_emb, txt_emb,
    txt2img, k, img_intra_emb, txt_intra_emb, ...)`` with the same options.

    Args:
        img_emb, txt_emb: :obj:`[N, d]` / :obj:`[M, d]` cross-modal embeddings (whole).
        txt2img: :obj:`[M]` image index of each caption.
        k: neighbours per row, capped at each gallery's size.
        img_intra_emb, txt_intra_emb: unimodal embeddings for the intra lists
            (default: the cross-modal ones).
        index, count: which shard.
        keep_embeddings: keep the shard's rows of the embeddings, as the lists file does.
        chunk_size, backend, device, progress: as for :func:`~pillargraph.data.topk_neighbors`.
        inputs: fingerprints of the input files to record.
        input_path: the embeddings file, recorded for messages.

    Raises:
        ValueError: bad shard, ``k`` or embeddings (sparse, mismatched rows or dimensions).
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k: expected a positive int, got {k!r}")
    for name, value in (("img_emb", img_emb), ("txt_emb", txt_emb), ("img_intra_emb", img_intra_emb),
                        ("txt_intra_emb", txt_intra_emb)):
        _refuse_sparse(value, name)
    # the whole input, whichever rows this shard holds: what the unsharded search refuses
    checked = check_embeddings(img_emb, txt_emb, txt2img, img_intra_emb, txt_intra_emb)
    img, txt, txt2img = checked["img_emb"], checked["txt_emb"], checked["txt2img"]
    intra = {name: checked[name] if checked[name] is not None else ref
             for name, ref in (("img_intra_emb", img), ("txt_intra_emb", txt))}
    sides = dict(i2t=(img, txt), t2i=(txt, img), i2i=(intra["img_intra_emb"],) * 2,
                 t2t=(intra["txt_intra_emb"],) * 2)
    device = torch.device(device) if device is not None else img.device
    backends = {kind: resolve_backend(backend, torch.promote_types(q.dtype, g.dtype), device)
                for kind, (q, g) in sides.items()}
    blocks = {kind: chunk_rows(chunk_size, g.shape[0], backends[kind]) for kind, (_, g) in sides.items()}
    ranges = list_ranges(img.shape[0], txt.shape[0], index, count, blocks)
    arrays: Dict[str, np.ndarray] = {}
    for kind, (q, g) in sides.items():
        arrays[f"{kind}_index"], arrays[f"{kind}_score"] = _search(q, g, int(k), ranges[kind], blocks[kind],
                                                                   backends[kind], device, progress)
    kept = dict(txt2img=txt2img, img_emb=img, txt_emb=txt, img_intra_emb=checked["img_intra_emb"],
                txt_intra_emb=checked["txt_intra_emb"]) if keep_embeddings else dict(txt2img=txt2img)
    for name, value in kept.items():
        if value is not None:
            arrays[name] = as_tensor(value, name)[slice(*ranges[_ROWS_OF[name]])].cpu().numpy()
    return ListPart(index, count, int(k), img.shape[0], txt.shape[0], ranges, blocks, backends, arrays,
                    dict(inputs or {}), input_path)


def _settings(part: ListPart) -> Dict[str, Any]:
    """What every part of one search must share."""
    return {"shard count": part.count, "input files": part.inputs, "k": part.k,
            "split sizes": (part.num_images, part.num_texts), "search blocks": part.blocks,
            "backends": part.backends, "kept arrays": sorted(part.arrays)}


def check_list_parts(parts: Sequence[ListPart]) -> List[ListPart]:
    """The parts in shard order, after checking that they are exactly the ``N`` shards of one search.

    Raises:
        ValueError: one line naming the problem (see :func:`~pillargraph.shard.check_shard_set`):
            parts of different searches (input fingerprint, ``k``, sizes, blocks,
            backends or kept arrays), a repeated or missing shard, or damaged ranges.
    """
    def expected(p: ListPart) -> Dict[str, Tuple[int, int]]:
        return list_ranges(p.num_images, p.num_texts, p.index, p.count, p.blocks)
    return check_shard_set(parts, _settings, expected)


def merge_list_parts(parts: Sequence[ListPart]) -> NeighborLists:
    """The neighbour lists assembled from all the shards' parts, in any order.

    The result equals what the unsharded
    :meth:`~pillargraph.data.NeighborLists.from_embeddings` returns (on the CPU).

    Raises:
        ValueError: the parts are not the ``N`` shards of one search
            (:func:`check_list_parts`), or their concatenation is not valid lists.
    """
    parts = check_list_parts(parts)
    try:
        fields = {name: torch.from_numpy(np.concatenate([p.arrays[name] for p in parts]))
                  for name in parts[0].arrays}
        return NeighborLists(symmetric_intra=True, **fields)
    except ValueError as err:  # parts altered after they were written
        raise ValueError(f"{part_names(parts)}: {err}") from None
