"""The thread maps and the process-pool bridge: order, failures, retries, timeouts, bounded memory, limits."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from aiogovernor import AIMD, AdaptiveChunker, Fixed, OverloadError, Progress, Retry, sync


def until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was not reached in time")
        time.sleep(0.0005)


def gov(limit: int = 4, **kwargs: object) -> sync.Governor:
    return sync.Governor("m", Fixed(limit), store=None, **kwargs)  # type: ignore[arg-type]


class Concurrency:
    """Counts calls running at once."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: object) -> None:
        with self.lock:
            self.now -= 1


def test_results_in_input_order() -> None:
    g = gov()
    assert sync.governed_map(lambda x: x * 2, range(200), governor=g) == [x * 2 for x in range(200)]
    assert list(sync.governed_imap(lambda x: x * 2, range(200), governor=g)) == [x * 2 for x in range(200)]
    assert sorted(sync.governed_imap_unordered(lambda x: x * 2, range(200), governor=g)) == [
        x * 2 for x in range(200)
    ]
    assert g.inflight == 0
    assert g.stats().counts["ok"] == 600


def test_at_most_limit_calls_at_once_as_the_limit_moves() -> None:
    g = sync.Governor("m", AIMD(initial_limit=3, min_limit=1, max_limit=10), store=None)
    running = Concurrency()
    seen_limits: list[int] = []

    def work(x: int) -> int:
        with running:
            seen_limits.append(g.limit)
            if x == 50:
                g.reset_limit(6)
            if x == 150:
                g.reset_limit(2)
            time.sleep(0.0005)
        return x

    assert sync.governed_map(work, range(300), governor=g, max_workers=10) == list(range(300))
    assert running.peak <= 6
    assert g.inflight == 0


def test_fail_fast_raises_the_first_exception_and_leaks_nothing() -> None:
    g = gov()
    pulled = itertools.count()

    def items() -> Iterator[int]:
        for i in range(100_000):
            next(pulled)
            yield i

    def boom(x: int) -> int:
        if x == 20:
            raise ValueError("item 20")
        return x

    with pytest.raises(ValueError, match="item 20"):
        sync.governed_map(boom, items(), governor=g)
    # It stopped pulling. How many instant items the other threads finish before the failing
    # thread takes the GIL back is the interpreter's scheduling (a few hundred at most under
    # load); a map that did not stop would pull all 100 000.
    assert next(pulled) < 10_000
    assert g.inflight == 0


def test_return_exceptions_collects_them_in_place() -> None:
    def boom(x: int) -> int:
        if x % 3 == 0:
            raise KeyError(x)
        return x

    out = sync.governed_map(boom, range(9), governor=gov(), return_exceptions=True)
    assert [type(r).__name__ if isinstance(r, Exception) else r for r in out] == [
        "KeyError",
        1,
        2,
        "KeyError",
        4,
        5,
        "KeyError",
        7,
        8,
    ]


def test_retry_goes_through_the_attempt_loop() -> None:
    g = gov(1)
    calls: dict[int, int] = {}

    def flaky(x: int) -> int:
        calls[x] = calls.get(x, 0) + 1
        if calls[x] < 3:
            raise OverloadError("busy")
        return x

    assert sync.governed_map(flaky, range(5), governor=g, retry=Retry(attempts=3, base_delay_s=0.0)) == list(
        range(5)
    )
    assert set(calls.values()) == {3}
    assert g.stats().counts["overload"] == 10  # each attempt its own sample
    assert g.inflight == 0


def test_a_retry_after_pauses_the_governor_and_times_the_retry() -> None:
    g = gov(1)
    seen: list[float] = []

    def once_busy(x: int) -> int:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise OverloadError(retry_after_s=0.05)
        return x

    assert sync.governed_map(once_busy, [1], governor=g, retry=Retry(attempts=2, retry_after_jitter=0.0)) == [
        1
    ]
    assert seen[1] - seen[0] >= 0.05


def test_a_timed_out_call_keeps_its_permit_until_its_thread_returns() -> None:
    g = gov(2)
    release = threading.Event()

    def stuck(x: int) -> int:
        release.wait(10)
        return x

    out = sync.governed_map(stuck, [1], governor=g, timeout_s=0.01, return_exceptions=True)
    assert isinstance(out[0], TimeoutError)
    assert g.inflight == 1  # the thread runs on: the gate still counts it
    release.set()
    until(lambda: g.inflight == 0)
    assert g.stats().counts["overload"] == 1


