r"""Inverted softmax against a query bank.

Smith et al., `"Offline bilingual word vectors, orthogonal transformations and
the inverted softmax" <https://arxiv.org/abs/1702.03859>`_ (ICLR 2017), with the
normaliser taken over a query bank as in Bogolin et al., `"Cross Modal Retrieval
with Querybank Normalisation" <https://arxiv.org/abs/2112.12777>`_ (CVPR 2022).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

from torch import Tensor

from ..bundle import SimilarityBundle
from ._chunks import check_bank, check_beta, check_scores, column_logsumexp
from .bank import QueryBank
from .base import Reranker, RetrievalView

__all__ = ["InvertedSoftmax", "inverted_softmax", "inverted_softmax_scores"]


def inverted_softmax_scores(sim: Tensor, bank: Tensor, beta: float = 20.0,
                     chunk_size: Optional[int] = None) -> Tensor:
    r"""Normalise each gallery item's scores by its softmax mass over a query bank.

    .. math::
        s'(q, g) = \log \frac{\exp(\beta\, s(q, g))}
                             {\sum_{b \in \mathcal{B}} \exp(\beta\, s(b, g))}
                 = \beta\, s(q, g) - \operatorname{logsumexp}_{b} \beta\, s(b, g)

    The log of the inverted-softmax probability is returned: it ranks exactly
    like the probability and never overflows.

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        bank (Tensor): :obj:`[B, G]` bank queries scored against the same gallery.
        beta (float, optional): inverse temperature (default: 20).
        chunk_size (int, optional): gallery columns per block of the bank
            reduction (default: from the memory budget).

    Returns:
        :obj:`[Q, G]` log inverted-softmax scores.
    """
    check_scores(sim, "sim")
    check_bank(bank, sim.shape[1], "bank")
    beta = check_beta(beta)
    log_z = column_logsumexp(bank.to(sim.dtype), beta, chunk_size)
    return (sim * beta).sub_(log_z)


class InvertedSoftmax(Reranker):
    r"""Inverted softmax over a query bank (every query normalised), as a :class:`Reranker`.

    See :func:`inverted_softmax_scores`. Needs a :class:`~pillargraph.baselines.QueryBank`
    with ``bank_i2t`` for image queries and ``bank_t2i`` for caption queries.

    Args:
        beta (float, optional): inverse temperature (default: 20).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]` and a bank.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "inverted_softmax"
    aliases = ("is",)
    needs_bank = True
    bank_sides = ("query",)

    def __init__(self, beta: float = 20.0) -> None:
        self.beta = check_beta(beta)

    def rerank(self, view: RetrievalView) -> Tensor:
        return inverted_softmax_scores(view.sim, view.query_bank, self.beta, view.chunk_size)


def inverted_softmax(bundle: SimilarityBundle, bank: Optional[QueryBank], beta: float = 20.0,
                     **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`InvertedSoftmax`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return InvertedSoftmax(beta=beta)(bundle, bank=bank, **call_kwargs)
