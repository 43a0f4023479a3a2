"""Fan out over coroutines under a governor: a pool of workers, never a task per item.

`governed_map` (results in input order), `governed_imap` (the same, streamed),
`governed_imap_unordered` (streamed as they finish) and `governed_batches`
(chunks sized by an `AdaptiveChunker`) share one engine: a pool of worker
tasks draining one iterator. Each worker pulls an item, takes a permit
(``async with governor``), awaits the call, stores the result and pulls the
next. The pool grows when the governor's limit rises and a worker retires
when it falls, so at most about ``limit`` items are pulled at once and
memory stays O(limit) whatever the input's length (an endless generator
included). A task per item would cost more than the limiter itself.
"""

from __future__ import annotations

import functools
import inspect
import math
import random
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, overload

from ._chunking import AdaptiveChunker
from ._governor import Governor, Permit
from ._progress import MapProgress, ProgressCallback, RichBar, rich_bar
from ._retry import Retry, RetryBudget
from ._validate import check_float

if TYPE_CHECKING:
    import anyio.abc

__all__ = ["governed_batches", "governed_imap", "governed_imap_unordered", "governed_map"]

T = TypeVar("T")
R = TypeVar("R")

_PROGRESS_EVERY_S = 0.1  # report at most this often (clock time), plus once at the end


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    )


def _check_common(
    fn: object,
    items: object,
    governor: object,
    retry: object,
    retry_budget: object,
    timeout_s: float | None,
    progress: object,
) -> None:
    if not callable(fn):
        raise TypeError(f"fn must be an async callable (a coroutine function), got {fn!r}")
    if not _is_async_callable(fn):
        raise TypeError(
            f"fn must be a coroutine function (async def), got the synchronous {fn!r}; "
            "wrap blocking work in an async def (e.g. with anyio.to_thread.run_sync)"
        )
    if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | bytes):
        raise TypeError(f"items must be an iterable or an async iterable (not a string), got {items!r}")
    if governor is not None and not isinstance(governor, Governor):
        raise TypeError(f"governor must be a Governor or None, got {governor!r}")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a Retry or None, got {retry!r}")
    if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
        raise TypeError(f"retry_budget must be a RetryBudget or None, got {retry_budget!r}")
    if timeout_s is not None:
        check_float("timeout_s", timeout_s, low=0.0, low_open=True)
    if progress is not None and not isinstance(progress, bool) and not callable(progress):
        raise TypeError(f"progress must be a callable, True, False or None, got {progress!r}")


def _default_governor(fn: object) -> Governor:
    # Named after the function, so that its learned state is kept per function.
    name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return Governor(f"map:{name}")


