r"""The caption proxy: real retrieval problems built from caption files.

Each image is stood in for by one of its own captions (the *anchor*) and its
other captions are its texts (see :mod:`pillargraph.data.captions`). With
encoders :math:`f` (cross-modal) and :math:`g` (intra-modal):

.. math::
    S^{i2t}_{it} = \cos(f(a_i), f(t)), \qquad
    S^{i2i}_{ij} = \cos(g(a_i), g(a_j)), \qquad
    S^{t2t}_{tu} = \cos(g(t), g(u))

With ``cross="A->B"`` (a *cross-encoder proxy* with a real modality gap) the
anchors are embedded by ``A`` and the texts by ``B``, bridged by a centred
ridge map :math:`W` learnt on another split (each anchor regressed onto each of
its own texts): :math:`S^{i2t}_{it} = \cos((A(a_i) - \mu_A) W + \mu_B, B(t))`.

A query-document scorer (``cross="bm25"``, see
:class:`~pillargraph.data.text_encoders.Bm25Encoder`) scores each anchor as the
query against each text as a document, :math:`S^{i2t}_{it} = \mathrm{BM25}(a_i, t)`
(over the fit's largest self-score), the inner product of the anchor's query row
and the text's document row; caption queries rank the images by the same
scores. Such a score is not symmetric, so it is a cross-modal score only: the
intra encoder must compare by cosine, and it cannot be a side of ``"A->B"``.

:func:`caption_proxy_embeddings` embeds a split once (every caption file is
cached on disk per encoder); the result turns into whatever the split's size
allows:

* :meth:`ProxyEmbeddings.bundle`: dense :class:`~pillargraph.SimilarityBundle`
  (dev and test splits, a few thousand images);
* :meth:`ProxyEmbeddings.lists`: :class:`~pillargraph.data.NeighborLists`, never a
  dense matrix (the 29,000-image Flickr30K train split: its dense i2t matrix
  alone would take 13.5 GB); raw TF-IDF and BM25 go through sparse products in row chunks;
* :meth:`ProxyEmbeddings.episodes`: :class:`~pillargraph.data.EpisodicSimilarity`,
  the split cut into dense episodes of a test gallery's size.

.. warning::
    Caption-proxy numbers are text-to-text retrieval results. They are not
    comparable to published image-text results and must never be reported as such.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse
import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .captions import CAPTIONS_PER_IMAGE, CaptionSplit, encode_caption_split, load_caption_split
from .embedding_cache import Embeddings
from .episodes import EpisodicSimilarity
from .partition import episode_partition, episode_texts
from .neighbors import NeighborLists, check_similarity
from .text_encoders import FittedTextEncoder, MiniLMEncoder, TextEncoder, resolve_text_encoder

__all__ = ["ProxyEmbeddings", "caption_proxy_embeddings", "caption_proxy_bundle", "caption_proxy_lists"]

PathLike = Union[str, os.PathLike]
EncoderLike = Union[str, TextEncoder]
CrossLike = Union[EncoderLike, Tuple[EncoderLike, EncoderLike]]


def _dense(x: Embeddings) -> np.ndarray:
    return x.toarray() if scipy.sparse.issparse(x) else np.asarray(x)


def _rows(x: Optional[Embeddings], index: np.ndarray) -> Optional[Embeddings]:
    return None if x is None else x[index]


def _scores(a: Embeddings, b: Embeddings, device: torch.device, similarity: str = "cosine",
            chunk: int = 4096) -> Tensor:
    """Cosine similarity (or, with ``similarity="dot"``, inner product) of the rows of ``a`` and ``b``,
    as a float32 tensor on ``device``."""
    normalize = similarity == "cosine"
    if not scipy.sparse.issparse(a) and not scipy.sparse.issparse(b):
        ta = torch.as_tensor(a, dtype=torch.float32, device=device)
        tb = torch.as_tensor(b, dtype=torch.float32, device=device)
        if normalize:
            ta, tb = torch.nn.functional.normalize(ta, dim=1), torch.nn.functional.normalize(tb, dim=1)
        return ta @ tb.T

    def unit(x):
        if scipy.sparse.issparse(x):
            norm = np.sqrt(np.asarray(x.multiply(x).sum(axis=1))).ravel()
            return scipy.sparse.diags(1.0 / np.maximum(norm, 1e-12)) @ x.tocsr()
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    if normalize:
        a, b = unit(a), unit(b)
    if not scipy.sparse.issparse(a):  # dense x sparse: compute the transpose
        return _scores(b, a, device, "dot", chunk).T.contiguous()
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


# ------------------------------------------------------------------ embeddings
@dataclass(frozen=True, eq=False)
class ProxyEmbeddings:
    """The embeddings of one caption-proxy split, before any similarity is computed.

    Args:
        img (ndarray or scipy.sparse matrix): :obj:`[N, d]` cross-modal image side
            (the anchors, mapped when the cross encoder is ``"A->B"``).
        txt (ndarray or scipy.sparse matrix): :obj:`[M, d]` cross-modal text side.
        txt2img (Tensor): :obj:`[M]` the image of each text.
        img_intra (ndarray or sparse, optional): :obj:`[N, d']` intra-modal anchor embeddings.
        txt_intra (ndarray or sparse, optional): :obj:`[M, d']` intra-modal text embeddings.
        name (str, optional): the split's name.
        similarity (str, optional): how ``img`` and ``txt`` rows score a pair:
            ``"cosine"``, or ``"dot"`` for a query-document scorer such as BM25
            (``img`` holds the anchors' query rows, ``txt`` the texts' document
            rows; default: ``"cosine"``). The intra-modal similarities are cosines.
    """

    img: Embeddings
    txt: Embeddings
    txt2img: Tensor
    img_intra: Optional[Embeddings] = None
    txt_intra: Optional[Embeddings] = None
    name: str = ""
    similarity: str = "cosine"

    def __post_init__(self) -> None:
        check_similarity(self.similarity)

    @property
    def num_images(self) -> int:
        """Number of images ``N`` (anchors)."""
        return self.img.shape[0]

    @property
    def num_texts(self) -> int:
        """Number of texts ``M``."""
        return self.txt.shape[0]

    def subset(self, images: Union[Sequence[int], np.ndarray, Tensor]) -> "ProxyEmbeddings":
        """The embeddings of the given images and all their texts (``txt2img`` re-indexed)."""
        images = np.asarray(torch.as_tensor(images).long().cpu())
        if images.ndim != 1 or images.size == 0 or images.min() < 0 or images.max() >= self.num_images:
            raise ValueError(f"images: expected a non-empty 1-D index into [0, {self.num_images})")
        new_id = np.full(self.num_images, -1, dtype=np.int64)
        new_id[images] = np.arange(images.size)
        t2i = self.txt2img.cpu().numpy()
        texts = np.flatnonzero(new_id[t2i] >= 0)
        return ProxyEmbeddings(self.img[images], self.txt[texts], torch.as_tensor(new_id[t2i[texts]]),
                               _rows(self.img_intra, images), _rows(self.txt_intra, texts), self.name,
                               self.similarity)

    def bundle(self, device: Union[str, torch.device] = "cpu", keep_embeddings: bool = False) -> SimilarityBundle:
        """Dense similarities as a :class:`~pillargraph.SimilarityBundle`.

        Args:
            device: where the bundle lives (default: CPU).
            keep_embeddings: also store the cross-modal embeddings (made dense) as
                ``img_emb`` / ``txt_emb`` (default: False). Whatever reads them
                takes cosines, so only a ``"cosine"`` split can keep them.

        Raises:
            ValueError: ``keep_embeddings`` with ``similarity="dot"``.
        """
        if keep_embeddings and self.similarity != "cosine":
            raise ValueError(f"keep_embeddings: the cross-modal scores are {self.similarity!r} products of "
                             "query and document rows, not cosines of embeddings; nothing could use them")
        device = torch.device(device)
        fields: Dict[str, Any] = dict(sim_i2t=_scores(self.img, self.txt, device, self.similarity),
                                      txt2img=self.txt2img.to(device))
        if self.img_intra is not None:
            fields["sim_i2i"] = _scores(self.img_intra, self.img_intra, device)
            fields["sim_t2t"] = _scores(self.txt_intra, self.txt_intra, device)
        if keep_embeddings:
            fields["img_emb"] = torch.as_tensor(_dense(self.img), dtype=torch.float32, device=device)
            fields["txt_emb"] = torch.as_tensor(_dense(self.txt), dtype=torch.float32, device=device)
        return SimilarityBundle(**fields)

    def lists(self, k: Union[int, Dict[str, int]] = 100, *, backend: str = "auto",
              chunk_size: Optional[int] = None, device: Union[str, torch.device, None] = None,
              progress: bool = False, episodes: Optional[Sequence[Tensor]] = None) -> NeighborLists:
        """Top-``k`` neighbour lists of all four kinds, never a dense matrix.

        Dense embeddings are kept for exact pair similarities; sparse (raw TF-IDF,
        BM25) and ``"dot"`` ones are not, so their kind's pairs are answered from the
        lists (see :meth:`~pillargraph.data.NeighborLists.gather`). With ``episodes``
        (e.g. :func:`~pillargraph.data.partition.episode_partition`), each row is
        searched within its episode only.

        Raises:
            ValueError: the split has no intra-modal embeddings.
        """
        if self.img_intra is None:
            raise ValueError("intra: the split was embedded without an intra encoder; neighbour lists "
                             "need i2i and t2t lists")
        return NeighborLists.from_embeddings(self.img, self.txt, self.txt2img, k, self.img_intra,
                                             self.txt_intra, backend=backend, chunk_size=chunk_size,
                                             device=device, progress=progress, episodes=episodes,
                                             cross_similarity=self.similarity)

    def episodic(self, sizes: Union[int, Sequence[int]], seed: int = 0,
                 device: Union[str, torch.device] = "cpu") -> EpisodicSimilarity:
        """Every image in the dense episodes of :func:`~pillargraph.data.partition.episode_partition`,
        with the split's own ids: what ``EpisodicSimilarity.from_bundle(self.bundle(), sizes, seed)``
        gives, without ever making the whole split's dense matrices."""
        parts = episode_partition(self.num_images, sizes, seed)
        texts = [episode_texts(self.txt2img, p) for p in parts]
        return EpisodicSimilarity([self.subset(p).bundle(device) for p in parts], image_ids=parts, text_ids=texts)

    def episodes(self, images_per_episode: int, device: Union[str, torch.device] = "cpu",
                 seed: Optional[int] = None) -> EpisodicSimilarity:
        """The split cut into dense episodes of ``images_per_episode`` images and their texts.

        Images are taken in file order (or in a random order drawn from ``seed``);
        the ``N mod images_per_episode`` images left over are dropped.

        Raises:
            ValueError: ``images_per_episode`` is not in ``[2, N]``, or episodes
                would have different caption counts.
        """
        n = self.num_images
        if isinstance(images_per_episode, bool) or not isinstance(images_per_episode, int) \
                or not 2 <= images_per_episode <= n:
            raise ValueError(f"images_per_episode: expected an int in [2, {n}], got {images_per_episode!r}")
        order = np.arange(n) if seed is None else \
            np.asarray(torch.randperm(n, generator=torch.Generator().manual_seed(seed)))
        count = n // images_per_episode
        blocks = order[:count * images_per_episode].reshape(count, images_per_episode)
        return EpisodicSimilarity([self.subset(np.sort(b)).bundle(device) for b in blocks])


