r"""Pillars and the pillar space (method.md, section 2).

For a query :math:`q`, its top-:math:`L` cross-modal neighbours are its *inter*
pillars and its top-:math:`L` same-modal neighbours its *intra* pillars. Every
sample :math:`u` of :math:`q`'s neighbourhood is then described only by its
similarities to those :math:`2L` pillars:

.. math::
    \mathbf{x}_u = \big[\, s(u, P^{\text{inter}}_1), \dots, s(u, P^{\text{inter}}_L)
    \;\big|\; s(u, P^{\text{intra}}_1), \dots, s(u, P^{\text{intra}}_L) \,\big]

where :math:`s` is the similarity of the matching kind (e.g. for an image query
and a candidate text, ``t2t`` against the text pillars and ``t2i`` against the
image pillars). Column ``k`` is the ``k``-th ranked pillar, so features are
aligned across queries and across base models.

**Self among the intra pillars.** The query always is its own first intra
pillar (``include_self=True``, the default), followed by its top ``L - 1`` other
same-modal neighbours. Column ``L`` of a candidate's feature vector (the first
intra column) is then its base score against the query, and the query's own is
its self-similarity. With ``include_self=False`` the query is excluded and its
top ``L`` other neighbours are used. Either way the rule is applied explicitly,
so it does not depend on whether the intra matrix ranks an item first against
itself.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import Tensor

from .data.source import SimilaritySource, gallery_size
from .modality import IMAGE, TEXT, gallery_modality, kind_between, query_modality

__all__ = ["ANCHORS", "Pillars", "select_pillars", "pillar_features", "check_anchor", "top_others"]

#: Which halves of the pillar space to keep.
ANCHORS = ("both", "inter", "intra")

def check_anchor(anchor: str) -> str:
    """Return ``anchor`` or raise :class:`ValueError` listing the valid ones."""
    if anchor not in ANCHORS:
        raise ValueError(f"anchor: unknown anchor {anchor!r}; expected one of {list(ANCHORS)}")
    return anchor


def _size(source: SimilaritySource, node_type: int) -> int:
    return gallery_size(source, "i2i" if node_type == IMAGE else "t2t")


def top_others(source: SimilaritySource, kind: str, rows: Tensor, k: int,
               include_self: bool = False) -> Tensor:
    """Top-``k`` same-modal neighbours of ``rows`` with each row's own id handled explicitly.

    Args:
        source: the split's similarities.
        kind: ``'i2i'`` or ``'t2t'``.
        rows: :obj:`[Q]` item ids.
        k: neighbours per row.
        include_self: put the row itself first and take ``k - 1`` others
            (default: False, ``k`` others).

    Returns:
        :obj:`[Q, k]` ids.
    """
    if kind not in ("i2i", "t2t"):
        raise ValueError(f"kind: expected 'i2i' or 't2t', got {kind!r}")
    n = gallery_size(source, kind)
    others = k - 1 if include_self else k
    if k < 1 or others > n - 1:
        raise ValueError(f"k: {k} same-modal neighbours asked for ({others} besides the item itself), "
                         f"but the gallery has only {n} items")
    if others == 0:
        return rows[:, None]
    depth = min(others + 1, n)
    idx, _ = source.topk(kind, depth, rows)
    keep = idx != rows[:, None].to(idx.device)
    # Each row keeps its first `others` entries that are not itself; a row whose id is not in
    # its top `depth` simply drops its last entry.
    keep &= torch.cumsum(keep, dim=1) <= others
    picked = idx[keep].view(-1, others)
    if include_self:
        picked = torch.cat([rows[:, None].to(picked.device), picked], dim=1)
    return picked


@dataclass
class Pillars:
    """The pillars of a batch of queries of one direction.

    Args:
        direction (str): ``'i2t'`` or ``'t2i'``.
        queries (Tensor): :obj:`[Q]` query ids.
        inter (Tensor): :obj:`[Q, L]` top cross-modal neighbours (gallery modality).
        intra (Tensor): :obj:`[Q, L]` top same-modal neighbours (query modality).
    """

    direction: str
    queries: Tensor
    inter: Tensor
    intra: Tensor

    @property
    def num_pillars(self) -> int:
        """Pillars per half, ``L``."""
        return self.inter.shape[1]

    def __len__(self) -> int:
        return self.queries.numel()

    def __getitem__(self, index) -> "Pillars":
        """The pillars of a subset of the queries."""
        return Pillars(self.direction, self.queries[index], self.inter[index], self.intra[index])

    def to(self, device) -> "Pillars":
        """A copy on ``device``."""
        return Pillars(self.direction, self.queries.to(device), self.inter.to(device), self.intra.to(device))


def select_pillars(source: SimilaritySource, direction: str, queries: Tensor,
                   num_pillars: int = 64, include_self: bool = True) -> Pillars:
    """The inter and intra pillars of ``queries`` (see the module docstring for the self rule).

    Raises:
        ValueError: ``num_pillars`` exceeds either gallery, or an unknown direction.
    """
    qt, gt = query_modality(direction), gallery_modality(direction)
    if num_pillars < 1:
        raise ValueError(f"num_pillars: must be positive, got {num_pillars}")
    for t in (qt, gt):
        if num_pillars > _size(source, t):
            raise ValueError(f"num_pillars: {num_pillars} pillars asked for, but there are only "
                             f"{_size(source, t)} {'images' if t == IMAGE else 'texts'}")
    inter, _ = source.topk(direction, num_pillars, queries)
    intra = top_others(source, kind_between(qt, qt), queries, num_pillars, include_self=include_self)
    return Pillars(direction, queries, inter, intra)


def pillar_features(source: SimilaritySource, pillars: Pillars, nodes: Tensor, node_type: Tensor,
                    anchor: str = "both", dtype: Optional[torch.dtype] = torch.float32) -> Tensor:
    """Pillar-space features of the nodes of each query's neighbourhood.

    Args:
        source: the split's similarities.
        pillars: the queries' pillars.
        nodes: :obj:`[Q, K]` node ids, each in the modality given by ``node_type``.
        node_type: :obj:`[K]` the modality of each node position.
        anchor: ``'both'`` (``[inter | intra]``, :obj:`2L` columns), ``'inter'`` or
            ``'intra'`` (:obj:`L` columns).
        dtype: output dtype (default: float32).

    Returns:
        :obj:`[Q, K, F]` features.
    """
    check_anchor(anchor)
    qt, gt = query_modality(pillars.direction), gallery_modality(pillars.direction)
    halves = []
    if anchor in ("both", "inter"):
        halves.append((pillars.inter, gt))
    if anchor in ("both", "intra"):
        halves.append((pillars.intra, qt))
    q, k = nodes.shape
    L = pillars.num_pillars
    out = torch.empty(q, k, L * len(halves), dtype=dtype, device=nodes.device)
    for t in (IMAGE, TEXT):
        pos = (node_type == t).nonzero().flatten().to(nodes.device)
        if pos.numel() == 0:
            continue
        rows = nodes[:, pos]
        for h, (cols, col_type) in enumerate(halves):
            vals = source.gather(kind_between(t, col_type), rows[:, :, None], cols[:, None, :])
            out[:, pos, h * L:(h + 1) * L] = vals.to(device=nodes.device, dtype=dtype)
    return out