def _retry_after_of(exc: BaseException) -> float | None:
    """The Retry-After an exception carries (`OverloadError` and look-alikes), if usable."""
    value = getattr(exc, "retry_after_s", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


class _Pool:
    """The engine: workers pull units (items or chunks) from one source and call ``fn`` under the governor.

    ``put(index, value)`` receives each unit's result (or its exception, when
    exceptions are collected); ``room()`` says whether one more unit may be
    pulled (backpressure for the streaming forms).
    """

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        governor: Governor,
        return_exceptions: bool,
        retry: Retry | None,
        retry_budget: RetryBudget | None,
        timeout_s: float | None,
        progress: ProgressCallback | None,
        chunker: AdaptiveChunker | None,
        seed: int | None,
    ) -> None:
        import anyio

        self._fn = fn
        self._gov = governor
        self._return_exceptions = return_exceptions
        self._retry = retry
        if retry_budget is None and retry is not None:
            retry_budget = retry.new_budget()
        self._budget = retry_budget
        self._timeout_s = timeout_s
        self._chunker = chunker
        self._rng = random.Random(seed)
        self._simple = retry is None and timeout_s is None and chunker is None
        self._total = len(items) if isinstance(items, Sequence | set | frozenset | dict) else None

        self._next: Callable[[], Any] | None = None
        self._anext: Callable[[], Awaitable[Any]] | None = None
        if isinstance(items, AsyncIterable):
            self._anext = aiter(items).__anext__
            self._lock = anyio.Lock()
        else:
            self._next = iter(items).__next__

        self.put: Callable[[int, Any], None] = lambda index, value: None
        # Units pulled but not consumed, at most: None for no bound (the
        # results are all kept anyway), 0 for one that follows the limit.
        self.capacity: int | None = None
        self.consumed = 0
        self.pulled = 0
        self.exhausted = False
        self.error: BaseException | None = None
        self._room = anyio.Event()
        self._room_wanted = False
        self._workers = 0
        self._backing_off = 0  # workers asleep before a retry
        self._tg: anyio.abc.TaskGroup | None = None
        self.scope = anyio.CancelScope()

        self.done = 0
        self.failed = 0
        self._progress = progress
        self._started_at = 0.0
        self._next_report = math.inf

    # -- running ---------------------------------------------------------

    async def run(self) -> None:
        """Run the pool until the source is drained, a failure stops it, or it is cancelled."""
        import anyio

        if self._progress is not None:
            self._started_at = self._gov._now()
            self._next_report = self._started_at + _PROGRESS_EVERY_S
        with self.scope:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                start = max(1, self._gov.limit)
                if self._total is not None:
                    start = max(1, min(start, self._total))
                self._spawn(start)
        self._tg = None
        if self._progress is not None:
            self._report(self._gov._now())

    def _spawn(self, n: int) -> None:
        assert self._tg is not None
        for _ in range(n):
            self._workers += 1
            self._tg.start_soon(self._worker)

    def consumed_one(self) -> None:
        """The consumer took one unit: make room for the workers waiting for it."""
        self.consumed += 1
        if self._room_wanted:
            import anyio

            self._room_wanted = False
            self._room.set()
            self._room = anyio.Event()

    def _fatal(self, exc: BaseException) -> None:
        """Stop everything and make ``exc`` the map's exception (the first one wins)."""
        if self.error is None:
            self.error = exc
        self.scope.cancel()

    async def _worker(self) -> None:
        try:
            await self._work()
        finally:
            self._workers -= 1

    async def _work(self) -> None:
        # Loop invariants in locals: this loop runs once per item.
        gov = self._gov
        fn = self._fn
        next_ = self._next
        chunked = self._chunker is not None
        simple = self._simple
        put = self.put
        reporting = self._progress is not None
        while True:
            capacity = self.capacity
            if capacity is not None and self.pulled - self.consumed >= (capacity or 2 * gov.limit + 16):
                self._room_wanted = True
                await self._room.wait()
                continue
            if chunked:
                unit: Any = await self._pull_chunk()
                if not unit:
                    return
            elif next_ is not None:
                try:
                    unit = next_()
                except StopIteration:
                    self.exhausted = True
                    return
                except Exception as exc:
                    self._fatal(exc)
                    return
            else:
                found, unit = await self._pull_async()
                if not found:
                    return
            index = self.pulled
            self.pulled += 1
            try:
                if simple:
                    async with gov:
                        value = await fn(unit)
                else:
                    value = await self._call(unit)
            except Exception as exc:
                self.failed += len(unit) if chunked else 1
                if not self._return_exceptions:
                    self._fatal(exc)
                    return
                # A failed chunk fails each of its items, in place.
                put(index, [exc] * len(unit) if chunked else exc)
            else:
                self.done += len(unit) if chunked else 1
                put(index, value)
            if reporting:
                now = gov._now()
                if now >= self._next_report:
                    self._report(now)
            # Follow the limit: one worker per permit the governor allows
            # (workers waiting out a retry's backoff hold none).
            limit = gov.limit
            active = self._workers - self._backing_off
            if active > limit and active > 1:
                return
            if active < limit and not self.exhausted:
                self._spawn(limit - active)

    async def _pull_async(self) -> tuple[bool, Any]:
        # An async generator cannot be advanced by two tasks at once.
        assert self._anext is not None
        async with self._lock:
            return await self._pull_async_locked()

    async def _pull_async_locked(self) -> tuple[bool, Any]:
        assert self._anext is not None
        if self.exhausted:
            return False, None
        try:
            return True, await self._anext()
        except StopAsyncIteration:
            self.exhausted = True
        except Exception as exc:
            self._fatal(exc)
        return False, None

    async def _pull_chunk(self) -> list[Any]:
        assert self._chunker is not None
        size = self._chunker.size
        chunk: list[Any] = []
        if self.exhausted:
            return chunk
        if self._next is not None:
            try:
                while len(chunk) < size:
                    chunk.append(self._next())
            except StopIteration:
                self.exhausted = True
            except Exception as exc:
                self._fatal(exc)
                return []
            return chunk
        # One chunk is pulled under the lock: items of concurrent chunks must not interleave.
        async with self._lock:
            while len(chunk) < size:
                found, item = await self._pull_async_locked()
                if not found:
                    break
                chunk.append(item)
        return chunk

    async def _call(self, unit: Any) -> Any:
        """One unit with its options: per-attempt timeout, chunk timing, retries."""
        import anyio

        gov = self._gov
        retry = self._retry
        budget = self._budget
        if budget is not None:
            budget.record_request()
        attempt = 1
        while True:
            permit: Permit | None = None
            try:
                async with gov as permit:
                    value = await self._attempt(unit)
                if self._chunker is not None:
                    value = list(value)
                    if len(value) != len(unit):
                        raise ValueError(
                            f"fn returned {len(value)} results for a chunk of {len(unit)} items; "
                            "it must return one result per item, in order"
                        )
                return value
            except Exception as exc:
                # The permit is back (its sample recorded and classified) before any retry waits.
                if (
                    retry is None
                    or permit is None
                    or permit.outcome is None
                    or not retry.should_retry(attempt, permit.outcome)
                    or (budget is not None and not budget.try_spend())
                ):
                    raise
                retry_after_s = _retry_after_of(exc)
                delay_s = retry.delay_s(attempt, rng=self._rng, retry_after_s=retry_after_s)
                if retry_after_s is not None:
                    gov.pause(delay_s)
            # The permit is free while this worker waits: let another use it,
            # but with at most ``limit`` retries waiting, so memory stays O(limit).
            self._backing_off += 1
            try:
                if (
                    not self.exhausted
                    and self._backing_off <= gov.limit
                    and self._workers - self._backing_off < gov.limit
                ):
                    self._spawn(1)
                await anyio.sleep(delay_s)
            finally:
                self._backing_off -= 1
            attempt += 1

    async def _attempt(self, unit: Any) -> Any:
        if self._chunker is not None:
            with self._chunker.measure(len(unit)):
                return await self._timed(unit)
        return await self._timed(unit)

    async def _timed(self, unit: Any) -> Any:
        if self._timeout_s is None:
            return await self._fn(unit)
        import anyio

        # A hung call is cancelled; its TimeoutError reaches the permit as overload.
        with anyio.fail_after(self._timeout_s):
            return await self._fn(unit)

    def _report(self, now: float) -> None:
        assert self._progress is not None
        self._next_report = now + _PROGRESS_EVERY_S
        elapsed = max(0.0, now - self._started_at)
        finished = self.done + self.failed
        self._progress(
            MapProgress(
                done=self.done,
                failed=self.failed,
                total=self._total,
                limit=self._gov.limit,
                inflight=self._gov.inflight,
                elapsed_s=elapsed,
                throughput_per_s=finished / elapsed if elapsed > 0 else 0.0,
            )
        )


