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

import asyncio
import functools
import inspect
import random
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Unpack, overload

from ._attempt import Attempts
from ._chunking import AdaptiveChunker, Chunker, FixedChunker, as_chunker
from ._governor import Governor, Permit, run_without_permit
from ._map_options import SharedMapOptions, check_shared_options
from ._names import name_after_callable, warn_if_ambiguous
from ._progress import ProgressCallback, Reporter
from ._retry import Retry, RetryBudget

if TYPE_CHECKING:
    import anyio

__all__ = ["MapOptions", "governed_batches", "governed_imap", "governed_imap_unordered", "governed_map"]

T = TypeVar("T")
R = TypeVar("R")


class MapOptions(SharedMapOptions, total=False):
    """The keyword options every map form takes (`governed_map`, `governed_imap`,
    `governed_imap_unordered`, `governed_batches`), written once.

    Attributes:
        governor: Gates the calls; None makes one with the default policy,
            named after ``fn`` (``map:<qualname>``).
        retry: Retry failed attempts (by outcome); each attempt takes its own
            permit and is its own sample, the permit is released while
            waiting, and a Retry-After both delays the retry and pauses the
            governor. The exception that ended the last attempt is the item's.
        retry_budget: Shares a budget across calls; None makes one from
            ``retry`` for this call.
        timeout_s: Cancel an attempt running longer than this; it fails with
            `TimeoutError`, an ``overload`` sample.
        progress: A callback receiving `Progress` (at most every 0.1 s of
            clock time, and once at the end); True shows a rich progress bar
            when rich is installed, and nothing when it is not.
        seed: Seeds the retry jitter, for reproducible schedules.
    """

    governor: Governor | None


@dataclass(frozen=True, slots=True)
class _Settings:
    """One map call's options, checked once."""

    governor: Governor
    return_exceptions: bool
    retry: Retry | None
    retry_budget: RetryBudget | None
    timeout_s: float | None
    progress: ProgressCallback | bool | None
    seed: int | None
    owned: bool = False  # the governor was made for this map: closed (its state saved) at the end


def _is_async_callable(fn: object) -> bool:
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or (
        callable(fn) and inspect.iscoroutinefunction(getattr(fn, "__call__", None))  # noqa: B004
    )


def _settings(
    form: str, fn: object, items: object, return_exceptions: bool, options: MapOptions
) -> _Settings:
    """Check a map's arguments (a clear error for each) and gather its options."""
    unknown = options.keys() - MapOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"{form}() got an unexpected keyword argument {min(unknown)!r}")
    if not callable(fn):
        raise TypeError(f"fn must be an async callable (a coroutine function), got {fn!r}")
    if not _is_async_callable(fn):
        raise TypeError(
            f"fn must be a coroutine function (async def), got the synchronous {fn!r}; "
            "wrap blocking work in an async def (e.g. with anyio.to_thread.run_sync)"
        )
    if not isinstance(items, Iterable | AsyncIterable) or isinstance(items, str | bytes):
        raise TypeError(f"items must be an iterable or an async iterable (not a string), got {items!r}")
    governor = options.get("governor")
    if governor is not None and not isinstance(governor, Governor):
        raise TypeError(f"governor must be a Governor or None, got {governor!r}")
    check_shared_options(options)
    return _Settings(
        governor=governor or _default_governor(fn),
        owned=governor is None,
        return_exceptions=bool(return_exceptions),
        retry=options.get("retry"),
        retry_budget=options.get("retry_budget"),
        timeout_s=options.get("timeout_s"),
        progress=options.get("progress"),
        seed=options.get("seed"),
    )


def _default_governor(fn: object) -> Governor:
    # Named after the function, so that its learned state is kept per function.
    name, why = name_after_callable(fn, prefix="map:")
    gov = Governor(name)
    # stacklevel: from here, _settings, the map form (governed_map), its caller.
    warn_if_ambiguous(name, why, persisted=gov.store is not None, stacklevel=4)
    return gov


