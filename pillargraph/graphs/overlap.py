r"""Neighbour-overlap adjacency of query graphs (method.md, section 3), for all queries at once.

For each node :math:`u` let :math:`N_{\text{img}}(u)` and :math:`N_{\text{txt}}(u)`
be its top-:math:`C` image and text neighbours. Then

.. math::
    W_{uv} = |N_{\text{img}}(u) \cap N_{\text{img}}(v)| + |N_{\text{txt}}(u) \cap N_{\text{txt}}(v)|,
    \qquad W_{uu} = 2C,

and the adjacency is :math:`A = \mathrm{rownorm}\big(\hat{W} \odot [\hat{W} > \gamma / K]\big)`
with :math:`\hat{W} = \mathrm{rownorm}(W)` and :math:`K` the number of nodes of the graph.
Self loops always survive, so no row is empty; the result is row-stochastic
and directed.
"""
from __future__ import annotations

from typing import Tuple

import torch
from torch import Tensor

from ..data.source import SimilaritySource, gallery_size
from ..modality import IMAGE, TEXT
from ..modality import kind_between

__all__ = ["NeighborTables", "neighbor_tables", "overlap_counts", "overlap_adjacency"]


class NeighborTables:
    """Top-``C`` image and text neighbours of every image and every text of a split.

    ``image[t]`` is :obj:`[n_t, C]`: the image neighbours of every item of
    modality ``t``; ``text[t]`` likewise. An item's same-modal list includes the
    item itself (it is its own nearest neighbour under a proper similarity),
    taken from the source's ranking as is.
    """

    def __init__(self, image: Tuple[Tensor, Tensor], text: Tuple[Tensor, Tensor]) -> None:
        self.image = image
        self.text = text

    @property
    def num_images(self) -> int:
        """Images in the split (the offset that puts text ids after image ids)."""
        return self.image[IMAGE].shape[0]

    @property
    def num_neighbors(self) -> int:
        """``C``."""
        return self.image[0].shape[1]

    def lookup(self, nodes: Tensor, node_type: Tensor) -> Tuple[Tensor, Tensor]:
        """Image and text neighbour lists of graph nodes, each :obj:`[Q, K, C]`."""
        is_img = (node_type == IMAGE).to(nodes.device)[None, :, None]
        n_img, n_txt = self.image[IMAGE].shape[0], self.image[TEXT].shape[0]
        # look every node up in both tables (ids clamped into range), keep its own type's row
        as_img, as_txt = nodes.clamp(max=n_img - 1), nodes.clamp(max=n_txt - 1)
        out = []
        for table in (self.image, self.text):
            a = table[IMAGE].to(nodes.device)[as_img]
            b = table[TEXT].to(nodes.device)[as_txt]
            out.append(torch.where(is_img, a, b))
        return out[0], out[1]


def neighbor_tables(source: SimilaritySource, num_neighbors: int = 10) -> NeighborTables:
    """Compute :class:`NeighborTables` with ``C = num_neighbors`` from a source."""
    c = num_neighbors
    sizes = {IMAGE: gallery_size(source, "i2i"), TEXT: gallery_size(source, "t2t")}
    for t, n in sizes.items():
        if c < 1 or c > n:
            raise ValueError(f"overlap_neighbors: {c} neighbours asked for, but there are only {n} "
                             f"{'images' if t == IMAGE else 'texts'}")
    image = tuple(source.topk(kind_between(t, IMAGE), c)[0] for t in (IMAGE, TEXT))
    text = tuple(source.topk(kind_between(t, TEXT), c)[0] for t in (IMAGE, TEXT))
    return NeighborTables(image, text)


def overlap_counts(lists: Tensor, chunk_size: int = 512) -> Tensor:
    """Pairwise intersection sizes of the neighbour sets of each graph's nodes, batched.

    Items are re-indexed per graph (one batched sort of each graph's ``K * C``
    ids: equal ids get one local id), each node's set becomes a one-hot row
    over its graph's local vocabulary (at most ``K * C`` items), and one batched
    matrix product gives every intersection size at once: :math:`W = H H^\top`.

    Args:
        lists: :obj:`[Q, K, C]` neighbour ids of each node, distinct within a
            node's list. To count two modalities together, offset one
            modality's ids so that they do not collide with the other's.
        chunk_size: graphs per product, bounding temporary memory (default: 512).

    Returns:
        :obj:`[Q, K, K]` float32 counts.
    """
    q, k, c = lists.shape
    out = torch.empty(q, k, k, dtype=torch.float32, device=lists.device)
    if lists.numel() == 0:
        return out
    # one buffer for every chunk's one-hot rows: a fresh [chunk, K, K * C] block per chunk cost more in
    # page faults than the product itself
    buffer = torch.empty(min(q, chunk_size) * k * k * c, dtype=torch.float32, device=lists.device)
    for s in range(0, q, chunk_size):
        x = lists[s:s + chunk_size].reshape(-1, k * c)
        qc = x.shape[0]
        ids, perm = torch.sort(x, dim=1)
        first = torch.ones_like(ids, dtype=torch.long)
        first[:, 1:] = ids[:, 1:] != ids[:, :-1]
        local_sorted = torch.cumsum(first, dim=1) - 1
        local = torch.empty_like(local_sorted).scatter_(1, perm, local_sorted)
        vocab = int(local_sorted[:, -1].max()) + 1
        onehot = buffer[:qc * k * vocab].view(qc, k, vocab).zero_()
        onehot.scatter_(2, local.view(qc, k, c), 1.0)
        torch.bmm(onehot, onehot.transpose(1, 2), out=out[s:s + chunk_size])
    return out


def overlap_adjacency(counts: Tensor, num_neighbors: int, sparsity: float = 0.8) -> Tensor:
    """Turn raw overlap counts into the sparsified, row-stochastic adjacency.

    Args:
        counts: :obj:`[Q, K, K]` raw overlap counts :math:`W` (the diagonal is
            overwritten with :math:`2C`).
        num_neighbors: ``C``.
        sparsity: :math:`\\gamma`; entries of the row-normalised matrix not above
            :math:`\\gamma / K` are dropped (default: 0.8).

    Returns:
        :obj:`[Q, K, K]` float32 adjacency with zeros where there is no edge.
    """
    if sparsity < 0:
        raise ValueError(f"sparsity: must be non-negative, got {sparsity}")
    k = counts.shape[-1]
    w = counts.clone()
    eye = torch.eye(k, dtype=torch.bool, device=w.device)
    w[:, eye] = 2.0 * num_neighbors
    w = w / w.sum(dim=-1, keepdim=True)
    keep = (w > sparsity / k) | eye
    w = torch.where(keep, w, torch.zeros((), dtype=w.dtype, device=w.device))
    return w / w.sum(dim=-1, keepdim=True)