class _Encoders:
    """Named encoders of one proxy build, each created (and fitted, for TF-IDF, LSA and BM25) once."""

    def __init__(self, root: Optional[PathLike], captions_per_image: int, tfidf_fit: Sequence[str],
                 device: torch.device, batch_size: int) -> None:
        self.root, self.cpi, self.tfidf_fit = root, captions_per_image, tfidf_fit
        self.device, self.batch_size = device, batch_size
        self._made: Dict[str, TextEncoder] = {}
        self._fit_texts: Optional[list] = None

    def fit_texts(self) -> list:
        """The captions of the ``tfidf_fit`` splits, read once."""
        if not self.tfidf_fit:
            raise ValueError("tfidf_fit: name at least one split to fit TF-IDF, LSA or BM25 on")
        if self._fit_texts is None:
            self._fit_texts = [c for s in self.tfidf_fit for c in load_caption_split(s, self.root, self.cpi).captions]
        return self._fit_texts

    @staticmethod
    def check(spec: EncoderLike, arg: str, cosine_as: Optional[str] = None) -> TextEncoder:
        """The encoder ``spec`` names, unfitted and unloaded (``arg`` names the argument in errors); with
        ``cosine_as``, the role it would play, a query-document scorer is refused."""
        if isinstance(spec, TextEncoder):
            enc = spec
        elif isinstance(spec, str):
            enc = resolve_text_encoder(spec)
        else:
            raise ValueError(f"{arg}: expected an encoder name or a TextEncoder, got {type(spec).__name__}")
        _require_cosine(enc, arg, cosine_as)
        return enc

    def get(self, spec: EncoderLike, arg: str) -> TextEncoder:
        """The encoder ``spec`` names, made (and fitted) once per build; an instance is returned as is."""
        enc = self.check(spec, arg)
        if isinstance(spec, TextEncoder):
            return spec
        if enc.name not in self._made:
            if isinstance(enc, FittedTextEncoder):
                enc.fit(self.fit_texts())
            elif isinstance(enc, MiniLMEncoder):
                enc = MiniLMEncoder(device=str(self.device), batch_size=self.batch_size)
            self._made[enc.name] = enc
        return self._made[enc.name]