def _progress_callback(progress: ProgressCallback | bool | None, name: str) -> tuple[Any, RichBar | None]:
    if progress is True:
        bar = rich_bar(name)
        return bar, bar
    if progress is None or progress is False:
        return None, None
    return progress, None


async def _collect(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    governor: Governor | None,
    chunker: AdaptiveChunker | None,
    return_exceptions: bool,
    retry: Retry | None,
    retry_budget: RetryBudget | None,
    timeout_s: float | None,
    progress: ProgressCallback | bool | None,
    seed: int | None,
) -> list[Any]:
    """Run the pool to the end; one result per unit pulled (an item, or a chunk), in order."""
    gov = governor or _default_governor(fn)
    callback, bar = _progress_callback(progress, gov.name)
    pool = _Pool(
        fn,
        items,
        governor=gov,
        return_exceptions=return_exceptions,
        retry=retry,
        retry_budget=retry_budget,
        timeout_s=timeout_s,
        progress=callback,
        chunker=chunker,
        seed=seed,
    )
    results: dict[int, Any] = {}
    pool.put = results.__setitem__
    if bar is not None:
        bar.start()
    try:
        await pool.run()
    finally:
        if bar is not None:
            bar.stop()
    if pool.error is not None:
        raise pool.error
    return [results[i] for i in range(len(results))]


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: Literal[False] = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
) -> list[R]: ...


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: Literal[True],
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
) -> list[R | Exception]: ...


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: bool = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
) -> list[R] | list[R | Exception]: ...


