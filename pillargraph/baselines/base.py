r"""The common interface of every training-free re-ranker.

A re-ranker reads a :class:`~pillargraph.SimilarityBundle` (plus a
:class:`~pillargraph.baselines.QueryBank` where it needs extra queries) and
returns re-scored similarities, never bare indices, so that results can be
chained, fused and evaluated with the same code.

Every method is written once, direction-agnostically, against a
:class:`RetrievalView`: the queries, the gallery and the matrices seen from one
side. For image-to-text retrieval the queries are images and the gallery is
captions, so the *query-side* intra matrix is ``sim_i2i`` and the
*gallery-side* one is ``sim_t2t``; for text-to-image retrieval it is the other
way round. The base class builds the views, checks that everything the method
declares it needs is present, calls :meth:`Reranker.rerank` per direction, and
lays the result out as :obj:`[N, M]` again.
"""
from __future__ import annotations

import inspect
import warnings
from dataclasses import dataclass
from typing import Any, ClassVar, Dict, Iterable, Iterator, Optional, Sequence, Union

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..device import resolve_device
from .bank import QueryBank

__all__ = ["Reranker", "RetrievalView", "DIRECTIONS", "resolve_chunk_size", "chunk_ranges",
           "weight_matrix", "chunked_topk", "topk_without_boundary_ties", "tie_positions", "normalize_name",
           "fill_unreached", "REGISTRY"]

#: The two retrieval directions, in the order results are reported.
DIRECTIONS: tuple[str, ...] = ("i2t", "t2i")

#: Working-memory budget of one chunk, in tensor elements (2^26 float32 = 256 MiB).
WORK_ELEMENTS = 1 << 26

# Float dtypes computed in float32 (see Reranker.__call__).
_HALF = (torch.float16, torch.bfloat16)

#: Every registered :class:`Reranker` subclass, by normalised name and alias (see :func:`normalize_name`).
REGISTRY: Dict[str, type] = {}


def normalize_name(name: str) -> str:
    """Lower-case a method name and drop separators: ``'Alpha-QE'`` -> ``'alphaqe'``."""
    return "".join(ch for ch in str(name).lower() if ch not in "_- .")


@dataclass(frozen=True)
class RetrievalView:
    r"""One retrieval direction seen from its queries.

    Args:
        direction (str): ``'i2t'`` or ``'t2i'``.
        sim (Tensor): query-gallery scores :obj:`[Q, G]`.
        query_intra (Tensor, optional): query-query scores :obj:`[Q, Q]`.
        gallery_intra (Tensor, optional): gallery-gallery scores :obj:`[G, G]`.
        query_bank (Tensor, optional): extra queries scored against the
            gallery :obj:`[B, G]` (e.g. training images against the test
            captions for ``'i2t'``).
        gallery_bank (Tensor, optional): extra gallery items scored against the
            queries, laid out :obj:`[B', Q]` (one row per extra gallery item).
        query_emb (Tensor, optional): query embeddings :obj:`[Q, d]`.
        gallery_emb (Tensor, optional): gallery embeddings :obj:`[G, d]`.
        chunk_size (int, optional): query rows per chunk chosen by the caller;
            ``None`` lets each method size chunks from a memory budget.
    """

    direction: str
    sim: Tensor
    query_intra: Optional[Tensor] = None
    gallery_intra: Optional[Tensor] = None
    query_bank: Optional[Tensor] = None
    gallery_bank: Optional[Tensor] = None
    query_emb: Optional[Tensor] = None
    gallery_emb: Optional[Tensor] = None
    chunk_size: Optional[int] = None

    @property
    def num_queries(self) -> int:
        """Number of queries ``Q``."""
        return self.sim.shape[0]

    @property
    def num_gallery(self) -> int:
        """Number of gallery items ``G``."""
        return self.sim.shape[1]

    def chunk(self, row_elements: int, total: Optional[int] = None) -> int:
        """Rows per chunk for a loop whose rows each need ``row_elements`` temporaries."""
        return resolve_chunk_size(self.chunk_size, self.num_queries if total is None else total,
                                  row_elements)

    @classmethod
    def from_bundle(cls, bundle: SimilarityBundle, direction: str,
                    bank: Optional[QueryBank] = None,
                    chunk_size: Optional[int] = None) -> "RetrievalView":
        """The view of ``bundle`` for ``direction`` (transposed for ``'t2i'``)."""
        b_i2t = bank.bank_i2t if bank is not None else None
        b_t2i = bank.bank_t2i if bank is not None else None
        if direction == "i2t":
            return cls("i2t", bundle.sim_i2t, bundle.sim_i2i, bundle.sim_t2t, b_i2t, b_t2i,
                       bundle.img_emb, bundle.txt_emb, chunk_size)
        if direction == "t2i":
            return cls("t2i", bundle.t2i_scores, bundle.sim_t2t, bundle.sim_i2i, b_t2i, b_i2t,
                       bundle.txt_emb, bundle.img_emb, chunk_size)
        raise ValueError(f"direction: expected one of {list(DIRECTIONS)}, got {direction!r}")


