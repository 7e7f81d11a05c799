r"""NNN: nearest-neighbour normalisation against reference queries.

Chowdhury et al., `"Nearest Neighbor Normalization Improves Multimodal
Retrieval" <https://arxiv.org/abs/2410.24114>`_ (EMNLP 2024).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from ..bundle import SimilarityBundle
from ._chunks import check_bank, check_scores, column_topk_mean
from .bank import QueryBank
from .base import Reranker, RetrievalView

__all__ = ["NNN", "nnn", "nnn_scores", "nnn_bias"]


def nnn_bias(bank: Tensor, k: int = 256, chunk_size: Optional[int] = None) -> Tensor:
    r"""Each gallery item's mean score over its ``k`` most similar reference queries.

    .. math::
        b(g) = \frac{1}{k} \sum_{r \in \operatorname{top-}k_{\mathcal{B}}(g)} s(r, g)

    Args:
        bank (Tensor): :obj:`[B, G]` reference queries scored against the gallery.
        k (int, optional): reference neighbours per gallery item, ``k <= B`` (default: 256).
        chunk_size (int, optional): gallery columns per block.

    Returns:
        :obj:`[G]` bias.
    """
    check_scores(bank, "bank")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= bank.shape[0]:
        raise ValueError(f"k: expected an int in [1, {bank.shape[0]}] (the bank size), got {k!r}")
    return column_topk_mean(bank, k, chunk_size)


def nnn_scores(sim: Tensor, bank: Tensor, k: int = 256, alpha: float = 0.5,
        chunk_size: Optional[int] = None) -> Tensor:
    r"""Subtract ``alpha`` times each gallery item's :func:`nnn_bias`.

    .. math::
        s'(q, g) = s(q, g) - \alpha\, b(g)

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        bank (Tensor): :obj:`[B, G]` reference queries scored against the same gallery.
        k (int, optional): reference neighbours per gallery item (default: 256).
        alpha (float, optional): bias weight (default: 0.5).
        chunk_size (int, optional): gallery columns per block.

    Returns:
        :obj:`[Q, G]` re-scored matrix.
    """
    check_scores(sim, "sim")
    check_bank(bank, sim.shape[1], "bank")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        raise ValueError(f"alpha: expected a number, got {alpha!r}")
    bias = nnn_bias(bank.to(sim.dtype), k, chunk_size)
    return sim - float(alpha) * bias


class NNN(Reranker):
    r"""Nearest-neighbour normalisation, as a :class:`Reranker`.

    See :func:`nnn_scores`. The reference queries are the query bank
    (``bank_i2t`` for image queries, ``bank_t2i`` for caption queries), which
    must hold at least ``k`` rows.

    Args:
        k (int, optional): reference neighbours per gallery item (default: 256).
        alpha (float, optional): bias weight (default: 0.5).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]` and a bank.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "nnn"
    scale_invariant = True
    aliases = ("nearest_neighbor_normalization",)
    needs_bank = True
    bank_sides = ("query",)

    def __init__(self, k: int = 256, alpha: float = 0.5) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
            raise ValueError(f"alpha: expected a number, got {alpha!r}")
        self.k = k
        self.alpha = float(alpha)

    def rerank(self, view: RetrievalView) -> Tensor:
        bank_name = "bank_i2t" if view.direction == "i2t" else "bank_t2i"
        if self.k > view.query_bank.shape[0]:
            raise ValueError(f"k: {self.k} exceeds the {view.query_bank.shape[0]} rows of "
                             f"{bank_name}; use a larger bank or a smaller k")
        return nnn_scores(view.sim, view.query_bank, self.k, self.alpha, view.chunk_size)


def nnn(bundle: SimilarityBundle, bank: Optional[QueryBank], k: int = 256, alpha: float = 0.5,
        **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`NNN`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return NNN(k=k, alpha=alpha)(bundle, bank=bank, **call_kwargs)