async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: bool = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
) -> list[R] | list[R | Exception]:
    """Call ``await fn(item)`` for every item, as many at once as the governor allows; results in input order.

    A pool of workers drains ``items`` lazily: at most about ``limit`` items
    are pulled at once, so an iterator of any length works (results are kept
    until the end; use `governed_imap` to stream them). The pool grows and
    shrinks with the governor's limit.

    Every item ends as a result or a failure. By default the first exception
    cancels the calls in flight and is raised, with no permit leaked; with
    ``return_exceptions=True`` exceptions take their item's place in the
    list. Cancelling the caller cancels every call in flight.

    Args:
        fn: A coroutine function taking one item.
        items: An iterable or async iterable, possibly endless.
        governor: Gates the calls; None makes one with the default policy,
            named after ``fn`` (``map:<qualname>``).
        return_exceptions: Collect exceptions in place instead of failing fast.
        retry: Retry failed attempts (by outcome); each attempt takes its own
            permit and is its own sample, the permit is released while
            waiting, and a Retry-After both delays the retry and pauses the
            governor. The exception that ended the last attempt is the item's.
        retry_budget: Shares a budget across calls; None makes one from
            ``retry`` for this call.
        timeout_s: Cancel an attempt running longer than this; it fails with
            `TimeoutError`, an ``overload`` sample.
        progress: A callback receiving `MapProgress` (at most every 0.1 s of
            clock time, and once at the end); True shows a rich progress bar
            when rich is installed, and nothing when it is not.
        seed: Seeds the retry jitter, for reproducible schedules.

    Returns:
        One result per item, in input order (exceptions in place when
        ``return_exceptions`` is true).

    Raises:
        TypeError: If ``fn`` is not a coroutine function, ``items`` not iterable,
            or an option has the wrong type.
        ValueError: If ``timeout_s`` is not positive.
    """
    _check_common(fn, items, governor, retry, retry_budget, timeout_s, progress)
    return await _collect(
        fn,
        items,
        governor=governor,
        chunker=None,
        return_exceptions=return_exceptions,
        retry=retry,
        retry_budget=retry_budget,
        timeout_s=timeout_s,
        progress=progress,
        seed=seed,
    )


