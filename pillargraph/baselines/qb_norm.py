r"""QB-Norm: the dynamic inverted softmax over a query bank.

Bogolin et al., `"Cross Modal Retrieval with Querybank Normalisation"
<https://arxiv.org/abs/2112.12777>`_ (CVPR 2022).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ._chunks import check_bank, check_beta, check_scores
from .bank import QueryBank
from .base import Reranker, RetrievalView, chunk_ranges, chunked_topk, resolve_chunk_size
from .inverted_softmax import inverted_softmax_scores

__all__ = ["QBNorm", "qb_norm", "qb_norm_scores", "activation_set"]


def activation_set(bank: Tensor, k: int = 1, chunk_size: Optional[int] = None) -> Tensor:
    r"""Gallery items among the top-``k`` of at least one bank query.

    Args:
        bank (Tensor): :obj:`[B, G]` bank queries scored against the gallery.
        k (int, optional): neighbours per bank query (default: 1).
        chunk_size (int, optional): bank rows per block.

    Returns:
        :obj:`[G]` bool mask, ``True`` for the (likely) hubs.
    """
    _, idx = chunked_topk(bank, k, chunk_size)
    mask = torch.zeros(bank.shape[1], dtype=torch.bool, device=bank.device)
    mask[idx.reshape(-1)] = True
    return mask


def qb_norm_scores(sim: Tensor, bank: Tensor, beta: float = 20.0, k: int = 1,
            chunk_size: Optional[int] = None) -> Tensor:
    r"""The dynamic inverted softmax: normalise only queries whose top-1 is a hub.

    With :math:`\mathcal{A}` the :func:`activation_set` of the bank, query
    :math:`q` is normalised by :func:`inverted_softmax_scores` if its best gallery
    item lies in :math:`\mathcal{A}`; otherwise its scores are left unchanged:

    .. math::
        s'(q, \cdot) = \begin{cases}
            \beta\, s(q, \cdot) - \operatorname{logsumexp}_{b} \beta\, s(b, \cdot)
                & \text{if } \arg\max_g s(q, g) \in \mathcal{A} \\
            s(q, \cdot) & \text{otherwise.}
        \end{cases}

    A row is either wholly normalised or wholly raw, so every query's ranking
    is well defined (rows of the two kinds are not comparable with each other).

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        bank (Tensor): :obj:`[B, G]` bank queries scored against the same gallery.
        beta (float, optional): inverse temperature (default: 20).
        k (int, optional): neighbours per bank query defining the hubs (default: 1).
        chunk_size (int, optional): rows per block (default: from the memory budget).

    Returns:
        :obj:`[Q, G]` re-scored matrix.
    """
    check_scores(sim, "sim")
    check_bank(bank, sim.shape[1], "bank")
    beta = check_beta(beta)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= sim.shape[1]:
        raise ValueError(f"k: expected an int in [1, {sim.shape[1]}], got {k!r}")
    hubs = activation_set(bank, k, chunk_size)
    normed = inverted_softmax_scores(sim, bank, beta, chunk_size)
    step = resolve_chunk_size(chunk_size, sim.shape[0], sim.shape[1])
    for a, b in chunk_ranges(sim.shape[0], step):
        raw = ~hubs[sim[a:b].argmax(dim=1)]
        normed[a:b][raw] = sim[a:b][raw]
    return normed


class QBNorm(Reranker):
    r"""Querybank normalisation with the dynamic inverted softmax, as a :class:`Reranker`.

    See :func:`qb_norm_scores`. Needs a :class:`~pillargraph.baselines.QueryBank`
    with ``bank_i2t`` for image queries and ``bank_t2i`` for caption queries.

    Args:
        beta (float, optional): inverse temperature (default: 20).
        k (int, optional): neighbours per bank query defining the hubs (default: 1).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]` and a bank.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "qb_norm"
    aliases = ("dis", "dynamic_inverted_softmax")
    needs_bank = True
    bank_sides = ("query",)

    def __init__(self, beta: float = 20.0, k: int = 1) -> None:
        self.beta = check_beta(beta)
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k: expected a positive int, got {k!r}")
        self.k = k

    def rerank(self, view: RetrievalView) -> Tensor:
        return qb_norm_scores(view.sim, view.query_bank, self.beta, self.k, view.chunk_size)


def qb_norm(bundle: SimilarityBundle, bank: Optional[QueryBank], beta: float = 20.0, k: int = 1,
            **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`QBNorm`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return QBNorm(beta=beta, k=k)(bundle, bank=bank, **call_kwargs)