def test_an_endless_iterator_streams_in_bounded_memory() -> None:
    pulled = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(pulled)
            yield i

    g = gov(4)
    stream = sync.governed_imap(lambda x: x, endless(), governor=g, max_workers=4)
    for i, value in enumerate(stream):
        assert value == i
        if i == 1000:
            break
    stream.close()  # type: ignore[attr-defined]
    assert next(pulled) <= 1001 + 2 * 4 + 4
    assert g.inflight == 0


def test_progress_reports_counts_and_the_limit() -> None:
    reports: list[Progress] = []
    sync.governed_map(lambda x: x, range(50), governor=gov(3), progress=reports.append)
    last = reports[-1]
    assert (last.done, last.failed, last.total, last.limit) == (50, 0, 50, 3)


def test_batches_are_sized_by_a_chunker() -> None:
    sizes: list[int] = []

    def batch(chunk: list[int]) -> list[int]:
        sizes.append(len(chunk))
        return [x + 1 for x in chunk]

    assert sync.governed_batches(batch, range(100), governor=gov(), chunker=7) == list(range(1, 101))
    assert sorted(sizes) == sorted([7] * 14 + [2])
    now = [0.0]
    chunker = AdaptiveChunker(
        initial_size=1, max_size=64, target_duration_s=1.0, min_samples=1, clock=lambda: now[0]
    )

    def cheap(chunk: list[int]) -> list[int]:
        return chunk

    sync.governed_batches(cheap, range(500), governor=gov(1), chunker=chunker)
    assert chunker.size > 1  # instant chunks: the chunker grew them


def test_a_wrong_number_of_batch_results_fails_that_chunk() -> None:
    out = sync.governed_batches(lambda c: c[:-1], range(4), governor=gov(), chunker=2, return_exceptions=True)
    assert len(out) == 4
    assert all(isinstance(r, ValueError) for r in out)


def test_bad_arguments_are_refused() -> None:
    async def coro(x: int) -> int:
        return x

    with pytest.raises(TypeError, match="plain function"):
        sync.governed_map(coro, [1], governor=gov())
    with pytest.raises(TypeError, match="iterable"):
        sync.governed_map(lambda x: x, "abc", governor=gov())
    with pytest.raises(TypeError, match="unexpected keyword"):
        sync.governed_map(lambda x: x, [1], governor=gov(), bogus=1)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"sync\.Governor"):
        sync.governed_map(lambda x: x, [1], governor=object())  # type: ignore[call-overload]
    with pytest.raises(ValueError, match="timeout_s"):
        sync.governed_map(lambda x: x, [1], governor=gov(), timeout_s=0)


def square(x: int) -> int:
    if x == 13:
        raise ValueError("unlucky")
    return x * x


def test_the_process_pool_bridge_maps_in_order_with_adaptive_chunks() -> None:
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(2) as pool:
        out = sync.governed_process_map(square, range(40), executor=pool, return_exceptions=True)
        assert [r if not isinstance(r, Exception) else "x" for r in out] == [
            x * x if x != 13 else "x" for x in range(40)
        ]
        with pytest.raises(ValueError, match="unlucky"):
            sync.governed_process_map(square, range(40), executor=pool, chunker=4)
    assert sync.governed_process_map(square, range(5), processes=1) == [0, 1, 4, 9, 16]


def test_batches_keep_the_chunk_size_with_the_learned_state(monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    from aiogovernor.state import MemoryStore

    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)
    store = MemoryStore()
    now = [0.0]
    chunker = AdaptiveChunker(
        initial_size=1, max_size=64, target_duration_s=1.0, min_samples=1, clock=lambda: now[0]
    )
    g = sync.Governor("chunks", Fixed(2), store=store, environment="default")
    assert g.restore() is None  # nothing saved yet
    sync.governed_batches(lambda c: c, range(300), governor=g, chunker=chunker)
    g.close()
    state = asyncio.run(store.load("default", "chunks"))
    assert state is not None
    assert state.chunk_size == chunker.size > 1
    again = sync.Governor("chunks", Fixed(2), store=store, environment="default")
    restored = again.restore()
    assert restored is not None
    assert restored.chunk_size == chunker.size
    assert again.stats().restored
