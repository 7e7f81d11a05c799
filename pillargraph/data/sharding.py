"""Sharding rules shared by every kind of sharded work: which queries a shard holds, and whether parts form one run.

The sharded re-ranking (:mod:`pillargraph.shard`) and the sharded neighbour search
(:mod:`pillargraph.data.list_shards`) both cut their queries with :func:`shard_range`, name
their inputs by :func:`file_fingerprint` and check a set of parts with :func:`check_shard_set`.
They live here, below both, and :mod:`pillargraph.shard` re-exports them.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Protocol, Sequence, Tuple, TypeVar, Union

__all__ = ["ShardLike", "parse_shard", "shard_from_env", "shard_range", "file_fingerprint", "check_shard_set",
           "part_names"]


def parse_shard(text: str) -> Tuple[int, int]:
    """``'I/N'`` as ``(I, N)``, with ``1 <= I <= N``.

    Raises:
        ValueError: not two positive integers ``I/N`` with ``I <= N``.
    """
    parts = str(text).split("/")
    try:
        index, count = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"shard: expected I/N (e.g. 2/4, I counted from 1), got {text!r}") from None
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard: expected I/N with 1 <= I <= N, got {text!r}")
    return index, count


def shard_from_env(env: Optional[Mapping[str, str]] = None) -> Tuple[int, int]:
    """``(I, N)`` of this process under ``torchrun``: ``(RANK + 1, WORLD_SIZE)`` (``(1, 1)`` outside it).

    Raises:
        ValueError: ``RANK`` or ``WORLD_SIZE`` is not an integer, or the rank is out of range.
    """
    env = os.environ if env is None else env
    try:
        rank, world = int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1))
    except ValueError:
        raise ValueError(f"shard: RANK and WORLD_SIZE must be integers, got RANK={env.get('RANK')!r} "
                         f"WORLD_SIZE={env.get('WORLD_SIZE')!r}") from None
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard: expected 0 <= RANK < WORLD_SIZE, got RANK={rank} WORLD_SIZE={world}")
    return rank + 1, world


def shard_range(num_queries: int, index: int, count: int, block: int = 1) -> Tuple[int, int]:
    """The queries ``[start, stop)`` of shard ``index`` (from 1) of ``count``.

    The ``ceil(num_queries / block)`` blocks of ``block`` consecutive queries are
    dealt out as evenly as contiguity allows (shard sizes differ by at most one
    block); when there are fewer blocks than shards, some shards are empty (with
    one block, all the queries are in shard ``N``).

    Args:
        num_queries: queries of the direction.
        index: the shard, ``1 <= index <= count``.
        count: number of shards.
        block: shard boundaries fall on multiples of ``block`` (the scoring
            batch size makes the shards' forward passes those of the unsharded run).
    """
    if count < 1 or not 1 <= index <= count:
        raise ValueError(f"shard: expected 1 <= index <= count, got {index}/{count}")
    if block < 1:
        raise ValueError(f"block: must be positive, got {block}")
    blocks = -(-num_queries // block)
    start, stop = (index - 1) * blocks // count * block, index * blocks // count * block
    return min(start, num_queries), min(stop, num_queries)


def file_fingerprint(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """``{'size': bytes, 'sha256': hex digest}`` of a file's contents (read in 1 MiB pieces).

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(1 << 20), b""):
            digest.update(piece)
    return {"size": path.stat().st_size, "sha256": digest.hexdigest()}


class ShardLike(Protocol):
    """What :func:`check_shard_set` reads of a part: its shard, its name and its row ranges."""

    index: int
    count: int

    @property
    def name(self) -> str: ...

    def ranges(self) -> Dict[str, Tuple[int, int]]: ...


P = TypeVar("P", bound=ShardLike)


def check_shard_set(parts: Sequence[P], settings: Callable[[P], Dict[str, Any]],
                    expected: Callable[[P], Dict[str, Tuple[int, int]]]) -> List[P]:
    """The parts in shard order, after checking that they are exactly the ``N`` shards of one run.

    Shared by every kind of sharded work (re-ranking parts in :mod:`pillargraph.shard`,
    neighbour-list parts in :mod:`pillargraph.data.list_shards`).

    Args:
        parts: the parts, in any order.
        settings: what every part of one run must share, by a name for messages
            (include the shard count).
        expected: the ranges :meth:`ShardLike.ranges` must return for a part.

    Raises:
        ValueError: one line naming the problem: no parts, parts of different
            runs (naming the settings that differ), a repeated shard, a missing
            shard, or a part whose ranges are not its shard's.
    """
    if not parts:
        raise ValueError("parts: no part files given")
    first = parts[0]
    ref = settings(first)
    for p in parts[1:]:
        other = settings(p)
        diff = [k for k in ref if ref[k] != other[k]]
        if diff:
            raise ValueError(f"{p.name}: not from the same run as {first.name} (different {', '.join(diff)})")
    seen: Dict[int, P] = {}
    for p in parts:
        if p.index in seen:
            raise ValueError(f"shard {p.index}/{p.count} given twice: {seen[p.index].name} and {p.name}")
        seen[p.index] = p
    missing = [i for i in range(1, first.count + 1) if i not in seen]
    if missing:
        raise ValueError(f"missing shard(s) {', '.join(map(str, missing))} of {first.count} "
                         f"(got {', '.join(map(str, sorted(seen)))}) in {part_names(parts)}")
    for p in parts:
        want = expected(p)
        if p.ranges() != want:
            raise ValueError(f"{p.name}: query ranges {p.ranges()} are not those of shard {p.index}/{p.count} "
                             f"({want}); the part is damaged")
    return [seen[i] for i in range(1, first.count + 1)]


def part_names(parts: Sequence[ShardLike]) -> str:
    """The parts' names (their files), comma-separated, for messages."""
    return ", ".join(p.name for p in parts)
