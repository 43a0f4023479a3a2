"""Fan out a plain function over threads under a thread gate: a pool of worker threads, not a thread per item.

`governed_map` (results in input order), `governed_imap` (the same,
streamed), `governed_imap_unordered` (streamed as they finish) and
`governed_batches` (chunks sized by an `AdaptiveChunker`) share one engine:
worker threads draining one iterator. Each worker pulls an item (under the
pool's lock, so a generator is never run by two threads), runs the one
attempt loop (`Attempts.run_blocking`: permit, call, classify, Retry-After,
release, backoff) and stores the result. Threads are started as the
governor's limit rises and retire when it falls; at most ``2 * max_workers``
items are pulled ahead of the consumer, so memory stays O(limit) over an
endless iterator.

A thread cannot be killed. With ``timeout_s`` each attempt runs in a
thread of its own; one that overruns fails its item with `TimeoutError` (an
``overload`` sample) while the thread runs on, and its permit stays held
until it returns: the gate keeps counting the work that still loads the
upstream.
"""

from __future__ import annotations

import contextlib
import random
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, Unpack, overload

from aiogovernor._attempt import Attempts
from aiogovernor._chunking import AdaptiveChunker, Chunker, FixedChunker, as_chunker
from aiogovernor._guard import _is_async
from aiogovernor._map_options import SharedMapOptions, check_shared_options
from aiogovernor._progress import ProgressCallback, Reporter
from aiogovernor._retry import Retry, RetryBudget
from aiogovernor._validate import check_int

from ._gate import Governor, Permit

__all__ = [
    "ThreadMapOptions",
    "governed_batches",
    "governed_imap",
    "governed_imap_unordered",
    "governed_map",
]

T = TypeVar("T")
R = TypeVar("R")

_DONE = object()


class ThreadMapOptions(SharedMapOptions, total=False):
    """The keyword options of every thread map form (the async maps' `aiogovernor.MapOptions`, for threads).

    Attributes:
        governor: A thread gate (`aiogovernor.sync.Governor`); None makes one
            with the default policy, named after ``fn`` (``map:<qualname>``).
        retry: Retry failed attempts (by outcome); each attempt takes its own
            permit, the permit is released while the thread waits out the
            backoff, and a Retry-After both delays the retry and pauses the governor.
        retry_budget: Shares a budget across calls; None makes one from ``retry``.
        timeout_s: An attempt running longer fails with `TimeoutError` (an
            ``overload`` sample). Its thread cannot be stopped: it runs on,
            holding its permit until it returns.
        progress: A callback receiving `aiogovernor.Progress` (at most every
            0.1 s, and once at the end); True shows a rich bar when rich is installed.
        seed: Seeds the retry jitter.
        max_workers: The most threads the map starts; None: the policy's
            ``max_limit``, at most 256.
    """

    governor: Governor | None
    max_workers: int | None


@dataclass(frozen=True, slots=True)
class _Settings:
    governor: Governor
    return_exceptions: bool
    retry: Retry | None
    retry_budget: RetryBudget | None
    timeout_s: float | None
    progress: ProgressCallback | bool | None
    seed: int | None
    max_workers: int
    owned: bool  # the map made the governor: it saves its state when the map ends


def _settings(
    form: str, fn: object, items: object, return_exceptions: bool, options: ThreadMapOptions
) -> _Settings:
    unknown = options.keys() - ThreadMapOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"{form}() got an unexpected keyword argument {min(unknown)!r}")
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {fn!r}")
    if _is_async(fn):
        raise TypeError(
            f"fn must be a plain function, got the coroutine function {fn!r}; "
            "map coroutines with aiogovernor.governed_map"
        )
    if not isinstance(items, Iterable) or isinstance(items, str | bytes):
        raise TypeError(f"items must be an iterable (not a string), got {items!r}")
    governor = options.get("governor")
    if governor is not None and not isinstance(governor, Governor):
        raise TypeError(f"governor must be an aiogovernor.sync.Governor or None, got {governor!r}")
    check_shared_options(options)
    owned = governor is None
    if governor is None:
        name = getattr(fn, "__qualname__", None) or type(fn).__qualname__
        governor = Governor(f"map:{name}")
    max_workers = options.get("max_workers")
    if max_workers is None:
        max_workers = min(governor.policy.max_limit, 256)
    check_int("max_workers", max_workers, low=1)
    return _Settings(
        governor=governor,
        return_exceptions=bool(return_exceptions),
        retry=options.get("retry"),
        retry_budget=options.get("retry_budget"),
        timeout_s=options.get("timeout_s"),
        progress=options.get("progress"),
        seed=options.get("seed"),
        max_workers=max_workers,
        owned=owned,
    )