def resolve_chunk_size(chunk_size: Optional[int], total: int, row_elements: int,
                       budget: int = WORK_ELEMENTS) -> int:
    """Rows per chunk: ``chunk_size`` if given, else as many as fit ``budget`` elements.

    Args:
        chunk_size: user choice, a positive int or ``None``.
        total: number of rows to process.
        row_elements: temporary tensor elements one row needs.
        budget: elements allowed per chunk (default: ``2**26``, 256 MiB of float32).
    """
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
            raise ValueError(f"chunk_size: expected a positive int or None, got {chunk_size!r}")
        return min(chunk_size, max(total, 1))
    return max(1, min(max(total, 1), budget // max(int(row_elements), 1)))


def chunk_ranges(total: int, size: int) -> Iterator[tuple[int, int]]:
    """``(start, stop)`` pairs covering ``range(total)`` in steps of ``size``."""
    for a in range(0, total, size):
        yield a, min(a + size, total)


def weight_matrix(index: Tensor, weight: Tensor, num_columns: int) -> Tensor:
    """The sparse :obj:`[R, num_columns]` matrix whose row ``r`` holds ``weight[r, j]`` at column ``index[r, j]``.

    Multiplying by it sums weighted rows or columns of a dense matrix
    (``torch.sparse.mm``) without gathering the :obj:`[R, j, C]` block a dense
    gather would build. Indices of one row must differ.
    """
    r, j = index.shape
    rows = torch.arange(r, device=index.device).repeat_interleave(j)
    return torch.sparse_coo_tensor(torch.stack([rows, index.reshape(-1)]), weight.reshape(-1),
                                   (r, num_columns), check_invariants=False).coalesce()  # topk indices


def chunked_topk(scores: Tensor, k: int, chunk_size: Optional[int] = None,
                 exclude_self: bool = False) -> tuple[Tensor, Tensor]:
    """Row-wise top-``k`` of a dense matrix, computed in row chunks.

    Args:
        scores: :obj:`[R, C]` scores.
        k: neighbours per row, at most ``C`` (``C - 1`` with ``exclude_self``).
        chunk_size: rows per chunk (default: from the memory budget).
        exclude_self: for a square matrix, never return the diagonal entry.

    Returns:
        ``(values, indices)``, each :obj:`[R, k]`, sorted by decreasing score.
    """
    r, c = scores.shape
    if exclude_self and r != c:
        raise ValueError(f"exclude_self: needs a square matrix, got {tuple(scores.shape)}")
    if k < 0 or k > c - int(exclude_self):
        raise ValueError(f"k: expected 0..{c - int(exclude_self)}, got {k}")
    vals = scores.new_empty((r, k))
    idx = torch.empty((r, k), dtype=torch.long, device=scores.device)
    step = resolve_chunk_size(chunk_size, r, 2 * c)
    for a, b in chunk_ranges(r, step):
        block = scores[a:b]
        if exclude_self:
            block = block.clone()
            rows = torch.arange(b - a, device=scores.device)
            block[rows, rows + a] = float("-inf")
        vals[a:b], idx[a:b] = block.topk(k, dim=1)
    return vals, idx


def topk_without_boundary_ties(scores: Tensor, k: int, chunk_size: Optional[int] = None,
                               exclude_self: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """Row-wise top-``k`` that never lets index order decide who makes the cut.

    Items tied with the best item left out (the ``k + 1``-th) cannot all fit,
    and choosing among them would follow their position in the gallery; so
    none of them is kept (the pessimistic choice). On all-equal scores nothing
    is kept.

    Returns:
        ``(values, indices, keep)``, each :obj:`[R, k]`, sorted by decreasing
        score; ``keep`` is False for the dropped entries, which are always a
        suffix of each row.
    """
    available = scores.shape[1] - int(exclude_self)
    if k >= available:
        vals, idx = chunked_topk(scores, k, chunk_size, exclude_self)
        return vals, idx, torch.ones_like(idx, dtype=torch.bool)
    vals, idx = chunked_topk(scores, k + 1, chunk_size, exclude_self)
    keep = vals[:, :k] > vals[:, k:]
    return vals[:, :k], idx[:, :k], keep


def tie_positions(values: Tensor) -> Tensor:
    """0-based positions in rows sorted by decreasing value, tied entries sharing the last
    (worst) position of their group: ``[3, 2, 2, 1] -> [0, 2, 2, 3]``."""
    neg = (-values).contiguous()
    return torch.searchsorted(neg, neg, right=True) - 1


def _tied_neighbours(scores: Tensor, k: int) -> int:
    """How many adjacent pairs of the rows' top-``k`` lists hold equal scores."""
    top = chunked_topk(scores, k)[0]
    return int((top[:, 1:] == top[:, :-1]).sum())


def fill_unreached(scores: Tensor, reached: Tensor, base: Tensor) -> Tensor:
    """Rank the items a graph method never reached after the reached ones, in base order.

    Graph methods (diffusion, ECN) give exactly zero to gallery items outside
    the query's neighbourhood; left as ties they would all share the worst
    rank. Here they keep the order of the base scores instead, strictly below
    every reached item of the same row.

    Args:
        scores: :obj:`[Q, G]` method scores.
        reached: :obj:`[Q, G]` bool, where ``scores`` are meaningful.
        base: :obj:`[Q, G]` base scores that order the rest.
    """
    inf = torch.tensor(float("inf"), dtype=scores.dtype, device=scores.device)
    lo = torch.where(reached, scores, inf).min(dim=1, keepdim=True).values
    lo = torch.where(torch.isinf(lo), torch.zeros_like(lo), lo)
    bmax = base.max(dim=1, keepdim=True).values
    span = (bmax - base.min(dim=1, keepdim=True).values).clamp_min(torch.finfo(base.dtype).tiny)
    fallback = lo - 1 - (bmax - base) / span  # within [lo - 2, lo - 1]
    return torch.where(reached, scores, fallback.to(scores.dtype))


class Reranker:
    r"""Base class of the training-free re-rankers.

    Subclasses set the class attributes below, take their published defaults
    as ``__init__`` keyword arguments (stored under the same attribute names,
    which :meth:`params` and ``__repr__`` read back) and implement
    :meth:`rerank` for one :class:`RetrievalView`. A subclass with a ``name`` is
    registered for :func:`~pillargraph.baselines.get_reranker` when its module
    is imported.

    Attributes:
        name (str): snake_case method name, e.g. ``'alpha_qe'``.
        aliases (tuple[str, ...]): other names the resolver accepts.
        directions (tuple[str, ...]): directions the method supports.
        needs_intra (bool): reads intra-modal matrices; which sides is said
            by ``intra_sides`` (``'query'``, ``'gallery'``).
        needs_bank (bool): reads a query bank; ``bank_sides`` says which rows:
            ``'query'`` (extra queries against the gallery) and/or
            ``'gallery'`` (extra gallery items against the queries).
        needs_embeddings (bool): reads raw embeddings of both modalities.
        transductive (bool): a query's scores depend on the other test queries.
        scale_invariant (bool): multiplying every score by ``c > 0`` leaves the
            ranking unchanged. Methods without it (a temperature, a power of
            the scores, a blend with a bounded score) assume cosine
            similarities; :meth:`__call__` warns when the scores leave
            ``[-1, 1]`` (counting the top-10 pairs the result ties that the
            input told apart) and refuses a result that is not finite.
    """

    name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    directions: ClassVar[tuple[str, ...]] = DIRECTIONS
    needs_intra: ClassVar[bool] = False
    intra_sides: ClassVar[tuple[str, ...]] = ("gallery",)
    needs_bank: ClassVar[bool] = False
    bank_sides: ClassVar[tuple[str, ...]] = ("query",)
    needs_embeddings: ClassVar[bool] = False
    transductive: ClassVar[bool] = False
    scale_invariant: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.name:
            return
        bad = [d for d in cls.directions if d not in DIRECTIONS]
        if bad or not cls.directions:
            raise TypeError(f"{cls.__name__}.directions: expected a non-empty subset of "
                            f"{list(DIRECTIONS)}, got {cls.directions}")
        for key in {normalize_name(cls.name), normalize_name(cls.__name__),
                    *(normalize_name(a) for a in cls.aliases)}:
            other = REGISTRY.get(key)
            if other is not None and other is not cls and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"re-ranker name {key!r} of {cls.__name__} is already taken by "
                                f"{other.__name__}")
            REGISTRY[key] = cls

    # --------------------------------------------------------------- metadata
    @classmethod
    def needs(cls) -> Dict[str, Any]:
        """The need flags, for reports: intra, bank, embeddings, transductive, directions."""
        return {"intra": cls.needs_intra, "bank": cls.needs_bank,
                "embeddings": cls.needs_embeddings, "transductive": cls.transductive,
                "directions": tuple(cls.directions)}

    def params(self) -> Dict[str, Any]:
        """The defining ``__init__`` arguments and their current values."""
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in list(sig.parameters)[1:]
                if sig.parameters[p].kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                              inspect.Parameter.KEYWORD_ONLY)
                and hasattr(self, p)}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------- call
    def _directions(self, directions: Union[str, Iterable[str], None]) -> tuple[str, ...]:
        if directions is None:
            return tuple(self.directions)
        if isinstance(directions, str):
            directions = (directions,)
        out = []
        for d in directions:
            if d not in DIRECTIONS:
                raise ValueError(f"directions: unknown direction {d!r}; choose from "
                                 f"{list(DIRECTIONS)}")
            if d not in self.directions:
                raise ValueError(f"directions: {self.name} supports only {list(self.directions)}, "
                                 f"not {d!r}")
            if d not in out:
                out.append(d)
        if not out:
            raise ValueError("directions: empty; choose from " f"{list(self.directions)}")
        return tuple(out)

    def check_inputs(self, view: RetrievalView) -> None:
        """Raise :class:`ValueError` if ``view`` lacks something this method needs."""
        d = view.direction
        q_mod, g_mod = ("image", "caption") if d == "i2t" else ("caption", "image")
        if self.needs_intra:
            fields = {"query": ("sim_i2i" if d == "i2t" else "sim_t2t", view.query_intra),
                      "gallery": ("sim_t2t" if d == "i2t" else "sim_i2i", view.gallery_intra)}
            missing = [fields[s][0] for s in self.intra_sides if fields[s][1] is None]
            if missing:
                raise ValueError(
                    f"{self.name} ({d}) needs the intra-modal matrix {' and '.join(missing)}, which "
                    f"the bundle lacks; build the bundle with SimilarityBundle.from_embeddings(...) "
                    f"or fill it from sim_i2t with bundle.with_second_order_intra()")
        if self.needs_bank:
            fields = {"query": ("bank_i2t" if d == "i2t" else "bank_t2i", view.query_bank,
                                f"extra {q_mod}s scored against the test {g_mod}s"),
                      "gallery": ("bank_t2i" if d == "i2t" else "bank_i2t", view.gallery_bank,
                                  f"extra {g_mod}s scored against the test {q_mod}s")}
            missing = [fields[s] for s in self.bank_sides if fields[s][1] is None]
            if missing:
                what = "; ".join(f"{f} ({why})" for f, _, why in missing)
                raise ValueError(
                    f"{self.name} ({d}) needs a query bank with {what}; pass bank=QueryBank(...), "
                    f"e.g. QueryBank.from_embeddings(bundle, bank_img_emb=..., bank_txt_emb=...) "
                    f"with training-set embeddings")
        if self.needs_embeddings and (view.query_emb is None or view.gallery_emb is None):
            raise ValueError(f"{self.name} ({d}) needs img_emb and txt_emb, which the bundle lacks; "
                             f"build it with SimilarityBundle.from_embeddings(..., "
                             f"keep_embeddings=True)")

    def __call__(self, bundle: SimilarityBundle, bank: Optional[QueryBank] = None,
                 directions: Union[str, Sequence[str], None] = None,
                 device: Union[str, torch.device, None] = None,
                 chunk_size: Optional[int] = None) -> Dict[str, Tensor]:
        """Re-score ``bundle`` in the requested directions.

        Args:
            bundle: the test split's scores.
            bank: extra queries scored against the test gallery, for methods
                with ``needs_bank`` (ignored by the others).
            directions: ``'i2t'``, ``'t2i'`` or both (default: all the method supports).
            device: where to compute (default: the bundle's device).
            chunk_size: query rows per chunk (default: sized from a 256 MiB budget).

        Returns:
            ``{direction: scores}``, each :obj:`[N, M]` like ``bundle.sim_i2t``.
            ``scores['i2t']`` ranks captions along each row (image queries),
            ``scores['t2i']`` ranks images along each column (caption queries);
            evaluate them with :func:`~pillargraph.baselines.evaluate_rescored`.
            Half-precision inputs (float16, bfloat16) are computed, and returned,
            in float32: several methods' sparse products have no half-precision
            kernels, and their sums would lose the ties and small gaps they rank by.
        """
        if not isinstance(bundle, SimilarityBundle):
            raise ValueError(f"bundle: expected a SimilarityBundle, got {type(bundle).__name__}")
        if bank is not None and not isinstance(bank, QueryBank):
            raise ValueError(f"bank: expected a QueryBank or None, got {type(bank).__name__}")
        dirs = self._directions(directions)
        resolve_chunk_size(chunk_size, 1, 1)  # validates the argument early
        dtype = torch.float32 if bundle.sim_i2t.dtype in _HALF else None
        if device is not None or dtype is not None:
            bundle = bundle.to(resolve_device(device) if device is not None else None, dtype=dtype)
        if bank is not None:
            bank.validate_against(bundle)
            half = any(t is not None and t.dtype in _HALF for t in (bank.bank_i2t, bank.bank_t2i))
            bank = bank.to(bundle.device, dtype=torch.float32 if half else None)
        views = [RetrievalView.from_bundle(bundle, d, bank, chunk_size) for d in dirs]
        for view in views:
            self.check_inputs(view)
        out: Dict[str, Tensor] = {}
        for view in views:
            with torch.no_grad():
                scores = self.rerank(view)
            if scores.shape != view.sim.shape:
                raise RuntimeError(f"{type(self).__name__}.rerank returned shape "
                                   f"{tuple(scores.shape)}, expected {tuple(view.sim.shape)}")
            self._check_scale(view, scores)
            out[view.direction] = scores if view.direction == "i2t" else scores.T
        return out

    def _check_scale(self, view: RetrievalView, scores: Tensor) -> None:
        """Refuse a non-finite result; warn when a method that is not scale invariant gets scores
        outside ``[-1, 1]`` (saying how many top-10 pairs the result ties that the input told apart)."""
        top = float(view.sim.abs().max())
        note = (f"{self.name} ({view.direction}) depends on the scale of the scores and its defaults "
                f"assume cosine similarities in [-1, 1], but these reach {top:.3g}: rescale them "
                f"(e.g. L2-normalise the embeddings) or tune its parameters")
        if not bool(torch.isfinite(scores).all()):
            raise ValueError(f"{self.name} ({view.direction}): the re-scored matrix is not finite; {note}")
        if self.scale_invariant or top <= 1 + 1e-3:
            return
        k = min(11, view.num_gallery)
        lost = _tied_neighbours(scores, k) - _tied_neighbours(view.sim, k)
        if lost > 0:
            note += f"; the result ties {lost} more adjacent top-{k - 1} pairs than the input"
        warnings.warn(note, stacklevel=3)

    def rerank(self, view: RetrievalView) -> Tensor:
        """Re-score one direction.

        Args:
            view: the queries, gallery and side information of one direction.

        Returns:
            :obj:`[Q, G]` scores, higher is better, ranked along each row.
        """
        raise NotImplementedError
