r"""A training split made of independent episodes, each a retrieval problem of a test gallery's size.

A re-ranker trained on a 29,000-image split but applied to a 1,000-image test
gallery sees neighbourhoods of another density: the top-32 neighbours of an
item among 29,000 are much closer than among 1,000, and every rank (where a
candidate stands, where the query stands in a candidate's own list) is on
another scale. Cutting the training split into episodes of the test gallery's
size removes that shift: each episode is a dense retrieval problem of its own,
and its items only ever neighbour items of the same episode. Episodes of
*mixed* sizes (e.g. 1,000 and 5,000 images) show the model several densities,
so that it re-ranks galleries of other sizes too.

:func:`~pillargraph.data.partition.episode_partition` cuts a split's images into episodes (a seeded
shuffle, so a split sorted by class or by source is mixed); every caption goes
with its image. :class:`EpisodicSimilarity` holds the episodes' dense matrices
and answers the :class:`~pillargraph.data.SimilaritySource` questions (top-k
lists, pair similarities) with the split's own ids, so the graph builder, the
trainer and the mirrored lists of the alignment loss work on it unchanged.
Neighbour lists searched within the same episodes
(:meth:`~pillargraph.data.NeighborLists.from_embeddings` with ``episodes=``)
are the form of an episodic split too large for dense episodes.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor

from ..bundle import SimilarityBundle
from .neighbors import NeighborLists
from .partition import episode_partition, episode_sizes_label, episode_texts
from .source import check_kind

__all__ = ["EpisodicSimilarity", "as_episodes", "mix_splits"]

# Rows ranked per torch.topk call (bounds the [rows, gallery] temporary).
_TOPK_CHUNK = 4096


class _Group:
    """Episodes of one shape stacked: ``mats[kind]`` :obj:`[E_g, rows, cols]`, each episode's global ids."""

    def __init__(self, bundles: List[SimilarityBundle], img_ids: List[Tensor], txt_ids: List[Tensor]) -> None:
        self.mats: Dict[str, Tensor] = {"i2t": torch.stack([b.sim_i2t for b in bundles])}
        for kind, field in (("i2i", "sim_i2i"), ("t2t", "sim_t2t")):
            if getattr(bundles[0], field) is not None:
                self.mats[kind] = torch.stack([getattr(b, field) for b in bundles])
        self.ids = {"i": torch.stack(img_ids), "t": torch.stack(txt_ids)}

    def matrix(self, kind: str) -> Tensor:
        """``[E_g, rows, cols]`` scores of ``kind`` (``t2i`` is a transposed view)."""
        return self.mats["i2t"].transpose(1, 2) if kind == "t2i" else self.mats[kind]


