"""A process pool under a governor: adaptive concurrency and chunk size for ``Pool.map(chunksize=)`` users.

`governed_process_map` sends chunks of items to a
`concurrent.futures.ProcessPoolExecutor`: the governor decides how many
chunks are in the pool at once (a chunk beyond the processes only queues,
and the policy sees that queueing as latency), an `AdaptiveChunker` decides
how many items a chunk carries (toward its target time per chunk, so cheap
items do not pay a pickling round trip each). Items run one by one inside
the worker process; an item's exception is its own, not its chunk's
neighbours'.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Executor, ProcessPoolExecutor
from typing import Any, Literal, TypeVar, Unpack, overload

from aiogovernor._chunking import Chunker
from aiogovernor.limits import LatencyAIMD

from ._gate import Governor
from ._map import ThreadMapOptions, governed_batches

__all__ = ["governed_process_map"]

T = TypeVar("T")
R = TypeVar("R")


class _ItemFailed:
    """An item's exception, carried back from the worker process in its chunk's results."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_ItemFailed, (self.error,))


def _run_chunk(fn: Callable[[Any], Any], chunk: list[Any], collect: bool) -> list[Any]:
    """Runs in the worker process: one result per item; exceptions in place when ``collect``."""
    if not collect:
        return [fn(item) for item in chunk]
    out: list[Any] = []
    for item in chunk:
        try:
            out.append(fn(item))
        except Exception as exc:
            out.append(_ItemFailed(exc))
    return out


def _workers_of(executor: Executor) -> int:
    count = getattr(executor, "_max_workers", None)
    return count if isinstance(count, int) and count > 0 else os.cpu_count() or 1


@overload
def governed_process_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: Executor | None = None,
    processes: int | None = None,
    chunker: int | Chunker | None = None,
    return_exceptions: Literal[False] = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R]: ...


@overload
def governed_process_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: Executor | None = None,
    processes: int | None = None,
    chunker: int | Chunker | None = None,
    return_exceptions: Literal[True],
    **options: Unpack[ThreadMapOptions],
) -> list[R | Exception]: ...


def governed_process_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    executor: Executor | None = None,
    processes: int | None = None,
    chunker: int | Chunker | None = None,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R] | list[R | Exception]:
    """``Pool.map(fn, items, chunksize=...)`` with the chunk size and the chunks in flight adapted.

    ```python
    from aiogovernor.sync import governed_process_map

    results = governed_process_map(crunch, items)            # instead of
    # with multiprocessing.Pool() as pool: pool.map(crunch, items, chunksize=64)
    ```

    Args:
        fn: A plain, picklable function (defined at a module's top level).
        items: An iterable (its items picklable), possibly endless.
        executor: The process pool; None starts a `ProcessPoolExecutor` with
            ``processes`` workers for this call and shuts it down after.
        processes: Worker processes when ``executor`` is None (None: the CPU count).
        chunker: Items per chunk: a fixed number or a `aiogovernor.Chunker`;
            None makes an `aiogovernor.AdaptiveChunker` (0.2 s per chunk).
        return_exceptions: Put an item's exception in its place instead of
            failing on the first.
        **options: As `governed_map` (`ThreadMapOptions`). Without
            ``governor``, a thread gate named ``processes:<fn>`` whose limit
            (chunks in flight) may go from 1 to twice the processes.

    Returns:
        One result per item, in input order.
    """
    own = executor is None
    pool: Executor = ProcessPoolExecutor(processes) if executor is None else executor
    made: Governor | None = None
    try:
        n = _workers_of(pool)
        if options.get("governor") is None:
            name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
            made = options["governor"] = Governor(
                f"processes:{name}", LatencyAIMD(min_limit=1, max_limit=2 * n, initial_limit=n)
            )
        options.setdefault("max_workers", 2 * n)
        collect = bool(return_exceptions)

        def send(chunk: list[T]) -> list[Any]:
            return pool.submit(_run_chunk, fn, chunk, collect).result()

        results = governed_batches(send, items, chunker=chunker, return_exceptions=collect, **options)
    finally:
        if own:
            pool.shutdown(wait=True, cancel_futures=True)
        if made is not None:
            made.close()  # its learned limit and chunk size, saved for the next run
    return [r.error if isinstance(r, _ItemFailed) else r for r in results]
