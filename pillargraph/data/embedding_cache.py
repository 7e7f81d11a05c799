"""An on-disk cache of text embeddings, keyed by what the texts are and how they were encoded."""
from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import scipy.sparse

from ..io import atomic_write

__all__ = ["default_cache_dir", "texts_hash", "embedding_cache_key", "EmbeddingCache"]

PathLike = Union[str, os.PathLike]
Embeddings = Union[np.ndarray, scipy.sparse.csr_matrix]


def default_cache_dir() -> Path:
    """The cache folder used when none is given.

    ``$PILLARGRAPH_CACHE`` if set, else ``$XDG_CACHE_HOME/pillargraph``, else
    ``~/.cache/pillargraph``.
    """
    env = os.environ.get("PILLARGRAPH_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "pillargraph"


def texts_hash(texts: Sequence[str]) -> str:
    """SHA-256 of a list of texts, order included.

    Each text is length-prefixed, so no two different lists share a hash (a
    text may itself contain any separator). For the lines of a caption file
    this is a hash of the file's content, independent of its line endings.
    """
    if isinstance(texts, str):
        raise ValueError("texts: expected a sequence of strings, got a single str")
    h = hashlib.sha256()
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"texts: item {i} is {type(text).__name__}, expected str")
        data = text.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()


def embedding_cache_key(content_hash: str, encoder: str, settings: Mapping[str, Any]) -> str:
    """The cache key of one encoding: content hash, encoder name and its settings.

    Args:
        content_hash: hash of the encoded texts (see :func:`texts_hash`).
        encoder: the encoder's name.
        settings: everything that changes the encoder's output (JSON-serialisable;
            key order does not matter).

    Returns:
        A SHA-256 hex digest.
    """
    if not isinstance(content_hash, str) or not content_hash:
        raise ValueError("content_hash: must be a non-empty string")
    try:
        blob = json.dumps({"content": content_hash, "encoder": encoder, "settings": settings},
                          sort_keys=True, separators=(",", ":"))
    except TypeError as err:
        raise ValueError(f"settings: not JSON-serialisable ({err})") from None
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """A folder of embedding matrices, one file per cache key.

    Dense matrices are stored as ``.npy``, sparse ones (raw TF-IDF) as
    :func:`scipy.sparse.save_npz` ``.npz``. Files are written to a temporary
    file in the same folder and renamed into place, so a reader never sees a
    half-written file and concurrent writers of one key race harmlessly.

    Args:
        root (path, optional): the cache folder (default:
            :func:`default_cache_dir` ``/ "embeddings"``). Created on first write.

    Example:
        >>> cache = EmbeddingCache(tmp_dir)                        # doctest: +SKIP
        >>> emb = cache.encode(MiniLMEncoder(), captions)          # doctest: +SKIP
    """

    def __init__(self, root: Optional[PathLike] = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_cache_dir() / "embeddings"

    def path(self, key: str, label: str = "", sparse: bool = False) -> Path:
        """The file that holds ``key`` (``label`` is a readable file-name prefix, e.g. ``"minilm"``)."""
        if not isinstance(key, str) or not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"key: expected a lowercase hex digest, got {key!r}")
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in label)
        stem = f"{safe}-{key}" if safe else key
        return self.root / (stem + (".npz" if sparse else ".npy"))

    def load(self, key: str, label: str = "", rows: Optional[int] = None) -> Optional[Embeddings]:
        """The cached matrix, or ``None`` when absent or unusable.

        A file that cannot be read, is not a 2-D float matrix or (when ``rows``
        is given) has another number of rows is ignored with a warning; the next
        :meth:`save` overwrites it.
        """
        for sparse in (False, True):
            path = self.path(key, label, sparse)
            if not path.is_file():
                continue
            try:
                arr = scipy.sparse.load_npz(path).tocsr() if sparse else np.load(path, allow_pickle=False)
            except (OSError, ValueError, KeyError) as err:
                warnings.warn(f"ignoring unreadable embedding cache file {path}: {err}")
                continue
            if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or (
                    rows is not None and arr.shape[0] != rows):
                warnings.warn(f"ignoring embedding cache file {path}: shape {arr.shape}, dtype {arr.dtype}"
                              + (f", expected {rows} rows" if rows is not None else ""))
                continue
            return arr
        return None

    def save(self, key: str, array: Embeddings, label: str = "") -> Path:
        """Write ``array`` (dense or scipy sparse) under ``key`` atomically; returns its path."""
        sparse = scipy.sparse.issparse(array)
        if not sparse:
            array = np.asarray(array)
        if array.ndim != 2:
            raise ValueError(f"array: expected a 2-D matrix, got shape {array.shape}")
        path = self.path(key, label, sparse)
        if sparse:
            atomic_write(path, lambda fh: scipy.sparse.save_npz(fh, scipy.sparse.csr_matrix(array),
                                                                 compressed=False))
        else:
            atomic_write(path, lambda fh: np.save(fh, array, allow_pickle=False))
        # a key holds one file: drop a stale one of the other kind
        other = self.path(key, label, not sparse)
        if other.exists():
            other.unlink()
        return path

    def encode(self, encoder: Any, texts: Sequence[str], content_hash: Optional[str] = None, *,
               queries: bool = False) -> Embeddings:
        """``encoder.encode(texts)``, read from the cache when present, else computed and stored.

        Args:
            encoder: a :class:`~pillargraph.data.text_encoders.TextEncoder` (anything
                with ``name``, ``settings()`` and ``encode(texts)``).
            texts: the texts to embed.
            content_hash: :func:`texts_hash` of ``texts`` when already known.
            queries: embed the texts as queries, ``encoder.encode_queries(texts)``,
                cached under their own key (``"side": "query"`` added to the
                settings, file label ``NAME-query``). Only a query-document scorer
                (``encoder.similarity == "dot"``) has a query side; for any other
                encoder this is the ordinary encoding (default: False).

        Returns:
            The embeddings, one row per text.
        """
        texts = list(texts)
        content_hash = content_hash or texts_hash(texts)
        queries = queries and getattr(encoder, "similarity", "cosine") == "dot"
        settings = dict(encoder.settings(), side="query") if queries else encoder.settings()
        label = f"{encoder.name}-query" if queries else encoder.name
        key = embedding_cache_key(content_hash, encoder.name, settings)
        emb = self.load(key, label, rows=len(texts))
        if emb is None:
            emb = encoder.encode_queries(texts) if queries else encoder.encode(texts)
            if emb.shape[0] != len(texts):
                raise ValueError(f"encoder: returned {emb.shape[0]} rows for {len(texts)} texts")
            self.save(key, emb, label)
        return emb

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.root)!r})"
