r"""alpha-weighted query expansion (Radenović et al., TPAMI 2018)."""
from __future__ import annotations

from typing import Any, Dict

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from ..data.neighbors import NeighborLists
from .base import Reranker, RetrievalView, chunk_ranges, weight_matrix

__all__ = ["AlphaQE", "alpha_qe", "AlphaQEPairs"]


class AlphaQE(Reranker):
    r"""alpha-QE from `"Fine-tuning CNN Image Retrieval with No Human Annotation"
    <https://arxiv.org/abs/1711.02512>`_: the query is replaced by itself plus
    its top-:math:`n` gallery items weighted by their score to the power
    :math:`\alpha`. In score form, with :math:`\mathcal{N}_n(q)` the query's
    top-:math:`n` gallery items:

    .. math::
        s'(q, g) = s(q, g) + \sum_{i \in \mathcal{N}_n(q)} \max(s(q, g_i), 0)^{\alpha}\,
        s(g_i, g)

    where :math:`s(g_i, g)` is the gallery-side intra matrix (``sim_t2t`` for
    image-to-text retrieval, ``sim_i2i`` for text-to-image). Negative scores
    get zero weight, so a non-integer :math:`\alpha` stays defined. The
    expanded query is not re-normalised: that would scale a query's whole row
    by one constant and leave its ranking unchanged.

    Args:
        alpha (float, optional): weight exponent (default: :obj:`3.0`).
        n (int, optional): expansion items per query (default: :obj:`10`).

    Shapes:
        - **input:** bundle with ``sim_i2t`` :obj:`[N, M]` and the gallery-side
          intra matrix of each requested direction.
        - **output:** ``{'i2t': [N, M], 't2i': [N, M]}``.
    """

    name = "alpha_qe"
    aliases = ("aqe",)
    needs_intra = True
    intra_sides = ("gallery",)

    def __init__(self, alpha: float = 3.0, n: int = 10) -> None:
        if not float(alpha) >= 0:
            raise ValueError(f"alpha: expected a non-negative number, got {alpha!r}")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n: expected a non-negative int, got {n!r}")
        self.alpha = float(alpha)
        self.n = n

    def rerank(self, view: RetrievalView) -> Tensor:
        s, sgg = view.sim, view.gallery_intra
        q, g = s.shape
        n = min(self.n, g)
        out = s.clone()
        if n == 0:
            return out
        sgg = sgg.to(s.dtype)
        for a, b in chunk_ranges(q, view.chunk(g)):
            val, idx = s[a:b].topk(n, dim=1)
            w = val.clamp_min(0).pow(self.alpha)  # [C, n]
            out[a:b] += torch.sparse.mm(weight_matrix(idx, w, g), sgg)  # sum_i w_i s(g_i, g): [C, G]
        return out


def alpha_qe(bundle: SimilarityBundle, alpha: float = 3.0, n: int = 10,
             **call_kwargs: Any) -> Dict[str, Tensor]:
    """Functional form of :class:`AlphaQE`; ``call_kwargs`` go to :meth:`Reranker.__call__`
    (``directions``, ``device``, ``chunk_size``)."""
    return AlphaQE(alpha=alpha, n=n)(bundle, **call_kwargs)


class AlphaQEPairs:
    r"""alpha-QE scores of any (query, gallery item) pairs of a split given as neighbour lists.

    The expansion items are the first :math:`n` of the query's own list and
    :math:`s(g_i, g)` is read from the gallery-side intra lists
    (:meth:`~pillargraph.data.NeighborLists.gather`: exact with embeddings or
    where a list holds the pair, else the row's smallest stored score). Lists
    that hold every item give the dense :class:`AlphaQE` exactly.

    Args:
        lists (NeighborLists): the split, with intra lists.
        alpha (float, optional): weight exponent (default: :obj:`3.0`).
        n (int, optional): expansion items per query (default: :obj:`10`).
    """

    def __init__(self, lists: NeighborLists, alpha: float = 3.0, n: int = 10) -> None:
        method = AlphaQE(alpha, n)
        self.lists, self.alpha, self.n = lists, method.alpha, method.n

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Scores of the ``kind`` pairs ``(rows, cols)`` (``'i2t'`` or ``'t2i'``), broadcast together."""
        if kind not in ("i2t", "t2i"):
            raise ValueError(f"kind: expected 'i2t' or 't2i', got {kind!r}")
        s = self.lists.gather(kind, rows, cols).double()
        n = min(self.n, self.lists.depth(kind))
        if n == 0:
            return s.float()
        rows, cols = (torch.broadcast_to(t.to(s.device), s.shape).reshape(-1) for t in (rows, cols))
        idx, val = self.lists.topk(kind, n, rows)
        intra = "t2t" if kind == "i2t" else "i2i"
        w = val.double().clamp_min(0).pow(self.alpha)
        expansion = (w * self.lists.gather(intra, idx[:, :, None], cols[:, None, None])[..., 0].double()).sum(1)
        return (s + expansion.view(s.shape)).float()
