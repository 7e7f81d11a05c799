"""Assemble the next training batch in a background thread while the current one trains."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, Optional, TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")
R = TypeVar("R")


def prefetched(make: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``make(item)`` for each item in order, the next one computed in one background thread
    while the caller works on the current one.

    Calls run one at a time and in order, so a ``make`` that draws from a random
    generator draws exactly what a plain loop draws; at most two results are
    alive at once. torch releases the GIL inside its kernels, so batch assembly
    (index gathers from the split's matrices) overlaps the training step. An
    exception raised by ``make`` is raised here, at its item.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pillargraph-batches") as pool:
        pending: Optional[Future] = None
        for item in items:
            ahead = pool.submit(make, item)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()