class _PoolAttempts(Attempts[Any]):
    """The attempt loop as a pool runs it: a worker waiting out a backoff lends its place."""

    __slots__ = ("_pool",)
    scoped = True  # the mapped function runs under a permit its task knows it holds

    def __init__(self, pool: _Pool, *, retry: Retry, budget: RetryBudget | None, rng: random.Random) -> None:
        super().__init__(retry=retry, budget=budget, rng=rng)
        self._pool = pool

    async def wait(self, delay_s: float) -> None:
        # anyio is loaded on first use: `import aiogovernor` must not pull it in (see the public API test).
        import anyio

        # The permit is free while this worker waits: let another use it,
        # but with at most ``limit`` retries waiting, so memory stays O(limit).
        pool = self._pool
        gov = pool._gov
        pool._backing_off += 1
        try:
            if (
                not pool.exhausted
                and pool._backing_off <= gov.limit
                and pool._workers - pool._backing_off < gov.limit
            ):
                pool._spawn(1)
            await anyio.sleep(delay_s)
        finally:
            pool._backing_off -= 1


class _Pool:
    """The engine: workers pull units (items or chunks) from one source and call ``fn`` under the governor.

    ``put(index, value)`` receives each unit's result (or its exception, when
    exceptions are collected); ``capacity`` bounds the units pulled but not
    yet consumed (backpressure for the streaming forms).
    """

    def __init__(
        self,
        fn: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any] | AsyncIterable[Any],
        settings: _Settings,
        reporter: Reporter,
        chunker: Chunker | None = None,
    ) -> None:
        # anyio is loaded on first use: `import aiogovernor` must not pull it in (see the public API test).
        import anyio

        self._fn = fn
        self._gov = settings.governor
        self._return_exceptions = settings.return_exceptions
        self._timeout_s = settings.timeout_s
        self._chunker = chunker
        self._attempts: Attempts[Any] | None = None
        if settings.retry is not None:
            self._attempts = _PoolAttempts(
                self, retry=settings.retry, budget=settings.retry_budget, rng=random.Random(settings.seed)
            )
        self._simple = settings.retry is None and settings.timeout_s is None and chunker is None
        # The input's length, when known.
        self.total = len(items) if isinstance(items, Sequence | set | frozenset | dict) else None
        reporter.total = self.total
        self._reporter = reporter

        self._next: Callable[[], Any] | None = None
        self._numbered: Callable[[], tuple[int, Any]] | None = None  # the plainest map's (see run)
        self._anext: Callable[[], Awaitable[Any]] | None = None
        if isinstance(items, AsyncIterable):
            self._anext = aiter(items).__anext__
            self._lock = anyio.Lock()
        else:
            self._iterator = iter(items)
            self._next = self._iterator.__next__

        self.put: Callable[[int, Any], None] = lambda index, value: None
        # The list `put` fills, when the results are all kept (`governed_map`): the
        # plainest map's workers store into it directly while it has the slot.
        self.results: list[Any] | None = None
        # Units pulled but not consumed, at most: None for no bound (the
        # results are all kept anyway), 0 for one that follows the limit.
        self.capacity: int | None = None
        self.consumed = 0
        self.pulled = 0
        self.exhausted = False
        self.error: BaseException | None = None
        # Workers waiting for room in the buffer, woken one per free slot (never all at
        # once: with a slow consumer that would cost O(limit) wake-ups per item consumed).
        self._room_waiters: deque[anyio.Event] = deque()
        self._waking = 0  # woken, not yet running: their slots are spoken for
        self._workers = 0
        self._backing_off = 0  # workers asleep before a retry
        # Starts one worker task: the task group's start_soon, or on asyncio `_start_task`.
        self._start: Callable[[Callable[[], Coroutine[Any, Any, None]]], object] | None = None
        # On asyncio, the workers are the loop's own tasks (see `_run_tasks`).
        self._tasks: set[asyncio.Task[None]] = set()
        self._all_done: asyncio.Future[None] | None = None
        self._escaped: list[BaseException] = []  # what a worker task raised (it catches every Exception)
        self._scopes: set[anyio.CancelScope] = set()  # each worker's, cancelled with the pool
        self._worker_fn: Callable[[], Coroutine[Any, Any, None]] = self._worker
        self.scope = anyio.CancelScope()
        # Each worker's scope is made by the running backend's own class, looked up once
        # here: `anyio.CancelScope()` asks which event loop runs for every one.
        self._new_scope: Callable[[], anyio.CancelScope] = type(self.scope)
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- running ---------------------------------------------------------

    async def run(self) -> None:
        """Run the pool until the source is drained, a failure stops it, or it is cancelled."""
        import anyio  # loaded on first use, as above

        # The plainest map (a sync iterator, no retry, timeout, chunks, progress or
        # buffer) runs workers that keep their permit from one call to the next.
        if (
            self._simple
            and self._next is not None
            and self.capacity is None
            and self.results is not None
            and not self._reporter.active
        ):
            self._worker_fn = self._kept_worker
            self._numbered = enumerate(self._iterator, self.pulled).__next__
        start = max(1, self._gov.limit)
        if self.total is not None:
            start = max(1, min(start, self.total))
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: an anyio task group
            with self.scope:
                async with anyio.create_task_group() as tg:
                    self._start = tg.start_soon
                    self._spawn(start)
        else:
            with self.scope:
                await self._run_tasks(loop, start)
            if self._escaped:
                raise BaseExceptionGroup("unhandled errors in a TaskGroup", self._escaped)
        self._start = None
        self._reporter.finish()

    async def _run_tasks(self, loop: asyncio.AbstractEventLoop, start: int) -> None:
        """The pool on asyncio: workers are plain tasks of the loop, watched here.

        An anyio task group runs each task inside a wrapper coroutine, a frame that
        every resumption of the worker passes through: about a tenth more CPU per
        call that suspends once. So on asyncio the pool keeps its own tasks, with
        the task group's semantics: each worker runs in its own cancel scope, and when
        the pool is cancelled (a failure, the consumer gone, the caller cancelled) so
        is every worker's scope (anyio delivers it, again at each turn of the loop
        until the worker is done, and never into a shielded scope such as a thread
        call's), and they are waited for before the cancellation goes on; anything
        but an ``Exception`` that escapes a worker (which catches those) cancels the
        pool and is raised in a group, as the task group raised it.
        """
        self._all_done = loop.create_future()
        self._loop = loop
        self._start = self._start_task
        self._spawn(start)
        try:
            await self._all_done
        finally:
            if self._tasks:
                await self._stop_tasks(loop)

    def _start_task(self, worker: Callable[[], Coroutine[Any, Any, None]]) -> None:
        assert self._loop is not None
        task = self._loop.create_task(worker())
        if not task.done():  # an eager task factory may have run it to its end already
            self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._escaped.append(exc)
                self._cancel_all()
        done = self._all_done
        if not self._tasks and done is not None and not done.done():
            done.set_result(None)

    def _cancel_all(self) -> None:
        """Cancel the pool: its scope and every worker's (anyio's delivery, which honours shields)."""
        self.scope.cancel()
        for scope in self._scopes:
            scope.cancel()

    def _enlist(self) -> anyio.CancelScope:
        """The scope a new worker runs in: cancelled with the pool (at once, if it already is)."""
        scope = self._new_scope()
        if self.scope.cancel_called:
            scope.cancel()
        self._scopes.add(scope)
        return scope

    async def _stop_tasks(self, loop: asyncio.AbstractEventLoop) -> None:
        """Cancel every worker task and wait until all have finished."""
        import anyio  # loaded on first use, as above

        self._cancel_all()
        cancelled: asyncio.CancelledError | None = None
        with anyio.CancelScope(shield=True):
            while self._tasks:
                self._all_done = loop.create_future()
                try:
                    await self._all_done
                except asyncio.CancelledError as exc:  # cancelled again, natively: finish first
                    cancelled = exc
        if cancelled is not None:
            raise cancelled

    def _spawn(self, n: int) -> None:
        # Started from inside a worker's permit block: the new tasks must not inherit it
        # (one context without it for all of them; each task still takes its own copy).
        run_without_permit(self._start_workers, n)

    def _start_workers(self, n: int) -> None:
        start = self._start
        assert start is not None
        worker = self._worker_fn
        for _ in range(n):
            self._workers += 1
            start(worker)

    def _room_limit(self) -> int:
        """Units that may be pulled but not consumed now (only asked when ``capacity`` is set)."""
        return self.capacity or 2 * self._gov.limit + 16

    def consumed_one(self) -> None:
        """The consumer took one unit: wake as many waiting workers as there are free slots (one, usually)."""
        self.consumed += 1
        if self._room_waiters:
            self._wake_for_room(self._room_limit() - (self.pulled - self.consumed) - self._waking)

    def _wake_for_room(self, n: int) -> None:
        waiters = self._room_waiters
        while n > 0 and waiters:
            waiters.popleft().set()
            self._waking += 1
            n -= 1

    async def _wait_for_room(self) -> None:
        import anyio  # loaded on first use, as above

        event = anyio.Event()
        self._room_waiters.append(event)
        await event.wait()  # cancelled only with the whole pool: a stale entry costs one wasted wake
        self._waking -= 1

    def _fatal(self, exc: BaseException) -> None:
        """Stop everything and make ``exc`` the map's exception (the first one wins)."""
        if self.error is None:
            self.error = exc
        self._cancel_all()

    async def _worker(self) -> None:
        # Loop invariants in locals: this loop runs once per item (and is the task's own
        # coroutine, not wrapped in another: every frame in the chain costs each resumption).
        gov = self._gov
        fn = self._fn
        next_ = self._next
        chunked = self._chunker is not None
        simple = self._simple
        put = self.put
        reporter = self._reporter
        reporting = reporter.active
        scope = self._enlist()
        try:
            with scope:
                while True:
                    capacity = self.capacity
                    if capacity is not None and self.pulled - self.consumed >= (
                        capacity or 2 * gov.limit + 16
                    ):
                        await self._wait_for_room()
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
                        reporter.failed += len(unit) if chunked else 1
                        if not self._return_exceptions:
                            self._fatal(exc)
                            return
                        # A failed chunk fails each of its items, in place.
                        put(index, [exc] * len(unit) if chunked else exc)
                    else:
                        reporter.done += len(unit) if chunked else 1
                        put(index, value)
                    if reporting:
                        reporter.tick()
                    # Follow the limit: one worker per permit the governor allows
                    # (workers waiting out a retry's backoff hold none).
                    limit = gov.limit
                    active = self._workers - self._backing_off
                    if active > limit and active > 1:
                        return
                    if active < limit and not self.exhausted:
                        self._spawn(limit - active)
        finally:
            self._scopes.discard(scope)
            self._workers -= 1
            if self.exhausted and self._room_waiters:
                # Nothing more to pull: the workers waiting for room can all leave.
                self._wake_for_room(len(self._room_waiters))

    async def _kept_worker(self) -> None:
        """`_worker` for the plainest map: the permit is kept from one call to the next.

        While nobody waits, no time gate applies and the limit covers the permits held,
        the gate renews the permit after each call (one ``ok`` sample per call, as
        ever) instead of taking it back and handing it out again; otherwise it is
        released and the next call takes one the usual way, in turn.

        This loop runs once per item and is most of what a map costs beyond the calls
        themselves, so it does the least it can: results go straight into the list the
        map returns while it has a slot for them, the limit is looked at closely only
        when the number of workers differs from it, and nothing is counted for progress
        (this worker runs only when nothing reports it).
        """
        gov = self._gov
        fn = self._fn
        # The items numbered as they are pulled (one shared enumerate): `pulled` is
        # brought up to date as each worker leaves, not per item.
        next_ = self._numbered
        assert next_ is not None
        put = self.put
        results = self.results
        assert results is not None
        filled = len(results)  # slots made in advance (the input's length, when known)
        renew = gov._renew  # a named seam of the gate, made for this loop
        pending = False  # a unit pulled with a permit that could not be kept
        unit: Any = None
        index = -1
        scope = self._enlist()
        try:
            with scope:
                while True:
                    if not pending:
                        try:
                            index, unit = next_()
                        except StopIteration:
                            self.exhausted = True
                            return
                        except Exception as exc:
                            self._fatal(exc)
                            return
                    pending = False
                    try:
                        async with gov as permit:
                            while True:
                                value = await fn(unit)
                                if index < filled:
                                    results[index] = value
                                else:
                                    put(index, value)
                                # Follow the limit (returning releases the permit, as ok). The
                                # gate's own limit, read as an attribute: this runs per item.
                                if self._workers != gov._limit:
                                    limit = gov._limit
                                    active = self._workers
                                    if active > limit and active > 1:
                                        return
                                    if active < limit and not self.exhausted:
                                        self._spawn(limit - active)
                                try:
                                    index, unit = next_()
                                except StopIteration:
                                    self.exhausted = True
                                    return
                                except Exception as exc:
                                    self._fatal(exc)
                                    return
                                if not renew(permit):
                                    pending = True  # released: this unit takes a permit in turn
                                    break
                    except Exception as exc:
                        self._reporter.failed += 1
                        if not self._return_exceptions:
                            self._fatal(exc)
                            return
                        put(index, exc)
        finally:
            self._scopes.discard(scope)
            self._workers -= 1
            if index >= self.pulled:
                self.pulled = index + 1

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
        size = max(1, self._chunker.size)
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
        """One unit with its options: retries (the attempt loop), per-attempt timeout, chunk timing."""
        # A chunk's permit says how many items it carries: a larger chunk is not queueing.
        size = len(unit) if self._chunker is not None else 1
        if self._attempts is None:
            async with self._gov as permit:
                if size != 1:
                    permit.size = size
                value = await self._attempt(unit)
        else:

            def sized(permit: Permit, attempt: int) -> Awaitable[Any]:
                if size != 1:
                    permit.size = size
                return self._attempt(unit)

            value = await self._attempts.run(self._gov, sized)
        if self._chunker is not None:
            value = list(value)
            if len(value) != len(unit):
                raise ValueError(
                    f"fn returned {len(value)} results for a chunk of {len(unit)} items; "
                    "it must return one result per item, in order"
                )
        return value

    async def _attempt(self, unit: Any) -> Any:
        chunker = self._chunker
        if chunker is None:
            return await self._timed(unit)
        if isinstance(chunker, AdaptiveChunker):
            with chunker.measure(len(unit)):  # timed with the chunker's own clock
                return await self._timed(unit)
        # Any other chunker is timed with the governor's clock (a named seam of the gate).
        # Like AdaptiveChunker.measure: a timeout is recorded (the chunk took at least
        # that long), any other failure says nothing about how long a chunk takes.
        start = self._gov._now()
        try:
            value = await self._timed(unit)
        except TimeoutError:
            chunker.record(len(unit), max(0.0, self._gov._now() - start))
            raise
        chunker.record(len(unit), max(0.0, self._gov._now() - start))
        return value

    async def _timed(self, unit: Any) -> Any:
        if self._timeout_s is None:
            return await self._fn(unit)
        import anyio  # loaded on first use, as above

        # A hung call is cancelled; its TimeoutError reaches the permit as overload.
        with anyio.fail_after(self._timeout_s):
            return await self._fn(unit)