async def governed_batches(
    fn: Callable[[list[T]], Awaitable[Iterable[R]]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    chunker: AdaptiveChunker | None = None,
    governor: Governor | None = None,
    return_exceptions: bool = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
) -> list[R]:
    """Call ``await fn(chunk)`` on lists of items whose size a chunker adapts; results flattened, in order.

    The chunker steers how many items one call carries (toward its target
    duration) while the governor steers how many calls run at once. ``fn``
    must return one result per item of its chunk, in order. Each successful
    (or timed-out) attempt's duration is fed to the chunker.

    Args:
        fn: A coroutine function taking a list of items, returning their results.
        items: An iterable or async iterable, possibly endless.
        chunker: Sizes the chunks; None makes an `AdaptiveChunker` with its
            defaults (0.2 s per call) reading the governor's clock.
        governor: Gates the calls (one permit per chunk); see `governed_map`.
        return_exceptions: Put a failed chunk's exception in place of each of
            its items instead of failing fast.
        retry: Retry failed chunk attempts; see `governed_map`.
        retry_budget: Shares a retry budget across calls.
        timeout_s: Cancel a chunk attempt running longer than this.
        progress: A callback receiving `MapProgress` (counted in items), or
            True for a rich bar; see `governed_map`.
        seed: Seeds the retry jitter.

    Returns:
        One result per item, in input order.

    Raises:
        TypeError: As `governed_map`, or if ``chunker`` is not an `AdaptiveChunker`.
        ValueError: If ``timeout_s`` is not positive; and (as the failure of
            that chunk) if ``fn`` returns the wrong number of results.
    """
    _check_common(fn, items, governor, retry, retry_budget, timeout_s, progress)
    if chunker is not None and not isinstance(chunker, AdaptiveChunker):
        raise TypeError(f"chunker must be an AdaptiveChunker or None, got {chunker!r}")
    governor = governor or _default_governor(fn)
    chunks = await _collect(
        fn,
        items,
        governor=governor,
        chunker=chunker or AdaptiveChunker(clock=governor._now),
        return_exceptions=return_exceptions,
        retry=retry,
        retry_budget=retry_budget,
        timeout_s=timeout_s,
        progress=progress,
        seed=seed,
    )
    return [result for chunk in chunks for result in chunk]


class _Stream(Generic[R]):
    """The async iterator `governed_imap` and `governed_imap_unordered` yield."""

    def __init__(self, pool: _Pool, *, ordered: bool) -> None:
        import anyio

        self._pool = pool
        self._ordered = ordered
        self._buffer: dict[int, Any] = {}
        self._queue: deque[Any] = deque()
        self._next_index = 0
        self._ready = anyio.Event()
        self._waiting = False
        self.finished = False
        pool.put = self._put_ordered if ordered else self._put_unordered

    def _wake(self) -> None:
        if self._waiting:
            import anyio

            self._waiting = False
            self._ready.set()
            self._ready = anyio.Event()

    def _put_ordered(self, index: int, value: Any) -> None:
        self._buffer[index] = value
        if index == self._next_index:
            self._wake()

    def _put_unordered(self, index: int, value: Any) -> None:
        self._queue.append(value)
        self._wake()

    def finish(self) -> None:
        """The pool has stopped: nothing more will come."""
        self.finished = True
        self._wake()

    def __aiter__(self) -> _Stream[R]:
        return self

    async def __anext__(self) -> R:
        pool = self._pool
        while True:
            if self._ordered:
                if self._next_index in self._buffer:
                    value = self._buffer.pop(self._next_index)
                    self._next_index += 1
                    pool.consumed_one()
                    return value  # type: ignore[no-any-return]
            elif self._queue:
                pool.consumed_one()
                return self._queue.popleft()  # type: ignore[no-any-return]
            if pool.error is not None:
                raise pool.error
            if self.finished:
                raise StopAsyncIteration
            self._waiting = True
            await self._ready.wait()


def _stream(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    ordered: bool,
    governor: Governor | None,
    return_exceptions: bool,
    retry: Retry | None,
    retry_budget: RetryBudget | None,
    timeout_s: float | None,
    progress: ProgressCallback | bool | None,
    seed: int | None,
    buffer_size: int | None,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    _check_common(fn, items, governor, retry, retry_budget, timeout_s, progress)
    if buffer_size is not None and (
        isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1
    ):
        raise ValueError(f"buffer_size must be an integer >= 1 or None, got {buffer_size!r}")
    gov = governor or _default_governor(fn)
    callback, bar = _progress_callback(progress, gov.name)

    @asynccontextmanager
    async def run() -> AsyncIterator[AsyncIterator[R]]:
        import anyio

        pool = _Pool(
            fn,
            items,
            governor=gov,
            return_exceptions=return_exceptions,
            retry=retry,
            retry_budget=retry_budget,
            timeout_s=timeout_s,
            progress=callback,
            chunker=None,
            seed=seed,
        )
        # By default, room for every worker's result plus as many again queued
        # for the consumer: memory stays O(limit), a slow consumer slows the pool.
        pool.capacity = buffer_size or 0
        stream: _Stream[R] = _Stream(pool, ordered=ordered)

        async def drive() -> None:
            try:
                await pool.run()
            finally:
                stream.finish()

        if bar is not None:
            bar.start()
        failure: Exception | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(drive)
                try:
                    yield stream
                except Exception as exc:
                    # Raised past the task group it would come out wrapped in a group.
                    failure = exc
                finally:
                    # The consumer is done (or gone): stop the calls still running.
                    pool.scope.cancel()
        finally:
            if bar is not None:
                bar.stop()
        if failure is not None:
            raise failure

    return run()


def governed_imap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: bool = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
    buffer_size: int | None = None,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Stream ``await fn(item)`` results in input order, as many calls at once as the governor allows.

    The calls run in a task group for as long as the ``async with`` block
    (structured concurrency: leaving the block cancels what still runs)::

        async with governed_imap(fetch, urls, governor=gov) as results:
            async for page in results:
                ...

    Items are pulled lazily and results wait for the consumer in a bounded
    buffer, so memory stays O(limit) even for an endless input; a slow
    consumer slows the pool down. A slow item holds back the ones after it
    (order is kept), up to the buffer's size.

    Args:
        fn: A coroutine function taking one item.
        items: An iterable or async iterable, possibly endless.
        governor: Gates the calls; see `governed_map`.
        return_exceptions: Yield exceptions in place instead of raising the
            first one (which also cancels the calls in flight).
        retry: Retry failed attempts; see `governed_map`.
        retry_budget: Shares a retry budget across calls.
        timeout_s: Cancel an attempt running longer than this.
        progress: A callback receiving `MapProgress`, or True for a rich bar.
        seed: Seeds the retry jitter.
        buffer_size: Most items pulled but not yet consumed; defaults to
            twice the governor's current limit, plus 16.

    Returns:
        An async context manager whose value is the async iterator of results.

    Raises:
        TypeError: As `governed_map`.
        ValueError: If ``timeout_s`` is not positive or ``buffer_size`` < 1.
    """
    return _stream(
        fn,
        items,
        ordered=True,
        governor=governor,
        return_exceptions=return_exceptions,
        retry=retry,
        retry_budget=retry_budget,
        timeout_s=timeout_s,
        progress=progress,
        seed=seed,
        buffer_size=buffer_size,
    )


def governed_imap_unordered(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    governor: Governor | None = None,
    return_exceptions: bool = False,
    retry: Retry | None = None,
    retry_budget: RetryBudget | None = None,
    timeout_s: float | None = None,
    progress: ProgressCallback | bool | None = None,
    seed: int | None = None,
    buffer_size: int | None = None,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Stream ``await fn(item)`` results as they finish (the as-completed form of `governed_imap`).

    No slow item holds back the others. To know which item a result belongs
    to, return it from ``fn`` (``return item, await fetch(item)``)::

        async with governed_imap_unordered(fetch, urls) as results:
            async for page in results:
                ...

    Takes the same arguments as `governed_imap`.

    Returns:
        An async context manager whose value is the async iterator of results.
    """
    return _stream(
        fn,
        items,
        ordered=False,
        governor=governor,
        return_exceptions=return_exceptions,
        retry=retry,
        retry_budget=retry_budget,
        timeout_s=timeout_s,
        progress=progress,
        seed=seed,
        buffer_size=buffer_size,
    )
