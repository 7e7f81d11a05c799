r"""Real retrieval problems from caption files: the caption proxy.

No image pixels or features are available offline, so each image is stood in
for by one of its own captions (the *anchor*) and its other captions are its
texts. With ``K`` captions per image this gives ``N`` queries against
``M = (K - 1) N`` texts. The cross-modal score and the intra-modal similarities
may come from different encoders, so the unimodal neighbourhoods can know
things the cross-modal scorer does not, as in real image-text systems.

Caption files hold one caption per line, ``K`` consecutive lines per image.
They are read from a folder, never copied into the package: the folder is the
``root`` argument, else ``$PILLARGRAPH_CAPTIONS``, else ``shared/data/captions``
beside the repository (looked for in the repository's parent folder and above).

.. warning::
    Caption-proxy numbers are text-to-text retrieval results. They are not
    comparable to published image-text results and must never be reported as such.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .embedding_cache import EmbeddingCache, Embeddings, texts_hash
from .text_encoders import MiniLMEncoder, TextEncoder, TfidfEncoder, resolve_text_encoder

__all__ = [
    "CAPTIONS_PER_IMAGE",
    "CAPTIONS_ENV",
    "captions_root",
    "list_caption_splits",
    "read_captions",
    "CaptionSplit",
    "load_caption_split",
    "encode_caption_split",
    "caption_proxy_bundle",
]

PathLike = Union[str, os.PathLike]
EncoderLike = Union[str, TextEncoder]

#: Captions per image in the shipped caption files (``K`` consecutive lines per image).
CAPTIONS_PER_IMAGE = 5
#: Environment variable naming the caption folder.
CAPTIONS_ENV = "PILLARGRAPH_CAPTIONS"
_SUFFIX = "_caps.txt"
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


def list_caption_splits(root: Optional[PathLike] = None) -> list:
    """Names of the splits in the caption folder (``NAME_caps.txt`` -> ``NAME``), sorted."""
    folder = captions_root(root)
    return sorted(p.name[:-len(_SUFFIX)] for p in folder.glob("*" + _SUFFIX) if p.is_file())


def read_captions(path: PathLike) -> list:
    """The captions of a file, one per line.

    A final newline is optional and ``\\r\\n`` line endings are accepted.
    Surrounding whitespace is kept (it changes nothing for the encoders but keeps
    the content hash that of the file).

    Raises:
        FileNotFoundError: no such file.
        ValueError: the file is empty, not UTF-8, or has a blank line (a blank
            line would shift every later caption to the wrong image).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from None
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
    """Read a split by name (``"f30k_test"`` -> ``ROOT/f30k_test_caps.txt``) or by file path.

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
    if not (path.suffix == ".txt" or path.is_file()):
        folder = captions_root(root)
        path = folder / f"{split}{_SUFFIX}"
        if not path.is_file():
            raise FileNotFoundError(f"split: no caption file {path.name} in {folder}; available splits: "
                                    f"{list_caption_splits(folder)}")
    name = path.name[:-len(_SUFFIX)] if path.name.endswith(_SUFFIX) else path.stem
    return CaptionSplit.from_consecutive(read_captions(path), captions_per_image, name)


# --------------------------------------------------------------- encoding
def encode_caption_split(split: Union[str, PathLike, CaptionSplit], encoder: EncoderLike, *,
                         root: Optional[PathLike] = None, cache_dir: Optional[PathLike] = None,
                         use_cache: bool = True) -> Embeddings:
    """Embeddings of every caption of a split, through the on-disk cache.

    Args:
        split: see :func:`load_caption_split`.
        encoder: a fitted :class:`~pillargraph.data.text_encoders.TextEncoder`, or
            ``"minilm"`` (a ``"tfidf"`` encoder must be fitted first, so pass it as
            an instance).
        root: the caption folder.
        cache_dir: the embedding cache folder (default: see
            :class:`~pillargraph.data.embedding_cache.EmbeddingCache`).
        use_cache: read and write the cache (default: True).

    Returns:
        :obj:`[C, d]` float32 array (or CSR sparse matrix for raw TF-IDF).
    """
    split = load_caption_split(split, root)
    encoder = resolve_text_encoder(encoder)
    if use_cache:
        return EmbeddingCache(cache_dir).encode(encoder, split.captions, split.content_hash)
    return encoder.encode(split.captions)


def _dense(x: Embeddings) -> np.ndarray:
    return x.toarray() if scipy.sparse.issparse(x) else np.asarray(x)


def _cosine(a: Embeddings, b: Embeddings, device: torch.device, chunk: int = 4096) -> Tensor:
    """Cosine similarity of the rows of ``a`` and ``b`` as a float32 tensor on ``device``."""
    if not scipy.sparse.issparse(a) and not scipy.sparse.issparse(b):
        ta = torch.nn.functional.normalize(torch.as_tensor(a, dtype=torch.float32, device=device), dim=1)
        tb = torch.nn.functional.normalize(torch.as_tensor(b, dtype=torch.float32, device=device), dim=1)
        return ta @ tb.T

    def unit(x):
        if scipy.sparse.issparse(x):
            norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
            return scipy.sparse.diags(1.0 / np.maximum(norm, 1e-12)) @ x.tocsr()
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    a, b = unit(a), unit(b)
    if not scipy.sparse.issparse(a):  # dense x sparse: compute the transpose
        return _cosine(b, a, device, chunk).T.contiguous()
    out = torch.empty(a.shape[0], b.shape[0], dtype=torch.float32, device=device)
    # sparse x dense blocks: a sparse x sparse product of captions that share "a" is nearly dense
    for start in range(0, b.shape[0], chunk):
        block = _dense(b[start:start + chunk]).astype(np.float32)
        out[:, start:start + chunk] = torch.as_tensor(np.asarray(a @ block.T), device=device)
    return out


def _ridge_map(x: np.ndarray, y: np.ndarray, ridge: float) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centred ridge regression ``y ~ (x - mx) W + my``; returns ``(W, mx, my)``."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    mx, my = x.mean(0), y.mean(0)
    xc = x - mx
    gram = xc.T @ xc
    gram[np.diag_indices_from(gram)] += ridge
    w = np.linalg.solve(gram, xc.T @ (y - my))
    return w, mx, my


# ------------------------------------------------------------------ proxy
def caption_proxy_bundle(split: Union[str, PathLike, CaptionSplit],
                         cross: Union[EncoderLike, Tuple[EncoderLike, EncoderLike]] = "minilm",
                         intra: Optional[EncoderLike] = "minilm", *,
                         anchor: int = 0, root: Optional[PathLike] = None,
                         captions_per_image: int = CAPTIONS_PER_IMAGE,
                         tfidf_fit: Sequence[str] = ("f30k_dev", "coco_dev"),
                         map_split: Union[str, PathLike, CaptionSplit] = "coco_dev",
                         map_ridge: float = 1.0,
                         cache_dir: Optional[PathLike] = None, use_cache: bool = True,
                         device: Union[str, torch.device] = "cpu", batch_size: int = 64,
                         keep_embeddings: bool = False) -> SimilarityBundle:
    r"""A caption-proxy retrieval problem as a :class:`~pillargraph.SimilarityBundle`.

    Image :math:`i` is its anchor caption :math:`a_i`; its other captions are
    its texts. With encoders :math:`f` (cross) and :math:`g` (intra):

    .. math::
        S^{i2t}_{it} = \cos(f(a_i), f(t)), \qquad
        S^{i2i}_{ij} = \cos(g(a_i), g(a_j)), \qquad
        S^{t2t}_{tu} = \cos(g(t), g(u))

    With ``cross="A->B"`` (a *cross-encoder proxy* with a real modality gap)
    the anchors are embedded by ``A`` and the texts by ``B``, bridged by a
    centred ridge map :math:`W` learnt on ``map_split`` (each anchor regressed
    onto each of its own texts):

    .. math::
        S^{i2t}_{it} = \cos\big((A(a_i) - \mu_A) W + \mu_B,\; B(t)\big)

    Every caption file is embedded once per encoder and cached on disk (see
    :class:`~pillargraph.data.embedding_cache.EmbeddingCache`).

    Args:
        split: split name (``"f30k_test"``, ``"coco_testall"``, ...), caption-file
            path or :class:`CaptionSplit`.
        cross: encoder of the cross-modal score: ``"minilm"``, ``"tfidf"``,
            ``"A->B"`` (e.g. ``"tfidf->minilm"``), a fitted
            :class:`~pillargraph.data.text_encoders.TextEncoder`, or a pair
            ``(A, B)`` for the mapped form (default: ``"minilm"``).
        intra: encoder of ``sim_i2i`` and ``sim_t2t``, or ``None`` to leave them
            out (e.g. on large splits where an :obj:`[M, M]` matrix does not fit;
            default: ``"minilm"``).
        anchor: which caption of each image is its anchor (default: 0).
        root: the caption folder (see :func:`captions_root`).
        captions_per_image: consecutive lines per image in the files (default: 5).
        tfidf_fit: splits whose captions fit every ``"tfidf"`` encoder named here
            (default: the Flickr30K and COCO dev splits, so no test caption shapes
            the vocabulary or IDF weights).
        map_split: split that trains the ``"A->B"`` map (default: ``"coco_dev"``,
            disjoint from every test split); must differ from ``split``.
        map_ridge: ridge penalty of the map (default: 1.0).
        cache_dir: the embedding cache folder (default: ``~/.cache/pillargraph/embeddings``).
        use_cache: read and write the embedding cache (default: True).
        device: where the encoders run and the bundle lives (default: ``"cpu"``).
        batch_size: MiniLM batch size (default: 64).
        keep_embeddings: also store the cross-modal embeddings as ``img_emb`` /
            ``txt_emb`` (dense; default: False).

    Returns:
        A bundle with ``N`` images and ``M = C - N`` texts.

    Raises:
        FileNotFoundError: caption folder or split missing.
        ModuleNotFoundError: an encoder's optional packages (the ``bench`` extra) are missing.
        ValueError: bad arguments, e.g. an unknown encoder name.
    """
    device = torch.device(device)
    data = load_caption_split(split, root, captions_per_image)
    anchors, texts, txt2img = data.anchor_split(anchor)
    encoders: Dict[str, TextEncoder] = {}

    def get_encoder(spec: EncoderLike, arg: str) -> TextEncoder:
        if isinstance(spec, TextEncoder):
            return spec
        if not isinstance(spec, str):
            raise ValueError(f"{arg}: expected an encoder name or a TextEncoder, got {type(spec).__name__}")
        enc = resolve_text_encoder(spec)  # validates the name before anything is loaded
        if enc.name not in encoders:
            if isinstance(enc, TfidfEncoder):
                if not tfidf_fit:
                    raise ValueError("tfidf_fit: name at least one split to fit TF-IDF on")
                fit = [c for s in tfidf_fit
                       for c in load_caption_split(s, root, captions_per_image).captions]
                enc.fit(fit)
            elif isinstance(enc, MiniLMEncoder):
                enc = MiniLMEncoder(device=str(device), batch_size=batch_size)
            encoders[enc.name] = enc
        return encoders[enc.name]

    def embed(enc: TextEncoder, which: CaptionSplit) -> Embeddings:
        return encode_caption_split(which, enc, cache_dir=cache_dir, use_cache=use_cache)

    # resolve every name first: a typo fails before minutes of encoding
    if isinstance(cross, str) and "->" in cross:
        pair = tuple(p.strip() for p in cross.split("->"))
        if len(pair) != 2 or not all(pair):
            raise ValueError(f"cross: expected 'A->B', got {cross!r}")
        cross = pair
    mapped = isinstance(cross, tuple)
    if mapped:
        if len(cross) != 2:
            raise ValueError(f"cross: a mapped cross encoder is a pair (A, B), got {len(cross)} items")
        enc_a, enc_b = get_encoder(cross[0], "cross"), get_encoder(cross[1], "cross")
    else:
        enc_a = enc_b = get_encoder(cross, "cross")
    enc_g = get_encoder(intra, "intra") if intra is not None else None

    emb_b = embed(enc_b, data)
    if mapped:
        if map_ridge < 0:
            raise ValueError(f"map_ridge: must be non-negative, got {map_ridge}")
        train = load_caption_split(map_split, root, captions_per_image)
        if train.content_hash == data.content_hash:
            raise ValueError(f"map_split: {train.name!r} is the evaluated split itself; train the map "
                             "on another split")
        tr_anchors, tr_texts, tr_txt2img = train.anchor_split(anchor)
        tr_a, tr_b = embed(enc_a, train), embed(enc_b, train)
        w, mx, my = _ridge_map(_dense(tr_a[tr_anchors[tr_txt2img].numpy()]),
                               _dense(tr_b[tr_texts.numpy()]), float(map_ridge))
        img_side = ((_dense(embed(enc_a, data)[anchors.numpy()]) - mx) @ w + my).astype(np.float32)
    else:
        img_side = emb_b[anchors.numpy()]
    txt_side = emb_b[texts.numpy()]
    fields = dict(sim_i2t=_cosine(img_side, txt_side, device), txt2img=txt2img.to(device))
    if enc_g is not None:
        emb_g = emb_b if enc_g is enc_b else embed(enc_g, data)
        fields["sim_i2i"] = _cosine(emb_g[anchors.numpy()], emb_g[anchors.numpy()], device)
        fields["sim_t2t"] = _cosine(emb_g[texts.numpy()], emb_g[texts.numpy()], device)
    if keep_embeddings:
        fields["img_emb"] = torch.as_tensor(_dense(img_side), dtype=torch.float32, device=device)
        fields["txt_emb"] = torch.as_tensor(_dense(txt_side), dtype=torch.float32, device=device)
    return SimilarityBundle(**fields)