@asynccontextmanager
async def _closing(settings: _Settings, chunker: Chunker | None = None) -> AsyncIterator[None]:
    """Around one map: attach its chunker to the governor, and close a governor made for it.

    However the map ends (results, an exception, cancellation), a governor it
    made is closed, its final state saved: nobody else holds it to call ``aclose``.
    """
    gov = settings.governor
    attach = chunker is not None and not isinstance(chunker, FixedChunker)
    try:
        if attach:
            # Loaded before the first chunk is cut (a worker cuts it before its permit).
            await gov.restore()
            gov.attach_chunker(chunker)
        yield
    finally:
        if attach:
            gov.detach_chunker(chunker)  # type: ignore[arg-type]
        if settings.owned:
            await gov.aclose()  # shielded: it saves even when the map was cancelled


async def _collect(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    settings: _Settings,
    chunker: Chunker | None = None,
) -> list[Any]:
    """Run the pool to the end; one result per unit pulled (an item, or a chunk), in order."""
    async with _closing(settings, chunker):
        return await _collect_in(fn, items, settings, chunker)


async def _collect_in(
    fn: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    settings: _Settings,
    chunker: Chunker | None,
) -> list[Any]:
    with Reporter(
        settings.progress, governor=settings.governor, description=settings.governor.name
    ) as reporter:
        pool = _Pool(fn, items, settings, reporter, chunker)
        # A list filled in place: 8 bytes a result where a dict by index took about 100, and
        # no second list to build at the end. Made at its full size when the input's length
        # is known (no regrowth on the way); otherwise units finish about in order, so it
        # mostly appends.
        results: list[Any] = [None] * pool.total if pool.total is not None else []
        append = results.append

        def put(index: int, value: Any) -> None:
            missing = index - len(results)
            if missing < 0:
                results[index] = value
            elif missing == 0:
                append(value)
            else:
                results.extend([None] * missing)  # finished later, filled then
                append(value)

        pool.put = put
        pool.results = results
        await pool.run()
    if pool.error is not None:
        raise pool.error
    if pool.pulled < len(results):
        del results[pool.pulled :]  # a sequence that shrank while it was mapped
    return results


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: Literal[False] = False,
    **options: Unpack[MapOptions],
) -> list[R]: ...


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: Literal[True],
    **options: Unpack[MapOptions],
) -> list[R | Exception]: ...


