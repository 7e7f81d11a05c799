r"""Re-ranking as parameter-free message passing (Zhang et al., 2020)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..data.neighbors import NeighborLists
from .base import Reranker, RetrievalView
from .joint import (RowSlicer, cut_lists, joint_size, joint_topk, joint_topk_from_lists, row_inner_products,
                    sparse_matmul, sparse_pair_products, sparse_rows)

__all__ = ["GNNRerank", "gnn_rerank", "GNNRerankPairs"]


def _l2_normalize_rows(a: Tensor) -> Tensor:
    rows = a.indices()[0]
    norm = torch.zeros(a.shape[0], dtype=a.dtype, device=a.device)
    norm.index_add_(0, rows, a.values() * a.values())
    norm = norm.sqrt().clamp_min(torch.finfo(a.dtype).tiny)
    return torch.sparse_coo_tensor(a.indices(), a.values() / norm[rows], a.shape,
                                   check_invariants=False).coalesce()


class GNNRerank(Reranker):
    r"""GNN re-ranking from `"Understanding Image Retrieval Re-Ranking: A Graph
    Neural Network Perspective" <https://arxiv.org/abs/2012.07620>`_.

    On the joint query+gallery graph, every item starts from the indicator of
    its top-:math:`k_1` list (itself included), :math:`A^{(0)}_{ij} = 1[j \in
    \mathcal{N}_{k_1}(i)]`. Each of ``layers`` rounds symmetrises the features
    and aggregates the top-:math:`k_2` neighbours weighted by squared similarity,
    then L2-normalises the rows:

    .. math::
        A \leftarrow A + A^\top, \qquad
        A_i \leftarrow \mathrm{normalize}\Big(\sum_{j \in \mathcal{N}_{k_2}(i)} s(i, j)^2 A_j\Big).

    The new score blends the cosine of propagated rows with the base score, as
    in the authors' later release:

    .. math::
        s'(q, g) = (1 - \lambda) \langle A_q, A_g \rangle + \lambda\, s(q, g).

    :math:`\lambda = 0` gives the original paper's pure propagation score.
    Transductive (the graph contains the other test queries) and needs both
    intra-modal matrices. Uses sparse features; memory grows with the size of
    two-hop neighbourhoods, not with :math:`T^2`.

    Args:
        k1 (int, optional): initial neighbourhood size (default: :obj:`26`).
        k2 (int, optional): neighbours aggregated per round (default: :obj:`7`).
        lambda_value (float, optional): weight of the base score (default: :obj:`0.3`).
        layers (int, optional): propagation rounds (default: :obj:`2`).

    Shapes:
        - **input:** bundle with ``sim_i2t``, ``sim_i2i`` and ``sim_t2t``.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "gnn_rerank"
    aliases = ("gnn", "gnn_reranking")
    needs_intra = True
    intra_sides = ("query", "gallery")
    transductive = True

    def __init__(self, k1: int = 26, k2: int = 7, lambda_value: float = 0.3, layers: int = 2) -> None:
        for name, v in (("k1", k1), ("k2", k2), ("layers", layers)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}: expected a positive int, got {v!r}")
        if k2 > k1:
            raise ValueError(f"k2: expected at most k1={k1}, got {k2}")
        if not 0 <= float(lambda_value) <= 1:
            raise ValueError(f"lambda_value: expected a number in [0, 1], got {lambda_value!r}")
        self.k1, self.k2, self.lambda_value, self.layers = k1, k2, float(lambda_value), layers

    def features(self, view: RetrievalView) -> Tensor:
        """The propagated joint features :math:`A`, a sparse :obj:`[T, T]` COO tensor."""
        n = joint_size(view)
        k1 = min(self.k1, n)
        val, idx = joint_topk(view, k1, view.chunk_size, drop_ties=True)
        return self.propagate(val, idx, n)

    def propagate(self, val: Tensor, idx: Tensor, n: int) -> Tensor:
        """:math:`A` from the joint top-:math:`k_1` lists (:func:`~pillargraph.baselines.joint.joint_topk`)."""
        k2 = min(self.k2, idx.shape[1])
        a = sparse_rows(idx, torch.ones_like(val), n)
        # rows of prop are normalised after each product, so each may be scaled freely: relative
        # weights keep the square from overflowing on large scores
        top = val[:, :k2].abs().max(dim=1, keepdim=True).values.clamp_min(torch.finfo(val.dtype).tiny)
        prop = sparse_rows(cut_lists(idx, val, k2), (val[:, :k2] / top) ** 2, n)
        for _ in range(self.layers):
            a = (a + a.t()).coalesce()
            a = _l2_normalize_rows(sparse_matmul(prop, a))
        return a

    def rerank(self, view: RetrievalView) -> Tensor:
        s = view.sim
        nq, _ = s.shape
        n = joint_size(view)
        a = self.features(view)
        rows = RowSlicer(a)
        cos = row_inner_products(rows, lambda i, j: rows(nq + i, nq + j), nq, n - nq, n,
                                 view.chunk_size)
        lam = self.lambda_value
        out = cos.mul_(1 - lam).add_(s, alpha=lam) if lam else cos
        return out


class GNNRerankPairs:
    r"""GNN re-ranking scores of any (query, gallery item) pairs of a split given as neighbour lists.

    The joint graph of all images and captions is built from the lists
    (:func:`~pillargraph.baselines.joint.joint_topk_from_lists`: exact when the
    four kinds of lists are at least :math:`k_1` deep besides the item itself),
    propagated once as :class:`GNNRerank` does, and a pair's score is
    :math:`(1 - \lambda) \langle A_q, A_g \rangle + \lambda\, s(q, g)`. Both
    directions share the graph, so a pair scores the same either way.

    Args:
        lists (NeighborLists): the split, with intra lists.
        k1, k2, lambda_value, layers: as in :class:`GNNRerank`.
    """

    def __init__(self, lists: NeighborLists, k1: int = 26, k2: int = 7, lambda_value: float = 0.3,
                 layers: int = 2) -> None:
        self.method = GNNRerank(k1, k2, lambda_value, layers)
        self.lists = lists
        n = lists.num_images + lists.num_texts
        val, idx = joint_topk_from_lists(lists, min(k1, n), drop_ties=True)
        self.features = self.method.propagate(val.double(), idx, n)

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Scores of the ``kind`` pairs ``(rows, cols)`` (``'i2t'`` or ``'t2i'``), broadcast together."""
        if kind not in ("i2t", "t2i"):
            raise ValueError(f"kind: expected 'i2t' or 't2i', got {kind!r}")
        s = self.lists.gather(kind, rows, cols)
        rows, cols = (torch.broadcast_to(t.to(s.device), s.shape) for t in (rows, cols))
        n = self.lists.num_images
        img, txt = (rows, cols + n) if kind == "i2t" else (cols, rows + n)
        cos = sparse_pair_products(self.features, img, txt).view(s.shape)
        lam = self.method.lambda_value
        return ((1 - lam) * cos + lam * s.double()).to(s.dtype)


def gnn_rerank(bundle: SimilarityBundle, k1: int = 26, k2: int = 7, lambda_value: float = 0.3,
               **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`GNNRerank`; ``call_kwargs`` go to :meth:`Reranker.__call__`."""
    return GNNRerank(k1=k1, k2=k2, lambda_value=lambda_value)(bundle, **call_kwargs)
