"""How a split's images are cut into episodes (shared by dense episodes and episodic neighbour lists).

One function decides which images form which episode, so that the command
line, the Python API and the benchmarks cut a split the same way, whether the
episodes end up as dense matrices (:class:`~pillargraph.data.EpisodicSimilarity`)
or as neighbour lists searched within each episode
(:meth:`~pillargraph.data.NeighborLists.from_embeddings` with ``episodes=``).
"""
from __future__ import annotations

from typing import List, Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = ["episode_partition", "check_episode_sizes", "episode_texts", "episode_sizes_label"]


def check_episode_sizes(sizes: Union[int, Sequence[int]], name: str = "episode_images") -> Tuple[int, ...]:
    """Episode sizes as a tuple of ints >= 2, or :class:`ValueError` naming ``name``."""
    sizes = tuple(sizes) if isinstance(sizes, (tuple, list)) else (sizes,)
    if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 2 for s in sizes):
        raise ValueError(f"{name}: expected one or more image counts of at least 2, got {list(sizes)}")
    return sizes


def episode_sizes_label(sizes: Sequence[int]) -> str:
    """``(1000, 5000)`` -> ``'1000,5000'``: how the CLI and results files write episode sizes."""
    return ",".join(str(int(s)) for s in sizes)


def episode_partition(num_images: int, sizes: Union[int, Sequence[int]], seed: int = 0) -> List[Tensor]:
    """The images of a split cut into episodes: sorted id tensors, one per episode.

    The images are shuffled with ``seed`` and cut into consecutive pieces whose
    sizes cycle through ``sizes`` (``(1000, 5000)``: 1000, 5000, 1000, ...).
    Images left over when the next piece would not fit go to a last episode
    when at least ``min(sizes)`` remain, and are otherwise added to the last
    episode cut, so every image belongs to exactly one episode. A split smaller
    than the smallest size is one episode.

    Args:
        num_images: images ``N`` of the split.
        sizes: images per episode, one size or several (cycled).
        seed: seeds the shuffle (default: :obj:`0`); the same arguments always
            give the same episodes, whichever code path asks.

    Raises:
        ValueError: a size below 2.
    """
    sizes = check_episode_sizes(sizes)
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(int(seed)))
    cuts, start, i = [], 0, 0
    while num_images - start >= sizes[i % len(sizes)]:
        cuts.append((start, start + sizes[i % len(sizes)]))
        start, i = start + sizes[i % len(sizes)], i + 1
    rest = num_images - start
    if rest >= min(sizes) or not cuts:
        cuts.append((start, num_images))
    elif rest:
        cuts[-1] = (cuts[-1][0], num_images)
    return [torch.sort(order[a:b]).values for a, b in cuts]


def episode_texts(txt2img: Tensor, images: Tensor) -> Tensor:
    """The sorted ids of the captions of ``images`` (every caption goes with its image)."""
    images = images.to(txt2img.device)
    size = max(int(txt2img.max()) if txt2img.numel() else -1, int(images.max()) if images.numel() else -1) + 1
    member = torch.zeros(size, dtype=torch.bool, device=txt2img.device)
    member[images] = True
    return member[txt2img].nonzero().flatten()