@overload
async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[MapOptions],
) -> list[R] | list[R | Exception]: ...


async def governed_map(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[MapOptions],
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
        return_exceptions: Collect exceptions in place instead of failing fast.
        **options: ``governor``, ``retry``, ``retry_budget``, ``timeout_s``,
            ``progress``, ``seed``: see `MapOptions`.

    Returns:
        One result per item, in input order (exceptions in place when
        ``return_exceptions`` is true).

    Raises:
        TypeError: If ``fn`` is not a coroutine function, ``items`` not iterable,
            an option has the wrong type, or an option is unknown.
        ValueError: If ``timeout_s`` is not positive.
    """
    settings = _settings("governed_map", fn, items, return_exceptions, options)
    return await _collect(fn, items, settings)


async def governed_batches(
    fn: Callable[[list[T]], Awaitable[Iterable[R]]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    chunker: int | Chunker | None = None,
    return_exceptions: bool = False,
    **options: Unpack[MapOptions],
) -> list[R]:
    """Call ``await fn(chunk)`` on lists of items whose size a chunker sets; results flattened, in order.

    The chunker steers how many items one call carries (toward its target
    duration) while the governor steers how many calls run at once. ``fn``
    must return one result per item of its chunk, in order. Each successful
    (or timed-out) attempt's duration is fed to the chunker.

    Args:
        fn: A coroutine function taking a list of items, returning their results.
        items: An iterable or async iterable, possibly endless.
        chunker: Items per call: a fixed number, or any `Chunker` (such as
            `AdaptiveChunker`); None makes an `AdaptiveChunker` with its
            defaults (0.2 s per call) reading the governor's clock.
        return_exceptions: Put a failed chunk's exception in place of each of
            its items instead of failing fast.
        **options: ``governor`` (one permit per chunk), ``retry`` (of chunk
            attempts), ``retry_budget``, ``timeout_s`` (per chunk attempt),
            ``progress`` (counted in items), ``seed``: see `MapOptions`.

    Returns:
        One result per item, in input order.

    Raises:
        TypeError: As `governed_map`, or if ``chunker`` is neither an int nor a `Chunker`.
        ValueError: If ``timeout_s`` is not positive or ``chunker`` an int below 1;
            and (as the failure of that chunk) if ``fn`` returns the wrong
            number of results.
    """
    settings = _settings("governed_batches", fn, items, return_exceptions, options)
    if chunker is None:
        # The governor's clock (a named seam of the gate): chunks in virtual time are timed in it.
        chunker = AdaptiveChunker(clock=settings.governor._now)
    chunks = await _collect(fn, items, settings, as_chunker(chunker))
    return [result for chunk in chunks for result in chunk]


class _Stream(Generic[R]):
    """The async iterator `governed_imap` and `governed_imap_unordered` yield."""

    def __init__(self, pool: _Pool, *, ordered: bool) -> None:
        import anyio  # loaded on first use, as in _Pool

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
            import anyio  # loaded on first use, as in _Pool

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
    form: str,
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    ordered: bool,
    return_exceptions: bool,
    buffer_size: int | None,
    options: MapOptions,
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    settings = _settings(form, fn, items, return_exceptions, options)
    if buffer_size is not None and (
        isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1
    ):
        raise ValueError(f"buffer_size must be an integer >= 1 or None, got {buffer_size!r}")

    @asynccontextmanager
    async def run() -> AsyncIterator[AsyncIterator[R]]:
        import anyio  # loaded on first use, as in _Pool

        failure: Exception | None = None
        gov = settings.governor
        async with _closing(settings):
            with Reporter(settings.progress, governor=gov, description=gov.name) as reporter:
                pool = _Pool(fn, items, settings, reporter)
                # By default, room for every worker's result plus as many again queued
                # for the consumer: memory stays O(limit), a slow consumer slows the pool.
                pool.capacity = buffer_size or 0
                stream: _Stream[R] = _Stream(pool, ordered=ordered)

                async def drive() -> None:
                    try:
                        await pool.run()
                    finally:
                        stream.finish()

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
        if failure is not None:
            raise failure

    return run()


def governed_imap(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: bool = False,
    buffer_size: int | None = None,
    **options: Unpack[MapOptions],
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Stream ``await fn(item)`` results in input order, as many calls at once as the governor allows.

    The calls run in a task group for as long as the ``async with`` block
    (structured concurrency: leaving the block cancels what still runs):

    ```python
    async with governed_imap(fetch, urls, governor=gov) as results:
        async for page in results:
            ...
    ```

    Items are pulled lazily and results wait for the consumer in a bounded
    buffer, so memory stays O(limit) even for an endless input; a slow
    consumer slows the pool down. A slow item holds back the ones after it
    (order is kept), up to the buffer's size.

    Args:
        fn: A coroutine function taking one item.
        items: An iterable or async iterable, possibly endless.
        return_exceptions: Yield exceptions in place instead of raising the
            first one (which also cancels the calls in flight).
        buffer_size: Most items pulled but not yet consumed; defaults to
            twice the governor's current limit, plus 16.
        **options: ``governor``, ``retry``, ``retry_budget``, ``timeout_s``,
            ``progress``, ``seed``: see `MapOptions`.

    Returns:
        An async context manager whose value is the async iterator of results.

    Raises:
        TypeError: As `governed_map`.
        ValueError: If ``timeout_s`` is not positive or ``buffer_size`` < 1.
    """
    return _stream(
        "governed_imap",
        fn,
        items,
        ordered=True,
        return_exceptions=return_exceptions,
        buffer_size=buffer_size,
        options=options,
    )


def governed_imap_unordered(
    fn: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    return_exceptions: bool = False,
    buffer_size: int | None = None,
    **options: Unpack[MapOptions],
) -> AbstractAsyncContextManager[AsyncIterator[R]]:
    """Stream ``await fn(item)`` results as they finish (the as-completed form of `governed_imap`).

    No slow item holds back the others. To know which item a result belongs
    to, return it from ``fn`` (``return item, await fetch(item)``):

    ```python
    async with governed_imap_unordered(fetch, urls) as results:
        async for page in results:
            ...
    ```

    Takes the same arguments as `governed_imap`.

    Returns:
        An async context manager whose value is the async iterator of results.
    """
    return _stream(
        "governed_imap_unordered",
        fn,
        items,
        ordered=False,
        return_exceptions=return_exceptions,
        buffer_size=buffer_size,
        options=options,
    )
