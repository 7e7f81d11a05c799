r"""Real retrieval problems from caption files: the caption proxy.

No image pixels or features are available offline, so each image is stood in
for by one of its own captions (the *anchor*) and its other captions are its
texts. With ``K`` captions per image this gives ``N`` queries against
``M = (K - 1) N`` texts. The cross-modal score and the intra-modal similarities
may come from different encoders, so the unimodal neighbourhoods can know
things the cross-modal scorer does not, as in real image-text systems.

Caption files hold one caption per line, ``K`` consecutive lines per image;
``NAME_caps.txt`` or gzip-compressed ``NAME_caps.txt.gz`` (read transparently).
They are read from a folder, never copied into the package: the folder is the
``root`` argument, else ``$PILLARGRAPH_CAPTIONS``, else ``shared/data/captions``
beside the repository (looked for in the repository's parent folder and above).

.. warning::
    Caption-proxy numbers are text-to-text retrieval results. They are not
    comparable to published image-text results and must never be reported as such.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import Tensor

from .embedding_cache import EmbeddingCache, Embeddings, texts_hash
from .text_encoders import TextEncoder, resolve_text_encoder

__all__ = [
    "CAPTIONS_PER_IMAGE",
    "CAPTIONS_ENV",
    "captions_root",
    "list_caption_splits",
    "read_captions",
    "CaptionSplit",
    "load_caption_split",
    "encode_caption_split",
]

PathLike = Union[str, os.PathLike]
EncoderLike = Union[str, TextEncoder]

#: Captions per image in the shipped caption files (``K`` consecutive lines per image).
CAPTIONS_PER_IMAGE = 5
#: Environment variable naming the caption folder.
CAPTIONS_ENV = "PILLARGRAPH_CAPTIONS"
_SUFFIX = "_caps.txt"
#: Caption-file endings, plain first: ``NAME_caps.txt`` and ``NAME_caps.txt.gz``.
_SUFFIXES = (_SUFFIX, _SUFFIX + ".gz")
_GZIP_MAGIC = b"\x1f\x8b"
_REPO_ROOT = Path(__file__).resolve().parents[2]


# ------------------------------------------------------------------ files
def captions_root(root: Optional[PathLike] = None) -> Path:
    """The folder that holds the caption files.

    Args:
        root: an explicit folder (default: ``$PILLARGRAPH_CAPTIONS``, else the first
            ``shared/data/captions`` found in the repository's parent folder or above,
            i.e. ``../shared/data/captions`` seen from the repository).

    Raises:
        FileNotFoundError: the folder does not exist (the message says where it looked).
    """
    if root is not None:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"root: caption folder not found: {path}")
        return path
    env = os.environ.get(CAPTIONS_ENV)
    if env:
        path = Path(env).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"${CAPTIONS_ENV}: caption folder not found: {path}")
        return path
    tried = []
    for parent in _REPO_ROOT.parents:
        path = parent / "shared" / "data" / "captions"
        tried.append(str(path))
        if path.is_dir():
            return path
    raise FileNotFoundError(f"caption folder not found (looked in {', '.join(tried[:3])}, ...); "
                            f"pass root= or set ${CAPTIONS_ENV}")


def _split_name(path: Path) -> Optional[str]:
    """``NAME`` for ``NAME_caps.txt`` / ``NAME_caps.txt.gz``, else None."""
    for suffix in _SUFFIXES:
        if path.name.endswith(suffix) and len(path.name) > len(suffix):
            return path.name[:-len(suffix)]
    return None


def list_caption_splits(root: Optional[PathLike] = None) -> list:
    """Names of the splits in the caption folder (``NAME_caps.txt[.gz]`` -> ``NAME``), sorted."""
    folder = captions_root(root)
    names = {_split_name(p) for p in folder.iterdir() if p.is_file()}
    return sorted(n for n in names if n)


def _read_text(path: Path) -> str:
    """The file's text, gunzipped when it starts with the gzip magic bytes."""
    with open(path, "rb") as fh:
        raw = fh.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as err:  # truncated or corrupt archive
            raise ValueError(f"{path}: broken gzip file ({err})") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None


