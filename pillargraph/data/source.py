"""Uniform access to the similarities of one split, dense or as top-k neighbour lists.

The pillar and graph builders only ever ask two questions of a split: *who are
the top-k neighbours of these rows* and *what is the similarity of these
(row, column) pairs*. :class:`SimilaritySource` is that interface;
:class:`DenseSimilarity` answers it from a :class:`~pillargraph.SimilarityBundle`
and :class:`~pillargraph.data.NeighborLists` from chunked top-k lists, so
MS-COCO-train-sized splits never need a dense matrix.
"""
from __future__ import annotations

from typing import Optional, Protocol, Tuple, runtime_checkable

import torch
from torch import Tensor

from ..bundle import SimilarityBundle

__all__ = ["KINDS", "SimilaritySource", "DenseSimilarity", "as_source", "check_kind", "gallery_size"]

#: The four similarity kinds: ``i2t`` (image rows, text columns), ``t2i``, ``i2i``, ``t2t``.
KINDS = ("i2t", "t2i", "i2i", "t2t")


def check_kind(kind: str) -> str:
    """Return ``kind`` or raise :class:`ValueError` listing the valid kinds."""
    if kind not in KINDS:
        raise ValueError(f"kind: unknown similarity kind {kind!r}; expected one of {list(KINDS)}")
    return kind


def gallery_size(source: "SimilaritySource", kind: str) -> int:
    """How many columns every row of ``kind`` ranks: the split's gallery of that modality, or for a split
    cut into episodes (:class:`~pillargraph.data.EpisodicSimilarity`, episodic
    :class:`~pillargraph.data.NeighborLists`) the smallest episode's, which bounds every list depth."""
    check_kind(kind)
    smallest = getattr(source, "smallest_gallery", None)
    if smallest is not None:
        return smallest(kind)
    return source.num_images if kind[2] == "i" else source.num_texts


@runtime_checkable
class SimilaritySource(Protocol):
    """What the pillar and graph builders need from a split.

    Rows and columns are indices into the modality named by the kind's first
    and second letter (``i`` images, ``t`` texts).
    """

    @property
    def num_images(self) -> int: ...

    @property
    def num_texts(self) -> int: ...

    @property
    def txt2img(self) -> Tensor: ...

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-``k`` columns of each row, sorted by decreasing score.

        Returns:
            ``(index, score)``, both of shape :obj:`[R, k]` (``R`` rows asked for).
        """
        ...

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Similarities of (row, column) pairs; ``rows`` and ``cols`` broadcast together."""
        ...


class DenseSimilarity:
    """A :class:`SimilaritySource` backed by the dense matrices of a bundle.

    Args:
        bundle (SimilarityBundle): the split. ``i2i`` / ``t2t`` queries need its
            intra-modal matrices; a missing one raises :class:`ValueError` that
            points at :meth:`~pillargraph.SimilarityBundle.with_second_order_intra`.
        chunk_size (int, optional): rows per :func:`torch.topk` call, which bounds
            temporary memory (default: :obj:`4096`).
    """

    def __init__(self, bundle: SimilarityBundle, chunk_size: int = 4096) -> None:
        if not isinstance(bundle, SimilarityBundle):
            raise ValueError(f"bundle: expected a SimilarityBundle, got {type(bundle).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be positive, got {chunk_size}")
        self.bundle = bundle
        self.chunk_size = chunk_size

    @property
    def num_images(self) -> int:
        return self.bundle.num_images

    @property
    def num_texts(self) -> int:
        return self.bundle.num_texts

    @property
    def txt2img(self) -> Tensor:
        return self.bundle.txt2img

    @property
    def device(self) -> torch.device:
        return self.bundle.device

    def matrix(self, kind: str) -> Tensor:
        """The dense matrix of ``kind`` (``t2i`` is a transposed view)."""
        check_kind(kind)
        b = self.bundle
        if kind == "i2t":
            return b.sim_i2t
        if kind == "t2i":
            return b.t2i_scores
        m = b.sim_i2i if kind == "i2i" else b.sim_t2t
        if m is None:
            field = "sim_i2i" if kind == "i2i" else "sim_t2t"
            raise ValueError(f"{field}: the bundle has no {field} matrix, which {kind} neighbours "
                             f"need; pass one, build the bundle with from_embeddings(), or derive it "
                             f"with bundle.with_second_order_intra()")
        return m

    def num_cols(self, kind: str) -> int:
        return self.matrix(kind).shape[1]

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        m = self.matrix(kind)
        if not 1 <= k <= m.shape[1]:
            raise ValueError(f"k: {k} neighbours asked for, but the {kind} gallery has "
                             f"{m.shape[1]} items")
        idx, val = [], []
        if rows is None:
            # all rows: rank slices in place (t2i: columns of sim_i2t), never copies of rows
            by_col = kind == "t2i" and self.bundle.sim_t2i is None
            src = self.bundle.sim_i2t if by_col else m
            for a in range(0, m.shape[0], self.chunk_size):
                block = src[:, a:a + self.chunk_size] if by_col else src[a:a + self.chunk_size]
                v, i = torch.topk(block, k, dim=0 if by_col else 1)
                idx.append(i.T if by_col else i)
                val.append(v.T if by_col else v)
        else:
            rows = rows.to(m.device)
            for a in range(0, rows.numel(), self.chunk_size):
                v, i = torch.topk(m[rows[a:a + self.chunk_size]], k, dim=1)
                idx.append(i)
                val.append(v)
        if not idx:
            return (torch.empty(0, k, dtype=torch.long, device=m.device),
                    torch.empty(0, k, dtype=m.dtype, device=m.device))
        return torch.cat(idx), torch.cat(val)

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        m = self.matrix(kind)
        return m[rows.to(m.device), cols.to(m.device)]

    def __repr__(self) -> str:
        return f"DenseSimilarity({self.bundle!r})"


def as_source(data) -> SimilaritySource:
    """Wrap a bundle as :class:`DenseSimilarity`; pass a source through unchanged."""
    if isinstance(data, SimilarityBundle):
        return DenseSimilarity(data)
    if isinstance(data, SimilaritySource):
        return data
    raise ValueError(f"data: expected a SimilarityBundle or a SimilaritySource (e.g. NeighborLists), "
                     f"got {type(data).__name__}")