class _FailedChunk:
    """A chunk whose call failed, collected with ``return_exceptions``: its exception for each item."""

    __slots__ = ("error", "size")

    def __init__(self, error: Exception, size: int) -> None:
        self.error = error
        self.size = size


class _Box:
    """One timed attempt running in a thread of its own."""

    __slots__ = ("done", "error", "finished", "permit", "value")

    def __init__(self, permit: Permit) -> None:
        self.permit = permit
        self.finished = threading.Event()
        self.done = False  # set under the gate's lock
        self.value: Any = None
        self.error: BaseException | None = None


def _timed_call(fn: Callable[[Any], Any], unit: Any, permit: Permit, timeout_s: float) -> Any:
    """Call ``fn(unit)`` in a thread of its own; past ``timeout_s`` fail, leaving it its permit."""
    gov = permit.governor
    box = _Box(permit)

    def run() -> None:
        try:
            box.value = fn(unit)
        except BaseException as exc:
            box.error = exc
        with gov._lock:
            box.done = True
            if permit._stray:
                gov._stray_done(permit)
        box.finished.set()

    threading.Thread(target=run, name="aiogovernor-attempt", daemon=True).start()
    box.finished.wait(timeout_s)
    with gov._lock:
        if not box.done:
            permit._stray = True  # released for the caller, held at the gate until it returns
            raise TimeoutError(f"the call ran longer than {timeout_s}s (its thread runs on)")
    if box.error is not None:
        raise box.error
    return box.value


class _Pool:
    """Worker threads draining one iterator; results go to ``put(index, value)`` under the pool's lock."""

    def __init__(
        self,
        fn: Callable[[Any], Any],
        items: Iterable[Any],
        settings: _Settings,
        reporter: Reporter,
        put: Callable[[int, Any], None],
        chunker: Chunker | None = None,
        ahead: int | None = None,
    ) -> None:
        self._fn = fn
        self._items = iter(items)
        self._settings = settings
        self._gov = settings.governor
        self._reporter = reporter
        self._put = put
        self._chunker = chunker
        self._ahead = ahead  # most units pulled and not yet consumed; None: no bound (a list is kept)
        self._attempts: Attempts[Any] = Attempts(
            retry=settings.retry, budget=settings.retry_budget, rng=random.Random(settings.seed)
        )
        self.cond = threading.Condition()
        self.pulled = 0
        self.consumed = 0
        self.finished = 0
        self.exhausted = False
        self.stopped = False
        self.error: BaseException | None = None
        self._workers = 0
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        with self.cond:
            self._grow()

    def _grow(self) -> None:
        """Start threads up to the governor's limit (under the lock)."""
        want = min(self._gov.limit, self._settings.max_workers)
        while self._workers < want and not (self.exhausted or self.stopped):
            self._workers += 1
            t = threading.Thread(target=self._worker, name="aiogovernor-map", daemon=True)
            self._threads = [x for x in self._threads if x.is_alive()]
            self._threads.append(t)
            t.start()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify_all()

    def join(self) -> None:
        for t in list(self._threads):
            t.join()

    @property
    def running(self) -> bool:
        return self._workers > 0

    def consumed_one(self) -> None:
        """The consumer took a result: a worker held back by the bound may pull again (under the lock)."""
        self.consumed += 1
        self.cond.notify_all()

    def _next_unit(self) -> tuple[int, Any] | None:
        """Pull the next item or chunk (under the lock); None when this worker should stop."""
        while True:
            if self.stopped or self.exhausted:
                return None
            if self._workers > max(1, min(self._gov.limit, self._settings.max_workers)):
                return None  # the limit fell: one thread fewer
            if self._ahead is None or self.pulled - self.consumed < self._ahead:
                break
            self.cond.wait()
        try:
            if self._chunker is None:
                unit = next(self._items)
            else:
                unit = []
                for _ in range(self._chunker.size):
                    try:
                        unit.append(next(self._items))
                    except StopIteration:
                        break
                if not unit:
                    raise StopIteration
        except StopIteration:
            self.exhausted = True
            self.cond.notify_all()
            return None
        except BaseException as exc:
            # The input itself failed: no item can be said to have it; the map fails.
            self.exhausted = True
            self._fail(exc)
            return None
        index = self.pulled
        self.pulled += 1
        return index, unit

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.stopped = True
        self.cond.notify_all()

    def _worker(self) -> None:
        try:
            while True:
                with self.cond:
                    got = self._next_unit()
                    if got is None:
                        return
                    self._grow()
                index, unit = got
                try:
                    value = self._call(unit)
                except Exception as exc:
                    with self.cond:
                        self._reporter.failed += len(unit) if self._chunker is not None else 1
                        if self._settings.return_exceptions:
                            self._put(index, exc if self._chunker is None else _FailedChunk(exc, len(unit)))
                        else:
                            self._fail(exc)
                        self._after()
                    continue
                except BaseException as exc:
                    with self.cond:
                        self._fail(exc)
                    return
                with self.cond:
                    self._reporter.done += len(unit) if self._chunker is not None else 1
                    self._put(index, value)
                    self._after()
        finally:
            with self.cond:
                self._workers -= 1
                self.cond.notify_all()

    def _after(self) -> None:
        self.finished += 1
        self._reporter.tick()
        self.cond.notify_all()

    def _call(self, unit: Any) -> Any:
        fn, timeout_s, chunker, gov = self._fn, self._settings.timeout_s, self._chunker, self._gov

        def call(permit: Permit, attempt: int) -> Any:
            start = gov._time() if chunker is not None else 0.0
            if chunker is not None and len(unit) != 1:
                permit.size = len(unit)  # a larger chunk is not queueing: judged per item
            value = fn(unit) if timeout_s is None else _timed_call(fn, unit, permit, timeout_s)
            if chunker is not None:
                results = list(value)
                if len(results) != len(unit):
                    raise ValueError(f"fn returned {len(results)} results for a chunk of {len(unit)} items")
                with self.cond:
                    chunker.record(len(unit), gov._time() - start)
                return results
            return value

        return self._attempts.run_blocking(gov, call)