def _parse_cross(cross: CrossLike) -> Tuple[bool, Any]:
    """``(mapped, spec)``: ``"A->B"`` and pairs become ``(True, (A, B))``."""
    if isinstance(cross, str) and "->" in cross:
        pair = tuple(p.strip() for p in cross.split("->"))
        if len(pair) != 2 or not all(pair):
            raise ValueError(f"cross: expected 'A->B', got {cross!r}")
        cross = pair
    if isinstance(cross, tuple):
        if len(cross) != 2:
            raise ValueError(f"cross: a mapped cross encoder is a pair (A, B), got {len(cross)} items")
        return True, cross
    return False, cross


def caption_proxy_embeddings(split: Union[str, PathLike, CaptionSplit], cross: CrossLike = "minilm",
                             intra: Optional[EncoderLike] = "minilm", *, anchor: int = 0,
                             root: Optional[PathLike] = None, captions_per_image: int = CAPTIONS_PER_IMAGE,
                             tfidf_fit: Sequence[str] = ("f30k_dev", "coco_dev"),
                             map_split: Union[str, PathLike, CaptionSplit] = "coco_dev",
                             map_ridge: float = 1.0, cache_dir: Optional[PathLike] = None,
                             use_cache: bool = True, device: Union[str, torch.device] = "cpu",
                             batch_size: int = 64) -> ProxyEmbeddings:
    """Embed a caption-proxy split (see the module docstring); every caption file once per encoder, cached.

    Args:
        split: split name (``"f30k_test"``, ``"f30k_train"``, ...), caption-file
            path or :class:`~pillargraph.data.CaptionSplit`.
        cross: encoder of the cross-modal score: a name from
            :data:`~pillargraph.data.text_encoders.TEXT_ENCODERS` (``"minilm"``,
            ``"tfidf"``, ``"lsa"``, ``"bm25"``), ``"A->B"`` (e.g.
            ``"tfidf->minilm"``; cosine encoders only), a fitted
            :class:`~pillargraph.data.TextEncoder`, or a pair ``(A, B)`` for the
            mapped form (default: ``"minilm"``).
        intra: encoder of the intra-modal similarities (a cosine encoder, so not
            ``"bm25"``), or ``None`` to leave them out (default: ``"minilm"``).
        anchor: which caption of each image is its anchor (default: 0).
        root: the caption folder (see :func:`~pillargraph.data.captions_root`).
        captions_per_image: consecutive lines per image in the files (default: 5).
        tfidf_fit: splits whose captions fit every corpus-fitted encoder named here
            (``"tfidf"``, ``"lsa"``, ``"bm25"``; default: the Flickr30K and COCO dev
            splits, so no test caption shapes the vocabulary, IDF weights, SVD basis
            or BM25 statistics).
        map_split: split that trains the ``"A->B"`` map (default: ``"coco_dev"``);
            must differ from ``split``.
        map_ridge: ridge penalty of the map (default: 1.0).
        cache_dir: the embedding cache folder (default: ``~/.cache/pillargraph/embeddings``).
        use_cache: read and write the embedding cache (default: True).
        device: where the encoders run (default: ``"cpu"``).
        batch_size: MiniLM batch size (default: 64).

    Raises:
        FileNotFoundError: caption folder or split missing.
        ModuleNotFoundError: an encoder's optional packages (the ``bench`` extra) are missing.
        ValueError: bad arguments, e.g. an unknown encoder name, or a ``"dot"``
            scorer (BM25) as ``intra`` or as a side of ``"A->B"``.
    """
    data = load_caption_split(split, root, captions_per_image)
    anchors, texts, txt2img = data.anchor_split(anchor)
    encoders = _Encoders(root, captions_per_image, tfidf_fit, torch.device(device), batch_size)
    mapped, spec = _parse_cross(cross)
    # check every name and role first: a typo or a misplaced BM25 fails before anything is fitted or encoded
    side = "a side of a mapped 'A->B' cross encoder"
    roles = [(spec[0], "cross", side), (spec[1], "cross", side)] if mapped else [(spec, "cross", None)]
    for which, arg, role in roles + ([(intra, "intra", "an intra-modal similarity")] if intra is not None else []):
        encoders.check(which, arg, role)
    enc_a, enc_b = ((encoders.get(spec[0], "cross"), encoders.get(spec[1], "cross")) if mapped
                    else (encoders.get(spec, "cross"),) * 2)
    enc_g = encoders.get(intra, "intra") if intra is not None else None

    def embed(enc: TextEncoder, which: CaptionSplit, queries: bool = False) -> Embeddings:
        return encode_caption_split(which, enc, cache_dir=cache_dir, use_cache=use_cache, queries=queries)

    emb_b = embed(enc_b, data)
    if mapped:
        img_side = _mapped_anchors(embed, enc_a, enc_b, data, anchors, anchor, map_split, map_ridge,
                                   root, captions_per_image)
    else:  # a query-document scorer embeds the anchors as queries
        img_side = (embed(enc_b, data, queries=True) if enc_b.similarity == "dot" else emb_b)[anchors.numpy()]
    emb_g = None if enc_g is None else (emb_b if enc_g is enc_b else embed(enc_g, data))
    return ProxyEmbeddings(img_side, emb_b[texts.numpy()], txt2img,
                           None if emb_g is None else emb_g[anchors.numpy()],
                           None if emb_g is None else emb_g[texts.numpy()], data.name,
                           "cosine" if mapped else enc_b.similarity)


