r"""Dual softmax (DSL): weight each score by a softmax prior over the query axis.

Cheng et al., `"Improving Video-Text Retrieval by Multi-Stream Corpus Alignment
and Dual Softmax Loss" <https://arxiv.org/abs/2109.04290>`_ (2021).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..data.neighbors import NeighborLists
from ._chunks import check_scores
from .base import Reranker, RetrievalView, chunk_ranges, resolve_chunk_size

__all__ = ["DualSoftmax", "dual_softmax", "dual_softmax_scores", "DualSoftmaxPairs"]


def dual_softmax_scores(sim: Tensor, temperature: float = 1.0,
                 chunk_size: Optional[int] = None) -> Tensor:
    r"""Multiply each score by the softmax of its column over all queries.

    .. math::
        s'(q, g) = s(q, g) \cdot
            \frac{\exp(s(q, g) / \tau)}{\sum_{q'} \exp(s(q', g) / \tau)}

    where :math:`q'` runs over *all test queries* (the method is transductive).

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        temperature (float, optional): :math:`\tau` (default: 1).
        chunk_size (int, optional): gallery columns per block (default: from the
            memory budget).

    Returns:
        :obj:`[Q, G]` re-scored matrix.
    """
    check_scores(sim, "sim")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
            or not temperature > 0:
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    out = torch.empty_like(sim)
    step = resolve_chunk_size(chunk_size, sim.shape[1], 2 * sim.shape[0])
    for a, b in chunk_ranges(sim.shape[1], step):
        block = sim[:, a:b]
        out[:, a:b] = block * torch.softmax(block / temperature, dim=0)
    return out


class DualSoftmax(Reranker):
    r"""Dual softmax inference (DSL), as a :class:`Reranker`.

    See :func:`dual_softmax_scores`. The prior of every gallery item is a softmax over
    all test queries at once, so the method is flagged transductive.

    Args:
        temperature (float, optional): softmax temperature (default: 1).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]`.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "dual_softmax"
    aliases = ("dsl",)
    transductive = True

    def __init__(self, temperature: float = 1.0) -> None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not temperature > 0:
            raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
        self.temperature = float(temperature)

    def rerank(self, view: RetrievalView) -> Tensor:
        return dual_softmax_scores(view.sim, self.temperature, view.chunk_size)


def dual_softmax(bundle: SimilarityBundle, temperature: float = 1.0,
                 **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`DualSoftmax`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return DualSoftmax(temperature=temperature)(bundle, **call_kwargs)


class DualSoftmaxPairs:
    r"""Dual softmax scores of any (query, gallery item) pairs of a split given as neighbour lists.

    The softmax over the queries of gallery item :math:`g` runs over the queries
    in :math:`g`'s own list (its ``t2i`` list for image queries, its ``i2t``
    list for caption queries), plus the pair's own query when that list does
    not hold it. Lists that hold every query give the dense
    :func:`dual_softmax_scores` exactly; shallower lists leave out the queries
    that score :math:`g` lowest, whose terms are the smallest of the sum.

    Args:
        lists (NeighborLists): the split.
        temperature (float, optional): :math:`\tau` (default: 1).
    """

    def __init__(self, lists: NeighborLists, temperature: float = 1.0) -> None:
        DualSoftmax(temperature)  # validates the temperature
        self.lists, self.temperature = lists, float(temperature)
        self._norm = {}
        for kind, reverse in (("i2t", "t2i"), ("t2i", "i2t")):
            score = lists.lists(reverse)[1].double()
            top = score[:, :1]
            self._norm[kind] = (top[:, 0], torch.exp((score - top) / self.temperature).sum(1), reverse)

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Scores of the ``kind`` pairs ``(rows, cols)`` (``'i2t'`` or ``'t2i'``), broadcast together."""
        if kind not in self._norm:
            raise ValueError(f"kind: expected 'i2t' or 't2i', got {kind!r}")
        s = self.lists.gather(kind, rows, cols).double()
        top, z, reverse = self._norm[kind]
        cols = torch.broadcast_to(cols.to(s.device), s.shape)
        top, z = top[cols], z[cols]
        own = torch.exp((s - top) / self.temperature)
        stored = self.lists.find(reverse, cols, torch.broadcast_to(rows.to(s.device), s.shape))
        return (s * own / torch.where(stored, z, z + own)).float()