class EpisodicSimilarity:
    """Dense episodes seen as one split (a :class:`~pillargraph.data.SimilaritySource`).

    Episodes may differ in size. Items keep global ids: by default image ``i``
    of episode ``e`` is ``offset_e + i`` (episodes laid end to end); with
    ``image_ids`` / ``text_ids`` (what :meth:`from_bundle` passes) they are the
    ids of the split the episodes were cut from.

    Args:
        bundles (sequence of SimilarityBundle): the episodes, with ``sim_i2i``
            and ``sim_t2t`` present in all or none of them.
        image_ids (sequence of Tensor, optional): global id of each episode's
            images, in the episode's order (together they cover ``0..N-1`` once).
        text_ids (sequence of Tensor, optional): the same for captions.

    Raises:
        ValueError: no episodes, episodes on different devices, intra matrices
            present in some episodes only, or ids that do not fit the episodes.
    """

    def __init__(self, bundles: Sequence[SimilarityBundle], image_ids: Optional[Sequence[Tensor]] = None,
                 text_ids: Optional[Sequence[Tensor]] = None) -> None:
        bundles = list(bundles)
        if not bundles or not all(isinstance(b, SimilarityBundle) for b in bundles):
            raise ValueError("bundles: expected a non-empty sequence of SimilarityBundle episodes")
        for e, b in enumerate(bundles):
            if b.device != bundles[0].device:
                raise ValueError(f"bundles: episode {e} is on {b.device}, episode 0 on {bundles[0].device}")
        for field in ("sim_i2i", "sim_t2t"):
            present = [getattr(b, field) is not None for b in bundles]
            if any(present) and not all(present):
                raise ValueError(f"bundles: {field} is present in {sum(present)} of {len(bundles)} episodes; "
                                 f"give it in all or none")
        self._bundles = bundles
        dev = bundles[0].device
        img_ids = self._ids(image_ids, [b.num_images for b in bundles], "image_ids", dev)
        txt_ids = self._ids(text_ids, [b.num_texts for b in bundles], "text_ids", dev)
        self._n, self._m = sum(b.num_images for b in bundles), sum(b.num_texts for b in bundles)
        # where each global item lives: (episode, local position)
        self._where = {"i": self._locate(img_ids, self._n, "image_ids"), "t": self._locate(txt_ids, self._m, "text_ids")}
        self._txt2img = torch.empty(self._m, dtype=torch.long, device=dev)
        for b, ti, ii in zip(bundles, txt_ids, img_ids):
            self._txt2img[ti] = ii[b.txt2img]
        shapes: Dict[Tuple[int, int], List[int]] = {}
        for e, b in enumerate(bundles):
            shapes.setdefault((b.num_images, b.num_texts), []).append(e)
        self._groups = [_Group([bundles[e] for e in eps], [img_ids[e] for e in eps], [txt_ids[e] for e in eps])
                        for eps in shapes.values()]
        self._group_of = torch.empty(len(bundles), dtype=torch.long, device=dev)
        self._slot = torch.empty(len(bundles), dtype=torch.long, device=dev)
        for g, eps in enumerate(shapes.values()):
            self._group_of[eps] = g
            self._slot[eps] = torch.arange(len(eps), device=dev)
            for slot, e in enumerate(eps):  # each episode's matrices become views of its group's stack: one copy
                self._bundles[e] = bundles[e].replace(**{f"sim_{k}": m[slot] for k, m in self._groups[g].mats.items()})

    @staticmethod
    def _ids(given: Optional[Sequence[Tensor]], counts: List[int], name: str, dev: torch.device) -> List[Tensor]:
        if given is None:
            start = torch.tensor([0] + counts).cumsum(0).tolist()
            return [torch.arange(start[e], start[e] + c, device=dev) for e, c in enumerate(counts)]
        given = [torch.as_tensor(t, dtype=torch.long).to(dev).view(-1) for t in given]
        if len(given) != len(counts) or any(t.numel() != c for t, c in zip(given, counts)):
            raise ValueError(f"{name}: expected one id tensor per episode with the episode's item count")
        return given

    @staticmethod
    def _locate(ids: List[Tensor], total: int, name: str) -> Tuple[Tensor, Tensor]:
        flat = torch.cat(ids)
        if flat.numel() != total or int(flat.min()) < 0 or int(flat.max()) >= total or \
                torch.unique(flat).numel() != total:
            raise ValueError(f"{name}: the episodes' ids must cover 0..{total - 1} exactly once")
        episode = torch.cat([torch.full_like(t, e) for e, t in enumerate(ids)])
        local = torch.cat([torch.arange(t.numel(), device=t.device) for t in ids])
        ep, loc = torch.empty_like(flat), torch.empty_like(flat)
        ep[flat], loc[flat] = episode, local
        return ep, loc

    @classmethod
    def from_bundle(cls, bundle: SimilarityBundle, sizes: Union[int, Sequence[int]],
                    seed: int = 0) -> "EpisodicSimilarity":
        """``bundle`` cut into the episodes of :func:`~pillargraph.data.partition.episode_partition`
        (ids stay the bundle's).

        Raises:
            ValueError: as :func:`~pillargraph.data.partition.episode_partition`.
        """
        parts = episode_partition(bundle.num_images, sizes, seed)
        texts = [episode_texts(bundle.txt2img, p) for p in parts]
        return cls([bundle.subset(p) for p in parts], image_ids=parts, text_ids=texts)

    # -------------------------------------------------------------- properties
    @property
    def num_episodes(self) -> int:
        """Number of episodes ``E``."""
        return len(self._bundles)

    @property
    def episode_sizes(self) -> List[int]:
        """Images of each episode."""
        return [b.num_images for b in self._bundles]

    @property
    def num_images(self) -> int:
        return self._n

    @property
    def num_texts(self) -> int:
        return self._m

    @property
    def txt2img(self) -> Tensor:
        return self._txt2img

    @property
    def device(self) -> torch.device:
        return self._txt2img.device

    def smallest_gallery(self, kind: str) -> int:
        """Columns of ``kind`` in the smallest episode (see :func:`~pillargraph.data.source.gallery_size`)."""
        check_kind(kind)
        return min(b.num_images if kind[2] == "i" else b.num_texts for b in self._bundles)

    def episode(self, e: int) -> SimilarityBundle:
        """Episode ``e`` as a bundle (local ids)."""
        if not 0 <= e < self.num_episodes:
            raise ValueError(f"e: expected an episode in [0, {self.num_episodes}), got {e}")
        return self._bundles[e]

    def episode_ids(self, e: int) -> Tuple[Tensor, Tensor]:
        """Global ``(image ids, caption ids)`` of episode ``e``'s items, in the episode's order."""
        g = self._groups[int(self._group_of[e])]
        s = int(self._slot[e])
        return g.ids["i"][s], g.ids["t"][s]

    # ------------------------------------------------------------- the source
    def _check(self, kind: str) -> None:
        check_kind(kind)
        if kind in ("i2i", "t2t") and kind not in self._groups[0].mats:
            field = "sim_i2i" if kind == "i2i" else "sim_t2t"
            raise ValueError(f"{field}: the episodes have no {field} matrix, which {kind} neighbours need")

    def topk(self, kind: str, k: int, rows: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Top-``k`` columns of each row within the row's episode, as global ids."""
        self._check(kind)
        smallest = self.smallest_gallery(kind)
        if not 1 <= k <= smallest:
            raise ValueError(f"k: {k} neighbours asked for, but the smallest episode's {kind} gallery has "
                             f"{smallest} items")
        n_rows = self._n if kind[0] == "i" else self._m
        rows = torch.arange(n_rows, device=self.device) if rows is None else rows.to(self.device).view(-1)
        dtype = self._groups[0].mats["i2t"].dtype
        idx = torch.empty(rows.numel(), k, dtype=torch.long, device=self.device)
        val = torch.empty(rows.numel(), k, dtype=dtype, device=self.device)
        ep, loc = (t[rows] for t in self._where[kind[0]])
        group = self._group_of[ep]
        for g, grp in enumerate(self._groups):
            at = ((group == g).nonzero().flatten() if len(self._groups) > 1
                  else torch.arange(rows.numel(), device=self.device))
            mat, cols = grp.matrix(kind), grp.ids[kind[2]]
            for a in range(0, at.numel(), _TOPK_CHUNK):
                pos = at[a:a + _TOPK_CHUNK]
                slot = self._slot[ep[pos]]
                v, i = torch.topk(mat[slot, loc[pos]], k, dim=1)
                idx[pos], val[pos] = cols[slot[:, None], i], v
        return idx, val

    def gather(self, kind: str, rows: Tensor, cols: Tensor) -> Tensor:
        """Similarities of (row, column) pairs of the same episode.

        Raises:
            ValueError: a pair spans two episodes (the split holds no score for it).
        """
        self._check(kind)
        rows, cols = torch.broadcast_tensors(rows.to(self.device), cols.to(self.device))
        er, lr = (t[rows] for t in self._where[kind[0]])
        ec, lc = (t[cols] for t in self._where[kind[2]])
        if not bool((er == ec).all()):
            raise ValueError(f"rows, cols: {kind} pairs across episodes have no score in an episodic split")
        if len(self._groups) == 1:
            return self._groups[0].matrix(kind)[self._slot[er], lr, lc]
        out = torch.empty(rows.shape, dtype=self._groups[0].mats["i2t"].dtype, device=self.device)
        group = self._group_of[er]
        for g, grp in enumerate(self._groups):
            m = group == g
            out[m] = grp.matrix(kind)[self._slot[er[m]], lr[m], lc[m]]
        return out

    def to(self, device: Union[str, torch.device]) -> "EpisodicSimilarity":
        """A copy with every episode on ``device``."""
        ids = [self.episode_ids(e) for e in range(self.num_episodes)]
        return EpisodicSimilarity([b.to(device) for b in self._bundles], [i for i, _ in ids], [t for _, t in ids])

    def __repr__(self) -> str:
        sizes = sorted(set(self.episode_sizes))
        intra = sorted(k for k in self._groups[0].mats if k != "i2t")
        return (f"EpisodicSimilarity(num_episodes={self.num_episodes}, images={self._n}, texts={self._m}, "
                f"episode_images={episode_sizes_label(sizes)}, intra={intra})")


def mix_splits(splits: Sequence[Union[SimilarityBundle, "EpisodicSimilarity"]],
               name: str = "train") -> "EpisodicSimilarity":
    """Several dense training splits as one: every episode of each (a bundle is one episode), ids laid end to end.

    One re-ranker trained on several base models' scores at once (e.g. the
    same training images scored by two backbones) sees more than one level of
    base reliability; on the caption proxy such a model transfers to a scorer
    it has never seen far better than one trained on a single scorer
    (``benchmarks/transfer_mixed.py``). The splits need not share images or
    sizes; intra-modal matrices must be in all or none. Cut each split into its
    episodes first (:func:`as_episodes` does both for a list of splits).

    Args:
        splits: the training splits, dense bundles or dense episodes.
        name: how error messages call the splits (e.g. their file names).

    Raises:
        ValueError: no splits, neighbour lists among them (they hold no dense
            episodes to mix; naming which one), or intra matrices in some only.
    """
    splits = list(splits)
    if not splits:
        raise ValueError(f"{name}: expected one or more training splits to mix, got none")
    episodes: List[SimilarityBundle] = []
    for i, split in enumerate(splits):
        if isinstance(split, EpisodicSimilarity):
            episodes += [split.episode(e) for e in range(split.num_episodes)]
        elif isinstance(split, SimilarityBundle):
            episodes.append(split)
        else:
            raise ValueError(f"{name} (split {i + 1} of {len(splits)}): only dense bundles can be mixed with other "
                             f"splits, got {type(split).__name__}")
    try:
        return EpisodicSimilarity(episodes)
    except ValueError as err:
        raise ValueError(f"{name}: {err}") from None


def as_episodes(split: Union[SimilarityBundle, NeighborLists, "EpisodicSimilarity",
                             Sequence[Union[SimilarityBundle, "EpisodicSimilarity"]]], sizes: Sequence[int],
                seed: int = 0, name: str = "train") -> Union[SimilarityBundle, NeighborLists, "EpisodicSimilarity"]:
    """A training split in the episodes of ``sizes`` (:func:`~pillargraph.data.partition.episode_partition`).

    A dense bundle is cut here; neighbour lists must already have been searched
    within episodes of these sizes (``pillargraph neighbors --episode-images``),
    since lists over the whole split do not hold an episode's own neighbours
    (unless the split is smaller than one episode).
    Empty ``sizes`` returns ``split`` unchanged (training on the whole split).
    A list of dense splits (e.g. one per base scorer) is cut split by split and
    mixed into one (:func:`mix_splits`).

    Args:
        split: the training split, or a list of dense ones.
        sizes: images per episode (cycled), or ``()`` for none.
        seed: the partition's seed (default: :obj:`0`).
        name: how error messages call the split (e.g. its file name).

    Raises:
        ValueError: lists over the whole split, lists searched in episodes of other
            sizes, sizes the split cannot fill, or lists in a list of splits.
    """
    if isinstance(split, (list, tuple)):
        return mix_splits([s if isinstance(s, NeighborLists) else as_episodes(s, sizes, seed, name) for s in split],
                          name)
    if not sizes or isinstance(split, EpisodicSimilarity):
        return split
    label = episode_sizes_label(sizes)
    if isinstance(split, SimilarityBundle):
        return EpisodicSimilarity.from_bundle(split, tuple(sizes), seed)
    if not isinstance(split, NeighborLists):
        raise ValueError(f"{name}: expected a bundle, neighbour lists or episodes, got {type(split).__name__}")
    want = sorted(p.numel() for p in episode_partition(split.num_images, tuple(sizes), seed))
    if split.image_episode is None and len(want) == 1:
        return split  # the whole split is one episode: its lists are the episode's
    if split.image_episode is None:
        raise ValueError(f"{name}: its neighbour lists span the whole split, but episodes of {label} images need "
                         f"lists searched within each episode: build them with `pillargraph neighbors EMB.npz "
                         f"--episode-images {label} --out LISTS.npz`, or train on the whole split with "
                         f"--episode-images 0")
    if sorted(split.episode_sizes) != want:
        have = episode_sizes_label(sorted(set(split.episode_sizes)))
        raise ValueError(f"{name}: its lists were searched in episodes of {have} images, not the {label} asked "
                         f"for; pass --episode-images {have}, or rebuild the lists with `pillargraph neighbors "
                         f"... --episode-images {label}`")
    return split