def _require_cosine(enc: TextEncoder, arg: str, role: Optional[str]) -> None:
    """Refuse a query-document scorer (``similarity="dot"``) as ``role``, where a symmetric cosine is needed
    (nothing to check without a role)."""
    if role is not None and enc.similarity != "cosine":
        raise ValueError(f"{arg}: {enc.name!r} is a query-document scorer ({enc.similarity!r} products of "
                         f"query and document rows, not symmetric), so it cannot be {role}; choose a cosine "
                         "encoder such as 'minilm', 'tfidf' or 'lsa'")


def _mapped_anchors(embed, enc_a: TextEncoder, enc_b: TextEncoder, data: CaptionSplit, anchors: Tensor,
                    anchor: int, map_split, map_ridge: float, root, captions_per_image: int) -> np.ndarray:
    """The anchors embedded by ``enc_a`` and mapped into ``enc_b``'s space by a ridge map."""
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
    return ((_dense(embed(enc_a, data)[anchors.numpy()]) - mx) @ w + my).astype(np.float32)


def caption_proxy_bundle(split: Union[str, PathLike, CaptionSplit], cross: CrossLike = "minilm",
                         intra: Optional[EncoderLike] = "minilm", *, keep_embeddings: bool = False,
                         device: Union[str, torch.device] = "cpu", **kwargs: Any) -> SimilarityBundle:
    """A caption-proxy split as a dense :class:`~pillargraph.SimilarityBundle`.

    Args:
        split, cross, intra: see :func:`caption_proxy_embeddings`.
        keep_embeddings: also store the cross-modal embeddings as ``img_emb`` /
            ``txt_emb`` (dense; default: False).
        device: where the encoders run and the bundle lives (default: ``"cpu"``).
        **kwargs: further :func:`caption_proxy_embeddings` arguments (``anchor``,
            ``root``, ``tfidf_fit``, ``map_split``, ``cache_dir``, ...).

    Returns:
        A bundle with ``N`` images and ``M = C - N`` texts.
    """
    emb = caption_proxy_embeddings(split, cross, intra, device=device, **kwargs)
    return emb.bundle(device, keep_embeddings=keep_embeddings)


def caption_proxy_lists(split: Union[str, PathLike, CaptionSplit], cross: CrossLike = "minilm",
                        intra: EncoderLike = "minilm", *, k: Union[int, Dict[str, int]] = 100,
                        backend: str = "auto", device: Union[str, torch.device] = "cpu",
                        progress: bool = False, **kwargs: Any) -> NeighborLists:
    """A caption-proxy split as :class:`~pillargraph.data.NeighborLists` (for splits too large to be dense).

    Args:
        split, cross, intra: see :func:`caption_proxy_embeddings` (``intra`` is required).
        k: neighbours per row, one depth or a dict by kind (default: 100).
        backend: top-k backend for dense embeddings (see
            :func:`~pillargraph.data.topk_neighbors`); raw TF-IDF always uses sparse
            products in row chunks.
        device: where the encoders run and the lists are computed (default: ``"cpu"``).
        progress: show progress bars (default: False).
        **kwargs: further :func:`caption_proxy_embeddings` arguments.
    """
    if intra is None:
        raise ValueError("intra: neighbour lists need an intra encoder for the i2i and t2t lists")
    emb = caption_proxy_embeddings(split, cross, intra, device=device, **kwargs)
    return emb.lists(k, backend=backend, device=device, progress=progress)
