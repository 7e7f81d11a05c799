r"""A training split made of independent, equally sized episodes.

A re-ranker trained on a 29,000-image split but applied to a 1,000-image test
gallery sees neighbourhoods of another density: the top-32 neighbours of an
item among 29,000 are much closer than among 1,000, and every rank (where a
candidate stands, where the query stands in a candidate's own list) is on
another scale. Cutting the training split into episodes of the test gallery's
size removes that shift: each episode is a dense retrieval problem of its own,
and its items only ever neighbour items of the same episode.

:class:`EpisodicSimilarity` stacks the episodes and answers the
:class:`~pillargraph.data.SimilaritySource` questions (top-k lists, pair
similarities) with global ids, so the graph builder, the trainer and the
mirrored lists of the alignment loss work on it unchanged. Image ``i`` of
episode ``e`` has global id ``e * n + i`` (``n`` images per episode), caption
``j`` has ``e * m + j``.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .source import check_kind

__all__ = ["EpisodicSimilarity"]

# Rows ranked per torch.topk call (bounds the [rows, gallery] temporary).
_TOPK_CHUNK = 4096


class EpisodicSimilarity:
    """Equally sized dense episodes seen as one split (a :class:`~pillargraph.data.SimilaritySource`).

    Args:
        bundles (sequence of SimilarityBundle): the episodes, each with the same
            number of images ``n`` and captions ``m``, and with ``sim_i2i`` and
            ``sim_t2t`` present in all or none of them.

    Raises:
        ValueError: no episodes, episodes of different sizes or devices, or intra
            matrices present in some episodes only.
    """

    def __init__(self, bundles: Sequence[SimilarityBundle]) -> None:
        bundles = list(bundles)
        if not bundles or not all(isinstance(b, SimilarityBundle) for b in bundles):
            raise ValueError("bundles: expected a non-empty sequence of SimilarityBundle episodes")
        n, m = bundles[0].num_images, bundles[0].num_texts
        for e, b in enumerate(bundles):
            if (b.num_images, b.num_texts) != (n, m):
                raise ValueError(f"bundles: episode {e} has {b.num_images} images x {b.num_texts} captions, "
                                 f"episode 0 has {n} x {m}; episodes must be equally sized")
            if b.device != bundles[0].device:
                raise ValueError(f"bundles: episode {e} is on {b.device}, episode 0 on {bundles[0].device}")
        self._n, self._m, self._e = n, m, len(bundles)
        self._mats = {"i2t": torch.stack([b.sim_i2t for b in bundles])}
        for kind, field in (("i2i", "sim_i2i"), ("t2t", "sim_t2t")):
            present = [getattr(b, field) is not None for b in bundles]
            if any(present) and not all(present):
                raise ValueError(f"bundles: {field} is present in {sum(present)} of {len(bundles)} episodes; "
                                 f"give it in all or none")
            if all(present):
                self._mats[kind] = torch.stack([getattr(b, field) for b in bundles])
        offsets = torch.arange(self._e, device=bundles[0].device) * n
        self._txt2img = torch.cat([b.txt2img + offsets[e] for e, b in enumerate(bundles)])

    # -------------------------------------------------------------- properties
    @property
    def num_episodes(self) -> int:
        """Number of episodes ``E``."""
        return self._e

    @property
    def num_images(self) -> int:
        return self._e * self._n

    @property
    def num_texts(self) -> int:
        return self._e * self._m

    @property
    def txt2img(self) -> Tensor:
        return self._txt2img

    @property
    def device(self) -> torch.device:
        return self._txt2img.device

    def episode(self, e: int) -> SimilarityBundle:
        """Episode ``e`` as a bundle (local ids)."""
        if not 0 <= e < self._e:
            raise ValueError(f"e: expected an episode in [0, {self._e}), got {e}")
        fields = dict(sim_i2t=self._mats["i2t"][e], txt2img=self._txt2img[e * self._m:(e + 1) * self._m] - e * self._n)
        for kind, field in (("i2i", "sim_i2i"), ("t2t", "sim_t2t")):
            if kind in self._mats:
                fields[field] = self._mats[kind][e]
        return SimilarityBundle(**fields)

    # ------------------------------------------------------------- the source
    def _matrix(self, kind: str) -> Tuple[Tensor, int, int]:
        """``([E, rows, cols] scores, rows, cols)`` of ``kind`` (``t2i`` is a transposed view)."""
        check_kind(kind)
        if kind == "t2i":
            return self._mats["i2t"].transpose(1, 2), self._m, self._n
        if kind not in self._mats:
            field = "sim_i2i" if kind == "i2i" else "sim_t2t"
            raise ValueError(f"{field}: the episodes have no {field} matrix, which {kind} neighbours need")
        rows = self._n if kind in ("i2t", "i2i") else self._m
        cols = self._m if kind in ("i2t", "t2t") else self._n
        return self._mats[kind], rows, cols

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-``k`` columns of each row within the row's episode, as global ids."""
        mat, nr, nc = self._matrix(kind)
        if not 1 <= k <= nc:
            raise ValueError(f"k: {k} neighbours asked for, but an episode's {kind} gallery has {nc} items")
        if rows is None:
            rows = torch.arange(self._e * nr, device=self.device)
        rows = rows.to(self.device)
        idx, val = [], []
        for a in range(0, rows.numel(), _TOPK_CHUNK):
            r = rows[a:a + _TOPK_CHUNK]
            e = r // nr
            v, i = torch.topk(mat[e, r % nr], k, dim=1)
            idx.append(i + (e * nc)[:, None])
            val.append(v)
        if not idx:
            return (torch.empty(0, k, dtype=torch.long, device=self.device),
                    torch.empty(0, k, dtype=mat.dtype, device=self.device))
        return torch.cat(idx), torch.cat(val)

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Similarities of (row, column) pairs of the same episode.

        Raises:
            ValueError: a pair spans two episodes (the split holds no score for it).
        """
        mat, nr, nc = self._matrix(kind)
        rows, cols = rows.to(self.device), cols.to(self.device)
        er, ec = rows // nr, cols // nc
        if not bool((er == ec).all()):
            raise ValueError(f"rows, cols: {kind} pairs across episodes have no score in an episodic split")
        return mat[er, rows % nr, cols % nc]

    def to(self, device: Union[str, torch.device]) -> "EpisodicSimilarity":
        """A copy with every episode on ``device``."""
        return EpisodicSimilarity([self.episode(e).to(device) for e in range(self._e)])

    def __repr__(self) -> str:
        return (f"EpisodicSimilarity(num_episodes={self._e}, images_per_episode={self._n}, "
                f"texts_per_episode={self._m}, intra={sorted(k for k in self._mats if k != 'i2t')})")