def read_captions(path: PathLike) -> list:
    """The captions of a file, one per line (gzip-compressed files are read transparently).

    A final newline is optional and ``\\r\\n`` line endings are accepted.
    Surrounding whitespace is kept (it changes nothing for the encoders but keeps
    the content hash that of the file).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, not UTF-8, a broken gzip archive, or has a
            blank line (a blank line would shift every later caption to the wrong image).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    text = _read_text(path)
    # split on "\n" only: str.splitlines would also split on rare Unicode separators inside a caption
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    if not lines:
        raise ValueError(f"{path}: no captions")
    blank = [i + 1 for i, line in enumerate(lines) if not line.strip()]
    if blank:
        raise ValueError(f"{path}: {len(blank)} blank line(s), first at line {blank[0]}; "
                         "every line must be one caption")
    return lines


# ------------------------------------------------------------------ split
@dataclass(frozen=True, eq=False)
class CaptionSplit:
    """The captions of one split and the image each describes.

    Args:
        captions (tuple of str): all captions, in file order.
        caption2image (Tensor): :obj:`[C]` long, the image of each caption;
            every image in ``0..N-1`` has at least one caption.
        name (str, optional): a label such as ``"f30k_test"``.
    """

    captions: Tuple[str, ...]
    caption2image: Tensor
    name: str = ""

    def __post_init__(self) -> None:
        caps = tuple(self.captions)
        if not caps:
            raise ValueError("captions: empty")
        for i, c in enumerate(caps):
            if not isinstance(c, str):
                raise ValueError(f"captions: item {i} is {type(c).__name__}, expected str")
        object.__setattr__(self, "captions", caps)
        c2i = torch.as_tensor(self.caption2image)
        if c2i.dim() != 1 or c2i.numel() != len(caps):
            raise ValueError(f"caption2image: expected shape ({len(caps)},), got {tuple(c2i.shape)}")
        if c2i.is_floating_point() or c2i.dtype == torch.bool:
            raise ValueError(f"caption2image: expected an integer dtype, got {c2i.dtype}")
        c2i = c2i.long()
        if int(c2i.min()) < 0:
            raise ValueError("caption2image: negative image index")
        if bool((torch.bincount(c2i) == 0).any()):
            raise ValueError("caption2image: image indices must be 0..N-1 with every image used")
        object.__setattr__(self, "caption2image", c2i)

    @classmethod
    def from_consecutive(cls, captions: Sequence[str], captions_per_image: int = CAPTIONS_PER_IMAGE,
                         name: str = "") -> "CaptionSplit":
        """Captions grouped ``captions_per_image`` consecutive lines per image.

        Raises:
            ValueError: ``captions_per_image`` < 1 or not a divisor of the caption count.
        """
        k = int(captions_per_image)
        if k < 1:
            raise ValueError(f"captions_per_image: must be positive, got {captions_per_image}")
        if len(captions) % k:
            where = f" in {name}" if name else ""
            raise ValueError(f"captions_per_image: {len(captions)} captions{where} do not split into "
                             f"groups of {k}")
        return cls(tuple(captions), torch.arange(len(captions) // k).repeat_interleave(k), name)

    @property
    def num_images(self) -> int:
        """Number of images ``N``."""
        return int(self.caption2image.max()) + 1

    @property
    def num_captions(self) -> int:
        """Number of captions ``C``."""
        return len(self.captions)

    @property
    def content_hash(self) -> str:
        """:func:`~pillargraph.data.embedding_cache.texts_hash` of the captions (the cache key's content part)."""
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            cached = texts_hash(self.captions)
            object.__setattr__(self, "_content_hash", cached)
        return cached

    def positions(self) -> Tensor:
        """:obj:`[C]` the position of each caption among its image's captions (file order, from 0)."""
        c2i = self.caption2image
        order = torch.argsort(c2i, stable=True)
        counts = torch.bincount(c2i)
        starts = torch.cumsum(counts, 0) - counts
        pos = torch.empty_like(c2i)
        pos[order] = torch.arange(c2i.numel()) - starts[c2i[order]]
        return pos

    def anchor_split(self, anchor: int = 0) -> Tuple[Tensor, Tensor, Tensor]:
        """Which captions stand in for the images and which are their texts.

        Args:
            anchor: position of the anchor among each image's captions (default: 0).

        Returns:
            ``(anchors [N], texts [M], txt2img [M])``: the anchor caption of each
            image, the other captions in file order, and the image of each text
            (``M = C - N``).

        Raises:
            ValueError: an image has no caption at position ``anchor``, or no
                caption besides its anchor.
        """
        if not isinstance(anchor, (int, np.integer)) or isinstance(anchor, bool) or anchor < 0:
            raise ValueError(f"anchor: expected a non-negative int, got {anchor!r}")
        counts = torch.bincount(self.caption2image)
        if int(counts.min()) < max(int(anchor) + 1, 2):
            raise ValueError(f"anchor: every image needs a caption at position {anchor} and at least one "
                             f"more; the smallest image has {int(counts.min())} caption(s)")
        is_anchor = self.positions() == int(anchor)
        anchors = torch.empty(self.num_images, dtype=torch.long)
        anchors[self.caption2image[is_anchor]] = is_anchor.nonzero().flatten()
        texts = (~is_anchor).nonzero().flatten()
        return anchors, texts, self.caption2image[texts]

    def __repr__(self) -> str:
        return (f"CaptionSplit(name={self.name!r}, num_images={self.num_images}, "
                f"num_captions={self.num_captions})")


def load_caption_split(split: Union[str, PathLike, CaptionSplit], root: Optional[PathLike] = None,
                       captions_per_image: int = CAPTIONS_PER_IMAGE) -> CaptionSplit:
    """Read a split by name (``"f30k_test"`` -> ``ROOT/f30k_test_caps.txt`` or
    ``ROOT/f30k_test_caps.txt.gz``) or by file path.

    Args:
        split: a split name, a path to a caption file, or a :class:`CaptionSplit`
            (returned unchanged).
        root: the caption folder (see :func:`captions_root`).
        captions_per_image: consecutive lines per image (default: 5, as in the
            shipped files).

    Raises:
        FileNotFoundError: no such split (the message lists the available ones).
    """
    if isinstance(split, CaptionSplit):
        return split
    path = Path(split)
    if not (path.suffix in (".txt", ".gz") or path.is_file()):
        folder = captions_root(root)
        found = [folder / f"{split}{suffix}" for suffix in _SUFFIXES if (folder / f"{split}{suffix}").is_file()]
        if not found:
            raise FileNotFoundError(f"split: no caption file {split}{_SUFFIX}[.gz] in {folder}; "
                                    f"available splits: {list_caption_splits(folder)}")
        path = found[0]
    name = _split_name(path) or path.name.split(".")[0]
    return CaptionSplit.from_consecutive(read_captions(path), captions_per_image, name)


# --------------------------------------------------------------- encoding
def encode_caption_split(split: Union[str, PathLike, CaptionSplit], encoder: EncoderLike, *,
                         root: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                         use_cache: bool = True, queries: bool = False) -> Embeddings:
    """Embeddings of every caption of a split, through the on-disk cache.

    Args:
        split: see :func:`load_caption_split`.
        encoder: a fitted :class:`~pillargraph.data.text_encoders.TextEncoder`, or
            ``"minilm"`` (the corpus-fitted encoders, ``"tfidf"``, ``"lsa"`` and
            ``"bm25"``, must be fitted first, so pass them as instances).
        root: the caption folder.
        cache_dir: the embedding cache folder (default: see
            :class:`~pillargraph.data.embedding_cache.EmbeddingCache`).
        use_cache: read and write the cache (default: True).
        queries: the captions as queries of a query-document scorer such as BM25
            (``encoder.encode_queries``; see
            :meth:`~pillargraph.data.embedding_cache.EmbeddingCache.encode`); the
            ordinary encoding for any other encoder (default: False).

    Returns:
        :obj:`[C, d]` float32 array (or CSR sparse matrix for raw TF-IDF and BM25).
    """
    split = load_caption_split(split, root)
    encoder = resolve_text_encoder(encoder)
    if use_cache:
        return EmbeddingCache(cache_dir).encode(encoder, split.captions, split.content_hash, queries=queries)
    return (encoder.encode_queries if queries else encoder.encode)(split.captions)
