r"""DBNorm: the dual inverted softmax over a query bank and a gallery bank.

Wang et al., `"Balance Act: Mitigating Hubness in Cross-Modal Retrieval with
Query and Gallery Banks" <https://arxiv.org/abs/2310.11612>`_ (EMNLP 2023).
Implemented from the paper's definition: hubs score high both against queries
and against other gallery data, so each gallery item is normalised twice, by
its softmax mass over a bank of queries and over a bank of gallery-modality
items. (The authors' released function passes the gallery-bank matrix where
the test scores belong and never uses the test scores; this follows the paper.)
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ._chunks import check_bank, check_beta, check_scores, column_logsumexp
from .bank import QueryBank
from .base import Reranker, RetrievalView, chunk_ranges, resolve_chunk_size

__all__ = ["DBNorm", "dbnorm", "dbnorm_scores", "second_order_bank_logsumexp"]


def dbnorm_scores(sim: Tensor, query_bank: Tensor, gallery_bank: Tensor, beta1: float = 1 / 1.99,
           beta2: float = 3.0, chunk_size: Optional[int] = None) -> Tensor:
    r"""The dual inverted softmax.

    .. math::
        s'(q, g) = \log \left(
            \frac{\exp(\beta_1 s(q, g))}{\sum_{\hat q \in \mathcal{B}_q} \exp(\beta_1 s(\hat q, g))}
            \cdot
            \frac{\exp(\beta_2 s(q, g))}{\sum_{\hat g \in \mathcal{B}_g} \exp(\beta_2 s(\hat g, g))}
        \right)

    :math:`\mathcal{B}_q` are extra queries (query modality) scored against the
    gallery, :math:`\mathcal{B}_g` extra gallery-modality items scored against
    the gallery items. The log of the product is returned (same ranking, no
    overflow).

    Args:
        sim (Tensor): :obj:`[Q, G]` scores, queries along the rows.
        query_bank (Tensor): :obj:`[B_q, G]` bank queries against the gallery.
        gallery_bank (Tensor): :obj:`[B_g, G]` bank gallery items against the gallery.
        beta1 (float, optional): inverse temperature of the query bank (default: 1/1.99).
        beta2 (float, optional): inverse temperature of the gallery bank (default: 3).
        chunk_size (int, optional): gallery columns per block of the bank reductions.

    Returns:
        :obj:`[Q, G]` re-scored matrix.
    """
    check_scores(sim, "sim")
    check_bank(query_bank, sim.shape[1], "query_bank")
    check_bank(gallery_bank, sim.shape[1], "gallery_bank")
    beta1, beta2 = check_beta(beta1, "beta1"), check_beta(beta2, "beta2")
    log_z = column_logsumexp(query_bank.to(sim.dtype), beta1, chunk_size)
    log_z += column_logsumexp(gallery_bank.to(sim.dtype), beta2, chunk_size)
    return (sim * (beta1 + beta2)).sub_(log_z)


def second_order_bank_logsumexp(bank_profiles: Tensor, sim: Tensor, beta: float,
                                chunk_size: Optional[int] = None) -> Tensor:
    r"""Gallery-bank normaliser from second-order (profile) similarities.

    When the gallery bank is only known through its scores against the test
    queries, the similarity between bank item :math:`\hat g` and gallery item
    :math:`g` is taken as the cosine of their centred score profiles over the
    test queries (as :meth:`~pillargraph.SimilarityBundle.with_second_order_intra`
    does within one split):

    .. math::
        \tilde s(\hat g, g) = \cos\big(\bar{s}(\cdot, \hat g), \bar{s}(\cdot, g)\big), \qquad
        \log Z_g = \operatorname{logsumexp}_{\hat g} \beta\, \tilde s(\hat g, g)

    Args:
        bank_profiles (Tensor): :obj:`[B_g, Q]` bank gallery items scored against the queries.
        sim (Tensor): :obj:`[Q, G]` scores.
        beta (float): inverse temperature.
        chunk_size (int, optional): gallery columns per block.

    Returns:
        :obj:`[G]` log normaliser.
    """
    check_scores(bank_profiles, "gallery_bank")
    if bank_profiles.shape[1] != sim.shape[0]:
        raise ValueError(f"gallery_bank: expected {sim.shape[0]} columns (one per query), "
                         f"got shape {tuple(bank_profiles.shape)}")
    b = bank_profiles.to(sim.dtype)
    b = torch.nn.functional.normalize(b - b.mean(dim=1, keepdim=True), dim=1)
    out = torch.empty(sim.shape[1], dtype=sim.dtype, device=sim.device)
    step = resolve_chunk_size(chunk_size, sim.shape[1], 2 * max(b.shape[0], sim.shape[0]))
    for a, c in chunk_ranges(sim.shape[1], step):
        cols = sim[:, a:c]
        cols = torch.nn.functional.normalize(cols - cols.mean(dim=0, keepdim=True), dim=0)
        out[a:c] = torch.logsumexp((b @ cols) * beta, dim=0)
    return out


class DBNorm(Reranker):
    r"""Dual bank normalisation (dual inverted softmax), as a :class:`Reranker`.

    See :func:`dbnorm_scores`. The query bank is the bank of the retrieval direction
    (``bank_i2t`` for image queries); the gallery bank is the other direction's
    bank (for image queries, ``bank_t2i``: extra captions scored against the
    test images). A :class:`~pillargraph.baselines.QueryBank` holds only
    cross-modal scores, so the similarity of a bank caption to a test caption
    is its second-order profile similarity over the test images
    (:func:`second_order_bank_logsumexp`); with embeddings of the bank items
    the paper's direct cosine can be used through :func:`dbnorm_scores`.

    Args:
        beta1 (float, optional): inverse temperature of the query bank (default: 1/1.99).
        beta2 (float, optional): inverse temperature of the gallery bank (default: 3).

    Shapes:
        - **input:** a bundle with ``sim_i2t`` :obj:`[N, M]` and a bank with
          both ``bank_i2t`` and ``bank_t2i``.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "dbnorm"
    aliases = ("db_norm", "dual_inverted_softmax")
    needs_bank = True
    bank_sides = ("query", "gallery")

    def __init__(self, beta1: float = 1 / 1.99, beta2: float = 3.0) -> None:
        self.beta1 = check_beta(beta1, "beta1")
        self.beta2 = check_beta(beta2, "beta2")

    def rerank(self, view: RetrievalView) -> Tensor:
        sim = view.sim
        check_bank(view.query_bank, sim.shape[1], "query_bank")
        log_z = column_logsumexp(view.query_bank.to(sim.dtype), self.beta1, view.chunk_size)
        log_z += second_order_bank_logsumexp(view.gallery_bank, sim, self.beta2, view.chunk_size)
        return (sim * (self.beta1 + self.beta2)).sub_(log_z)


def dbnorm(bundle: SimilarityBundle, bank: Optional[QueryBank], beta1: float = 1 / 1.99,
           beta2: float = 3.0, **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`DBNorm`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return DBNorm(beta1=beta1, beta2=beta2)(bundle, bank=bank, **call_kwargs)