@contextlib.contextmanager
def _governing(settings: _Settings, chunker: Chunker | None) -> Iterator[None]:
    """Around a run: the chunker's size kept with the learned state; a governor the map made, saved."""
    gov = settings.governor
    attach = chunker is not None and not isinstance(chunker, FixedChunker)
    try:
        if attach:
            gov.restore()  # loaded before the first chunk is cut
            gov.attach_chunker(chunker)
        yield
    finally:
        if attach:
            gov.detach_chunker(chunker)  # type: ignore[arg-type]
        if settings.owned:
            gov.close()


def _collect(
    fn: Callable[[Any], Any], items: Iterable[Any], settings: _Settings, chunker: Chunker | None = None
) -> list[Any]:
    results: dict[int, Any] = {}
    with (
        _governing(settings, chunker),
        Reporter(settings.progress, governor=settings.governor, description=settings.governor.name) as rep,
    ):
        if isinstance(items, Sequence):
            rep.total = len(items)
        pool = _Pool(fn, items, settings, rep, results.__setitem__, chunker)
        try:
            pool.start()
            with pool.cond:
                while pool.running:
                    pool.cond.wait()
        except BaseException:
            pool.stop()  # KeyboardInterrupt: no new items; the calls running finish
            raise
        finally:
            pool.join()
        rep.finish()
    if pool.error is not None:
        raise pool.error
    return [results[i] for i in range(len(results))]


@overload
def governed_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: Literal[False] = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R]: ...


@overload
def governed_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: Literal[True],
    **options: Unpack[ThreadMapOptions],
) -> list[R | Exception]: ...


@overload
def governed_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R] | list[R | Exception]: ...


