"""Reading a split from a file whose format is told apart by its keys.

Three ``.npz`` layouts meet at the command line: a dense
:class:`~pillargraph.SimilarityBundle` (keys ``sim_i2t``, ``txt2img``, ...),
:class:`~pillargraph.data.NeighborLists` (keys ``i2t_index``, ``i2t_score``, ...)
and raw embeddings (keys ``img_emb``, ``txt_emb``, ``txt2img`` and optionally
``img_intra_emb``, ``txt_intra_emb``), the input of ``pillargraph neighbors``.
"""
from __future__ import annotations

import os
import zipfile
from typing import Dict, Optional, Union

import numpy as np

from ..bundle import SimilarityBundle
from ..io import read_npz
from .neighbors import NeighborLists

__all__ = ["npz_format", "load_split", "load_embeddings", "EMBEDDING_KEYS", "FORMATS"]

#: Keys of an embeddings file (the first three required).
EMBEDDING_KEYS = ("img_emb", "txt_emb", "txt2img", "img_intra_emb", "txt_intra_emb")
#: What :func:`npz_format` can answer.
FORMATS = ("bundle", "lists", "embeddings", "lists-part", "rerank-part")

PathLike = Union[str, os.PathLike]


def npz_format(path: PathLike) -> Optional[str]:
    """``'bundle'``, ``'lists'``, ``'embeddings'``, ``'lists-part'`` or ``'rerank-part'`` from the keys of
    an ``.npz``, or None when unknown.

    The parts are those of ``pillargraph neighbors --shard`` and ``pillargraph rerank --shard``.

    Only the archive's member names are read; a file that is not a readable zip
    archive gives None (its loader then says what is wrong with it).
    """
    try:
        with zipfile.ZipFile(path) as archive:
            keys = {name[:-4] for name in archive.namelist() if name.endswith(".npy")}
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    if "list_part" in keys:
        return "lists-part"
    if {"meta", "i2t_learned"} <= keys:
        return "rerank-part"
    if "sim_i2t" in keys:
        return "bundle"
    if "i2t_index" in keys:
        return "lists"
    if {"img_emb", "txt_emb"} <= keys:
        return "embeddings"
    return None


def load_split(path: PathLike) -> Union[SimilarityBundle, NeighborLists]:
    """A dense bundle or neighbour lists, whichever the file holds.

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, or neither format (the message names the expected keys).
    """
    fmt = npz_format(path)
    if fmt == "lists":
        return NeighborLists.load(path)
    if fmt == "embeddings":
        raise ValueError(f"{path}: holds embeddings, not similarities; turn it into neighbour lists with "
                         f"`pillargraph neighbors {path} --out LISTS.npz` (or a bundle with "
                         f"SimilarityBundle.from_embeddings)")
    if fmt in ("lists-part", "rerank-part"):
        what = "neighbour search" if fmt == "lists-part" else "re-ranking"
        raise ValueError(f"{path}: is one part of a sharded {what}; assemble the parts with "
                         f"`pillargraph merge PART... --out OUT.npz`")
    return SimilarityBundle.load(path)


def load_embeddings(path: PathLike) -> Dict[str, np.ndarray]:
    """The arrays of an embeddings file (see :data:`EMBEDDING_KEYS`).

    Raises:
        FileNotFoundError: no such file.
        ValueError: unreadable, an unknown key or a missing required one.
    """
    return read_npz(path, "embeddings", EMBEDDING_KEYS, required=EMBEDDING_KEYS[:3])
