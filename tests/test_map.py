"""governed_map and friends: order, laziness, errors, retries, timeouts, cancellation, chunks.

Every test runs on asyncio and trio, in virtual time.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import sys
import warnings
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import pytest

from aiogovernor import (
    AdaptiveChunker,
    Fixed,
    Governor,
    MapOptions,
    OverloadError,
    Progress,
    Retry,
    RetryBudget,
    governed_batches,
    governed_imap,
    governed_imap_unordered,
    governed_map,
    parse_retry_after,
)
from aiogovernor.limits import Adjustment, BoundedPolicy, Window

pytestmark = pytest.mark.anyio


class Tracker:
    """A call that sleeps per item, and records concurrency and pulls."""

    def __init__(self) -> None:
        self.running = 0
        self.peak = 0
        self.pulled = 0
        self.cancelled = 0

    def items(self, n: int | None = None) -> Iterator[int]:
        i = 0
        while n is None or i < n:
            self.pulled += 1
            yield i
            i += 1

    async def __call__(self, x: int) -> int:
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(0.01 * (1 + (x * 7919) % 5))
        except BaseException:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1
        return x * 2


async def test_results_keep_input_order_and_concurrency_stays_within_the_limit() -> None:
    gov = Governor("t", Fixed(4))
    calls = Tracker()
    assert await governed_map(calls, calls.items(50), governor=gov) == [x * 2 for x in range(50)]
    assert calls.peak == 4
    assert gov.inflight == 0 and gov.stats().counts["ok"] == 50


async def test_async_iterables_are_drained_too() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(30):
            await anyio.sleep(0.001)
            yield i

    calls = Tracker()
    assert await governed_map(calls, source(), governor=Governor("t", Fixed(5))) == [x * 2 for x in range(30)]


async def test_an_endless_generator_is_pulled_lazily() -> None:
    gov = Governor("t", Fixed(4))
    calls = Tracker()
    got = []
    async with governed_imap(calls, calls.items(), governor=gov, buffer_size=8) as results:
        async for r in results:
            got.append(r)
            if len(got) == 40:
                break
    assert got == [x * 2 for x in range(40)]
    assert calls.pulled <= 40 + 8  # bounded look-ahead: never O(items)
    assert gov.inflight == 0 and calls.running == 0


async def test_a_slow_consumer_slows_the_pool_down() -> None:
    gov = Governor("t", Fixed(4))
    calls = Tracker()
    async with governed_imap(calls, calls.items(), governor=gov, buffer_size=6) as results:
        seen = 0
        async for _ in results:
            seen += 1
            await anyio.sleep(1.0)  # far slower than the calls
            assert calls.pulled - seen <= 6 + 1
            if seen == 10:
                break


async def test_unordered_streams_results_as_they_finish() -> None:
    async def fn(x: int) -> int:
        await anyio.sleep(1.0 if x == 0 else 0.1)
        return x

    async with governed_imap_unordered(fn, range(4), governor=Governor("t", Fixed(4))) as results:
        got = [r async for r in results]
    assert got[-1] == 0 and sorted(got) == [0, 1, 2, 3]


async def test_the_first_error_cancels_the_rest_and_is_raised_as_is() -> None:
    gov = Governor("t", Fixed(4))
    calls = Tracker()

    async def fn(x: int) -> int:
        if x == 10:
            raise KeyError(x)
        return await calls(x)

    with pytest.raises(KeyError):
        await governed_map(fn, calls.items(1000), governor=gov)
    assert gov.inflight == 0 and calls.running == 0
    assert calls.cancelled >= 1 and calls.pulled < 30


async def test_return_exceptions_collects_failures_in_place() -> None:
    async def fn(x: int) -> int:
        if x % 3 == 0:
            raise ValueError(x)
        return x

    results = await governed_map(fn, range(9), governor=Governor("t", Fixed(2)), return_exceptions=True)
    assert [type(r) if isinstance(r, Exception) else r for r in results] == [
        ValueError,
        1,
        2,
        ValueError,
        4,
        5,
        ValueError,
        7,
        8,
    ]
    async with governed_imap(fn, range(4), governor=Governor("t", Fixed(2)), return_exceptions=True) as it:
        assert [isinstance(r, ValueError) async for r in it] == [True, False, False, True]


async def test_a_streamed_error_is_raised_by_the_iterator() -> None:
    async def fn(x: int) -> int:
        if x == 3:
            raise KeyError(x)
        await anyio.sleep(0.1)
        return x

    gov = Governor("t", Fixed(2))
    got = []
    with pytest.raises(KeyError):
        async with governed_imap(fn, range(100), governor=gov) as results:
            async for r in results:
                got.append(r)
    assert got == [0, 1, 2][: len(got)] and gov.inflight == 0


async def test_cancelling_the_caller_cancels_every_call_and_leaks_no_permit() -> None:
    gov = Governor("t", Fixed(8))
    calls = Tracker()

    async def hang(x: int) -> None:
        await calls(x)
        await anyio.sleep_forever()

    with anyio.move_on_after(5.0):
        await governed_map(hang, range(1000), governor=gov)
    assert gov.inflight == 0 and calls.running == 0
    assert gov.waiting == 0


class Manual(BoundedPolicy):
    """Holds its limit: only `Governor.reset_limit` moves it."""

    name = "manual"

    def update(self, window: Window) -> Adjustment:
        return self._hold("manual")


async def test_the_pool_grows_and_shrinks_with_the_limit() -> None:
    gov = Governor("t", Manual(min_limit=1, max_limit=16, initial_limit=2))
    calls = Tracker()
    peaks: list[int] = []

    async def fn(x: int) -> int:
        if x == 20:
            gov.reset_limit(12)
        elif x == 200:
            peaks.append(calls.peak)
            gov.reset_limit(3)
        elif x == 260:  # the calls started before the decrease have finished
            calls.peak = 0
        return await calls(x)

    await governed_map(fn, range(400), governor=gov)
    peaks.append(calls.peak)
    assert peaks[0] >= 10, peaks  # grew from 2 to about 12
    assert peaks[0] == 12 and calls.peak == 3 and gov.inflight == 0


async def test_a_hung_call_times_out_as_overload() -> None:
    gov = Governor("t", Fixed(2))

    async def fn(x: int) -> int:
        if x == 1:
            await anyio.sleep_forever()
        return x

    results = await governed_map(fn, range(3), governor=gov, timeout_s=2.0, return_exceptions=True)
    assert results[0] == 0 and isinstance(results[1], TimeoutError) and results[2] == 2
    assert gov.stats().counts["overload"] == 1 and gov.inflight == 0
    with pytest.raises(TimeoutError):
        await governed_map(fn, range(3), governor=gov, timeout_s=2.0)


class Flaky:
    """Fails ``failures`` times with overload (optionally naming a Retry-After), then succeeds."""

    def __init__(self, failures: int, retry_after: str | None = None, now: datetime | None = None) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.now = now
        self.times: list[float] = []

    async def __call__(self, x: int) -> int:
        self.times.append(anyio.current_time())
        await anyio.sleep(0.01)
        if len(self.times) <= self.failures:
            raise OverloadError(retry_after_s=parse_retry_after(self.retry_after, now=self.now))
        return x


def gaps(times: list[float]) -> list[float]:
    # Each attempt sleeps 0.01 before failing.
    return [round(b - a - 0.01, 6) for a, b in itertools.pairwise(times)]


async def test_retries_follow_the_full_jitter_schedule() -> None:
    retry = Retry(attempts=4, base_delay_s=1.0, max_delay_s=8.0)
    gov = Governor("t", Fixed(1))
    flaky = Flaky(failures=3)
    assert await governed_map(flaky, [7], governor=gov, retry=retry, seed=42) == [7]
    rng = random.Random(42)
    expected = [round(retry.backoff_s(n, rng=rng), 6) for n in (1, 2, 3)]
    assert gaps(flaky.times) == pytest.approx(expected, abs=1e-6)
    # Each attempt is its own sample; a retried overload counts as overload.
    assert gov.stats().counts["overload"] == 3 and gov.stats().counts["ok"] == 1


async def test_retries_give_up_after_the_last_attempt() -> None:
    flaky = Flaky(failures=5)
    with pytest.raises(OverloadError):
        await governed_map(flaky, [1], governor=Governor("t", Fixed(1)), retry=Retry(attempts=3), seed=1)
    assert len(flaky.times) == 3


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_retry_after_delays_the_retry_and_pauses_the_governor(form: str) -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    header = "3" if form == "seconds" else (now + timedelta(seconds=3)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    gov = Governor("t", Fixed(2))
    flaky = Flaky(failures=1, retry_after=header, now=now)
    other: list[float] = []

    async def fn(x: int) -> int:
        if x == 0:
            return await flaky(x)
        await anyio.sleep(0.05)  # starts after item 0 failed: the pause holds it back
        other.append(anyio.current_time())
        return x

    assert await governed_map(fn, [0, 1, 2], governor=gov, retry=Retry(), seed=0) == [0, 1, 2]
    (gap,) = gaps(flaky.times)
    assert 3.0 <= gap <= 3.0 * 1.1  # as asked, lengthened by up to retry_after_jitter
    assert gov.inflight == 0


async def test_garbage_or_past_retry_after_falls_back_to_backoff() -> None:
    now = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
    retry = Retry(base_delay_s=0.5)
    for header in ("soon", "Wed, 01 May 2024 11:00:00 GMT"):
        flaky = Flaky(failures=1, retry_after=header, now=now)
        await governed_map(flaky, [0], governor=Governor("t", Fixed(1)), retry=retry, seed=5)
        assert gaps(flaky.times) == [pytest.approx(retry.backoff_s(1, rng=random.Random(5)))]


async def test_the_permit_is_released_while_a_retry_waits() -> None:
    gov = Governor("t", Fixed(1))
    flaky = Flaky(failures=1)
    started: list[float] = []

    async def fn(x: int) -> int:
        if x == 0:
            return await flaky(x)
        started.append(anyio.current_time())
        return x

    retry = Retry(base_delay_s=5.0, max_delay_s=5.0, multiplier=1.0)
    await governed_map(fn, [0, 1], governor=gov, retry=retry, seed=3)
    # Item 1 ran during item 0's backoff, with the only permit.
    assert started[0] < flaky.times[1]


async def test_an_exhausted_budget_stops_retries() -> None:
    flaky = Flaky(failures=1)
    budget = RetryBudget(ratio=0.0, reserve=0)
    with pytest.raises(OverloadError):
        await governed_map(flaky, [0], governor=Governor("t", Fixed(1)), retry=Retry(), retry_budget=budget)
    assert (budget.requests, budget.retries, budget.refused) == (1, 0, 1)


async def test_plain_errors_are_not_retried_by_default() -> None:
    attempts = 0

    async def fn(x: int) -> int:
        nonlocal attempts
        attempts += 1
        raise ValueError(x)

    with pytest.raises(ValueError):
        await governed_map(fn, [0], governor=Governor("t", Fixed(1)), retry=Retry(attempts=5))
    assert attempts == 1


async def test_progress_reports_done_failed_total_limit_and_throughput() -> None:
    reports: list[Progress] = []

    async def fn(x: int) -> int:
        await anyio.sleep(0.05)
        if x == 5:
            raise ValueError
        return x

    gov = Governor("t", Fixed(3))
    await governed_map(fn, range(30), governor=gov, return_exceptions=True, progress=reports.append)
    assert len(reports) >= 3
    last = reports[-1]
    assert (last.done, last.failed, last.total, last.limit) == (29, 1, 30, 3)
    assert last.throughput_per_s == pytest.approx(30 / last.elapsed_s)
    assert [r.done + r.failed for r in reports] == sorted(r.done + r.failed for r in reports)


async def test_progress_true_without_rich_shows_nothing_and_works(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "rich.progress", None)
    assert await governed_map(Tracker(), range(5), progress=True) == [0, 2, 4, 6, 8]


async def test_without_a_governor_one_is_made_named_after_the_function() -> None:
    seen: list[str] = []

    async def named_fn(x: int) -> int:
        return x

    class Spy(Governor):
        def __init__(self, name: str, *args: Any, **kwargs: Any) -> None:
            seen.append(name)
            super().__init__(name, *args, **kwargs)

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setattr("aiogovernor._map.Governor", Spy)
    try:
        assert await governed_map(named_fn, range(3)) == [0, 1, 2]
    finally:
        monkeypatch.undo()
    assert seen == ["map:test_without_a_governor_one_is_made_named_after_the_function.<locals>.named_fn"]


async def test_batches_come_back_flattened_in_order() -> None:
    sizes: list[int] = []

    async def fn(chunk: list[int]) -> list[int]:
        sizes.append(len(chunk))
        await anyio.sleep(0.01 * len(chunk))
        return [x * 10 for x in chunk]

    chunker = AdaptiveChunker(initial_size=3, max_size=50)
    out = await governed_batches(fn, range(200), chunker=chunker, governor=Governor("t", Fixed(3)))
    assert out == [x * 10 for x in range(200)]
    assert sum(sizes) == 200 and max(sizes) > 3  # it grew toward 0.2 s (20 items)


async def test_chunks_from_an_async_iterable_are_contiguous_and_in_order() -> None:
    async def source() -> AsyncIterator[int]:
        for i in range(40):
            yield i

    chunks: list[list[int]] = []

    async def fn(chunk: list[int]) -> list[int]:
        chunks.append(chunk)
        await anyio.sleep(0.01)
        return chunk

    chunker = AdaptiveChunker(initial_size=4, min_size=4, max_size=4)
    out = await governed_batches(fn, source(), chunker=chunker, governor=Governor("t", Fixed(4)))
    assert out == list(range(40))
    assert all(c == list(range(c[0], c[0] + len(c))) for c in chunks)


async def test_a_failed_chunk_fails_each_of_its_items_or_the_whole_map() -> None:
    async def fn(chunk: list[int]) -> list[int]:
        if 4 in chunk:
            raise ValueError(chunk)
        return chunk

    chunker = AdaptiveChunker(initial_size=3, min_size=3, max_size=3)
    out = await governed_batches(
        fn, range(7), chunker=chunker, governor=Governor("t", Fixed(1)), return_exceptions=True
    )
    assert [isinstance(r, ValueError) for r in out] == [False] * 3 + [True] * 3 + [False]

    async def short(chunk: list[int]) -> list[int]:
        return chunk[1:]

    with pytest.raises(ValueError, match="one result per item"):
        await governed_batches(short, range(7), governor=Governor("t", Fixed(1)))


async def test_chunks_reach_the_target_duration_again_after_the_cost_changes() -> None:
    cost = {"per_item_s": 0.001}
    durations: list[tuple[int, float]] = []

    async def fn(chunk: list[int]) -> list[int]:
        duration = cost["per_item_s"] * len(chunk)
        await anyio.sleep(duration)
        durations.append((len(chunk), duration))
        if len(durations) == 150:
            cost["per_item_s"] = 0.01  # each item becomes 10× dearer mid-run
        return chunk

    chunker = AdaptiveChunker(initial_size=1, max_size=5000)
    await governed_batches(fn, range(60_000), chunker=chunker, governor=Governor("t", Fixed(4)))
    before = [d for _, d in durations[140:150]]
    # The last chunk may be a short remainder.
    after = [d for n, d in durations[-10:] if n == chunker.size]
    assert len(after) >= 8
    assert all(abs(d - 0.2) <= 0.04 for d in before), before
    assert all(abs(d - 0.2) <= 0.04 for d in after), after
    assert chunker.size in range(16, 25)


@pytest.mark.parametrize(
    ("fn", "kwargs", "error", "match"),
    [
        (42, {}, TypeError, "fn must be"),
        (lambda x: x, {}, TypeError, "coroutine function"),
        (Tracker(), {"timeout_s": -1.0}, ValueError, "timeout_s"),
        (Tracker(), {"timeout_s": 0}, ValueError, "timeout_s"),
        (Tracker(), {"retry": 3}, TypeError, "retry"),
        (Tracker(), {"governor": "gov"}, TypeError, "governor"),
        (Tracker(), {"progress": 5}, TypeError, "progress"),
    ],
)
async def test_bad_input_gets_a_clear_error(fn: Any, kwargs: dict[str, Any], error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        await governed_map(fn, range(3), **kwargs)
    with pytest.raises(error, match=match):
        governed_imap(fn, range(3), **kwargs)


async def test_bad_items_chunker_and_buffer_are_refused() -> None:
    with pytest.raises(TypeError, match="items"):
        await governed_map(Tracker(), 5)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="items"):
        await governed_map(Tracker(), "abc")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="chunker"):
        await governed_batches(Tracker(), range(3), chunker="10")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chunker"):
        await governed_batches(Tracker(), range(3), chunker=0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="buffer_size"):
        governed_imap_unordered(Tracker(), range(3), buffer_size=0)
    with pytest.raises(ValueError, match="min_size"):
        AdaptiveChunker(min_size=10, max_size=2)


async def test_a_chunker_is_an_int_or_any_chunker() -> None:
    chunks: list[list[int]] = []

    async def fn(chunk: list[int]) -> list[int]:
        chunks.append(chunk)
        await anyio.sleep(0.1 * len(chunk))
        return chunk

    assert await governed_batches(fn, range(10), chunker=4, governor=Governor("t", Fixed(2))) == list(
        range(10)
    )
    assert [len(c) for c in chunks] == [4, 4, 2]

    class Halving:
        """Not an AdaptiveChunker: any object with size and record is a Chunker."""

        def __init__(self) -> None:
            self.size = 8
            self.seen: list[tuple[int, float]] = []

        def record(self, size: int, duration_s: float) -> int:
            self.seen.append((size, duration_s))
            self.size = max(1, self.size // 2)
            return self.size

    halving = Halving()
    chunks.clear()
    assert await governed_batches(fn, range(15), chunker=halving, governor=Governor("t", Fixed(1))) == list(
        range(15)
    )
    assert [len(c) for c in chunks] == [8, 4, 2, 1]
    # Timed with the governor's clock (virtual time here).
    assert [size for size, _ in halving.seen] == [8, 4, 2, 1]
    assert [duration for _, duration in halving.seen] == pytest.approx([0.8, 0.4, 0.2, 0.1])


async def test_an_unknown_option_is_refused_by_name() -> None:
    with pytest.raises(TypeError, match=r"governed_map.*'timout_s'"):
        await governed_map(Tracker(), range(3), timout_s=1.0)  # type: ignore[call-overload]
    with pytest.raises(TypeError, match=r"governed_imap_unordered.*'buffer'"):
        governed_imap_unordered(Tracker(), range(3), buffer=3)  # type: ignore[call-arg]


async def test_options_travel_as_one_mapping() -> None:
    options: MapOptions = {"governor": Governor("t", Fixed(2)), "retry": Retry(attempts=2), "seed": 1}
    assert await governed_map(Tracker(), range(4), **options) == [0, 2, 4, 6]
    async with governed_imap(Tracker(), range(4), **options) as results:
        assert [r async for r in results] == [0, 2, 4, 6]


@pytest.mark.parametrize("ordered", [True, False], ids=["imap", "imap_unordered"])
async def test_a_slow_consumer_wakes_one_worker_per_item_not_all(
    ordered: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aiogovernor._map import _Pool

    waits = 0
    wait_for_room = _Pool._wait_for_room

    async def counted(self: _Pool) -> None:
        nonlocal waits
        waits += 1
        await wait_for_room(self)

    monkeypatch.setattr(_Pool, "_wait_for_room", counted)

    async def instant(x: int) -> int:
        return x

    form = governed_imap if ordered else governed_imap_unordered
    limit, items = 200, 100
    async with form(instant, itertools.count(), governor=Governor("t", Fixed(limit))) as results:
        seen = 0
        async for _ in results:
            await anyio.sleep(0.01)  # far slower than the workers
            seen += 1
            if seen == items:
                break
    # Each worker waits once when the buffer first fills, then about once per item consumed:
    # waking every waiter for every item would make this about limit x items (20 000).
    assert waits <= limit + 3 * items, waits


async def test_room_grows_with_the_limit_and_the_end_releases_every_waiter() -> None:
    gov = Governor("t", Fixed(2))

    async def instant(x: int) -> int:
        return x

    async with governed_imap(instant, range(100), governor=gov) as results:
        got = [await anext(results)]
        await anyio.sleep(0.1)
        gov.reset_limit(20)  # more room (2 x limit + 16) for the workers waiting for it
        async for r in results:
            got.append(r)
            await anyio.sleep(0.01)
    assert got == list(range(100))
    assert gov.inflight == 0


@pytest.mark.usefixtures("asyncio_only")  # the storage is the same on trio: one run is enough
async def test_results_cost_about_what_a_bare_pool_keeps() -> None:
    import tracemalloc

    n = 20_000

    async def fn(x: int) -> int:
        await anyio.lowlevel.checkpoint()
        return x + 1_000  # a fresh int per result, as real results are

    async def bare_pool() -> list[int]:
        results = [0] * n
        it = iter(range(n))

        async def worker() -> None:
            for x in it:
                results[x] = await fn(x)

        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(worker)
        return results

    async def mapped() -> list[int]:
        return await governed_map(fn, range(n), governor=Governor("t", Fixed(50)))

    peaks = {}
    for name, run in (("bare", bare_pool), ("map", mapped)):
        tracemalloc.start()
        try:
            base = tracemalloc.get_traced_memory()[0]
            assert len(await run()) == n
            peaks[name] = tracemalloc.get_traced_memory()[1] - base
        finally:
            tracemalloc.stop()
    # A dict by index (about 100 bytes a result) would make this about 3x.
    assert peaks["map"] <= 1.6 * peaks["bare"], peaks


async def test_a_kept_permit_goes_back_as_soon_as_someone_else_waits() -> None:
    gov = Governor("t", Fixed(2))

    async def slow(x: int) -> int:
        await anyio.sleep(1.0)
        return x

    waited: list[float] = []

    async def outsider() -> None:
        await anyio.sleep(2.5)
        asked = anyio.current_time()
        async with gov:
            waited.append(anyio.current_time() - asked)

    async with anyio.create_task_group() as tg:
        tg.start_soon(outsider)
        assert await governed_map(slow, range(20), governor=gov) == list(range(20))
    # Served when the first call in flight ended, not after the map (FIFO, no starvation).
    assert waited == [pytest.approx(0.5)]
    assert gov.inflight == 0 and gov.stats().counts["ok"] == 21


async def test_a_pause_stops_kept_permits_from_starting_new_calls() -> None:
    gov = Governor("t", Fixed(3))
    starts: list[float] = []

    async def fn(x: int) -> int:
        starts.append(anyio.current_time())
        await anyio.sleep(0.1)
        if x == 10:
            raise OverloadError(retry_after_s=5.0)
        return x

    out = await governed_map(fn, range(30), governor=gov, return_exceptions=True)
    assert isinstance(out[10], OverloadError) and out[:10] == list(range(10))
    failed_at = starts[10] + 0.1
    # Calls already running finish; nothing new starts until the pause is over.
    assert not [t for t in starts if failed_at + 0.1 < t < failed_at + 5.0], starts
    assert gov.inflight == 0 and gov.stats().counts["ok"] == 29


def test_workers_started_under_a_permit_do_not_inherit_it() -> None:
    # A worker that starts more workers (the limit rose) does so from inside its permit's
    # block; a task inherits its creator's context, so each new worker used to find that
    # permit as its own and the nesting warning fired when it queued (the quickstart showed it).
    from aiogovernor.sim import KneeUpstream, run_virtual

    upstream = KneeUpstream(capacity=8, service_time_s=0.05, seed=1)
    gov = Governor("spawned", store=None)

    async def main() -> None:
        async def guarded() -> None:
            async with gov:
                await upstream()

        await asyncio.gather(*(guarded() for _ in range(100)))

        async def fetch(i: int) -> int:
            await upstream()
            return i

        assert await governed_map(fetch, range(2000), governor=gov) == list(range(2000))

    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_virtual(main())
    assert gov.inflight == 0