def governed_map(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R] | list[R | Exception]:
    """Call ``fn(item)`` in threads for every item, as many at once as the governor allows; results in order.

    Worker threads drain ``items`` lazily (an iterator of any length works;
    results are kept until the end: use `governed_imap` to stream them).
    Threads start as the limit rises, up to ``max_workers``, and retire when it falls.

    Every item ends as a result or a failure. By default the first exception
    stops new items, lets the calls already running finish (a thread cannot
    be cancelled), and is raised; with ``return_exceptions=True`` exceptions
    take their item's place. No permit is leaked either way.

    Args:
        fn: A plain function taking one item (a coroutine function is a TypeError).
        items: An iterable, possibly endless.
        return_exceptions: Collect exceptions in place instead of failing fast.
        **options: ``governor``, ``retry``, ``retry_budget``, ``timeout_s``,
            ``progress``, ``seed``, ``max_workers``: see `ThreadMapOptions`.

    Raises:
        TypeError: If ``fn`` is not a plain callable, ``items`` not iterable,
            or an option is unknown or of the wrong type.
        ValueError: If ``timeout_s`` is not positive or ``max_workers`` below 1.
    """
    settings = _settings("governed_map", fn, items, return_exceptions, options)
    return _collect(fn, items, settings)


def governed_batches(
    fn: Callable[[list[T]], Iterable[R]],
    items: Iterable[T],
    *,
    chunker: int | Chunker | None = None,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> list[R]:
    """Call ``fn(chunk)`` in threads on lists of items whose size a chunker sets; results flattened, in order.

    For cheap items, where a thread hand-off per item would cost more than
    the item: the chunker steers how many items one call carries (toward its
    target duration) while the governor steers how many calls run at once.
    ``fn`` returns one result per item of its chunk, in order.

    Args:
        fn: A plain function taking a list of items, returning their results.
        items: An iterable, possibly endless.
        chunker: Items per call: a fixed number or any `aiogovernor.Chunker`;
            None makes an `aiogovernor.AdaptiveChunker` (0.2 s per call) on
            the governor's clock.
        return_exceptions: Put a failed chunk's exception in place of each of its items.
        **options: See `ThreadMapOptions` (one permit per chunk).
    """
    settings = _settings("governed_batches", fn, items, return_exceptions, options)
    if chunker is None:
        chunker = AdaptiveChunker(clock=settings.governor._now)
    chunks = _collect(fn, items, settings, as_chunker(chunker))
    out: list[Any] = []
    for chunk in chunks:
        if isinstance(chunk, _FailedChunk):
            out.extend([chunk.error] * chunk.size)
        else:
            out.extend(chunk)
    return out


def _stream(
    form: str,
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    return_exceptions: bool,
    options: ThreadMapOptions,
    *,
    ordered: bool,
) -> Iterator[Any]:
    settings = _settings(form, fn, items, return_exceptions, options)
    return _iterate(fn, items, settings, ordered=ordered)


def _iterate(
    fn: Callable[[Any], Any], items: Iterable[Any], settings: _Settings, *, ordered: bool
) -> Iterator[Any]:
    buffer: dict[int, Any] = {}
    ready: deque[Any] = deque()
    put: Callable[[int, Any], None] = buffer.__setitem__ if ordered else (lambda i, v: ready.append(v))
    with (
        _governing(settings, None),
        Reporter(settings.progress, governor=settings.governor, description=settings.governor.name) as rep,
    ):
        if isinstance(items, Sequence):
            rep.total = len(items)
        pool = _Pool(fn, items, settings, rep, put, ahead=2 * settings.max_workers)
        pool.start()
        nxt = 0
        try:
            while True:
                with pool.cond:
                    while True:
                        if ordered and nxt in buffer:
                            value = buffer.pop(nxt)
                            nxt += 1
                            break
                        if not ordered and ready:
                            value = ready.popleft()
                            break
                        if pool.error is not None:
                            pool.stopped = True
                            pool.cond.notify_all()
                            raise pool.error
                        if not pool.running:
                            value = _DONE
                            break
                        pool.cond.wait()
                    if value is _DONE:
                        break
                    pool.consumed_one()
                yield value
            rep.finish()
        finally:
            pool.stop()
            pool.join()


def governed_imap(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> Iterator[R]:
    """`governed_map`, streamed: yields results in input order as they become available.

    At most ``2 * max_workers`` items are pulled ahead of the consumer. Leaving
    the loop early (``break``, an exception) stops new items and waits for the
    calls running to finish.
    """
    return _stream("governed_imap", fn, items, return_exceptions, options, ordered=True)


def governed_imap_unordered(
    fn: Callable[[T], R],
    items: Iterable[T],
    *,
    return_exceptions: bool = False,
    **options: Unpack[ThreadMapOptions],
) -> Iterator[R]:
    """`governed_map`, streamed as results finish, in any order (a slow item holds nothing back)."""
    return _stream("governed_imap_unordered", fn, items, return_exceptions, options, ordered=False)
