"""The core's scale sections of ``benchmarks/scale.py``: cost against size beside what a user would pick.

Every section runs its contenders interleaved, round by round, in one process,
and prints the median and the worst of the rounds as a markdown table. Times are
the thread's CPU time (``time.thread_time``): the event loop runs in this one
thread, and a shared machine's scheduling (a process descheduled for 30 ms
in the middle of a 100-waiter run) does not count.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import functools
import gc
import pickle
import statistics
import tempfile
import time
import tracemalloc
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiometer

from aiogovernor import AIMD, Decision, Fixed, Governor, Outcome, WindowConfig, governed_map
from aiogovernor._clone import copier
from aiogovernor._feedback import Feedback
from aiogovernor._history import DecisionHistory
from aiogovernor.limits import LatencyAIMD, LatencyBaseline, default_policy
from aiogovernor.state import JsonFileStore, MemoryStore
from aiogovernor.testing import ManualClock
from aiogovernor.testing import window as testing_window

SIZES = (100, 1_000, 10_000, 100_000)


def _row(label: str, values: list[float], unit: str = "", digits: int = 2) -> str:
    return f"| {label} | {statistics.median(values):.{digits}f}{unit} | {max(values):.{digits}f}{unit} |"


def _table(title: str, rows: dict[str, list[float]], unit: str, digits: int = 2) -> None:
    print(f"\n{title}\n\n| contender | median | worst |\n| --- | ---: | ---: |")
    for label, values in rows.items():
        print(_row(label, values, unit, digits))


def _interleave(contenders: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in contenders}
    for r in range(rounds):
        # Each round starts one contender later, so no contender always runs first.
        names = list(contenders)
        names = names[r % len(names) :] + names[: r % len(names)]
        for name in names:
            gc.collect()
            out[name].append(contenders[name]())
    return out


# -- waiters: hand-off and cancellation with N queued -------------------------------------


async def _handoff_us(make: Callable[[], Any], waiters: int) -> float:
    """Per permit: N tasks queued behind one held permit are served one after another."""
    gate = make()
    await gate.acquire()
    done = 0

    async def one() -> None:
        nonlocal done
        await gate.acquire()
        done += 1
        gate.release()

    tasks = [asyncio.create_task(one()) for _ in range(waiters)]
    await asyncio.sleep(0)  # every task queued
    start = time.thread_time()
    gate.release()
    await asyncio.gather(*tasks)
    elapsed = time.thread_time() - start
    assert done == waiters
    return elapsed / waiters * 1e6


async def _cancel_us(make: Callable[[], Any], waiters: int) -> float:
    """Per cancellation: half of N queued waiters cancelled, every other one (not the front)."""
    gate = make()
    await gate.acquire()
    tasks = [asyncio.create_task(gate.acquire()) for _ in range(waiters)]
    await asyncio.sleep(0)
    victims = tasks[1::2]
    start = time.thread_time()
    for t in victims:
        t.cancel()
    await asyncio.gather(*victims, return_exceptions=True)
    elapsed = time.thread_time() - start
    for t in tasks[0::2]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed / len(victims) * 1e6


class _GovernorGate:
    """The governor's manual form with a Semaphore's acquire/release shape."""

    def __init__(self) -> None:
        self.gov = Governor("scale", Fixed(1), store=None)
        self.held: list[Any] = []

    async def acquire(self) -> None:
        self.held.append(await self.gov.acquire())

    def release(self) -> None:
        self.held.pop().release()


def bench_waiters(rounds: int, sizes: tuple[int, ...]) -> None:
    gates: dict[str, Callable[[], Any]] = {
        "asyncio.Semaphore(1)": lambda: asyncio.Semaphore(1),
        "Governor (Fixed(1))": _GovernorGate,
    }
    for title, measure in (
        ("Hand-off with N waiters queued: µs per permit", _handoff_us),
        ("Cancelling half of N queued waiters: µs per cancellation", _cancel_us),
    ):
        print(f"\n{title}\n\n| N | " + " | ".join(f"{g} median | worst" for g in gates) + " |")
        print("| ---: |" + " ---: | ---: |" * len(gates))
        for n in sizes:
            got = _interleave(
                {
                    g: (lambda make=make, n=n, measure=measure: asyncio.run(measure(make, n)))  # type: ignore[misc]
                    for g, make in gates.items()
                },
                rounds,
            )
            cells = " | ".join(f"{statistics.median(v):.2f} | {max(v):.2f}" for v in got.values())
            print(f"| {n:,} | {cells} |")


# -- limit: raising the limit with N waiters --------------------------------------------


async def _raise_limit_us(waiters: int, semaphore: bool) -> float:
    """Per woken waiter: the limit raised from 1 to N+1 (a Semaphore: N releases by hand)."""
    if semaphore:
        sem = asyncio.Semaphore(0)
        tasks = [asyncio.create_task(sem.acquire()) for _ in range(waiters)]
        await asyncio.sleep(0)
        start = time.thread_time()
        for _ in range(waiters):
            sem.release()
        await asyncio.gather(*tasks)
    else:
        gov = Governor("scale", AIMD(initial_limit=1, max_limit=waiters + 1), store=None)
        first = await gov.acquire()
        tasks = [asyncio.create_task(gov.acquire()) for _ in range(waiters)]
        await asyncio.sleep(0)
        start = time.thread_time()
        gov.reset_limit(waiters + 1)
        permits = await asyncio.gather(*tasks)
        for p in (first, *permits):
            p.release()
    return (time.thread_time() - start) / waiters * 1e6


def bench_limit(rounds: int, sizes: tuple[int, ...]) -> None:
    print(
        "\nRaising the limit with N waiters: µs per waiter woken\n\n"
        "| N | Semaphore, N releases median | worst | Governor.reset_limit median | worst |\n"
        "| ---: | ---: | ---: | ---: | ---: |"
    )
    for n in sizes:
        got = _interleave(
            {
                "sem": lambda n=n: asyncio.run(_raise_limit_us(n, True)),  # type: ignore[misc]
                "gov": lambda n=n: asyncio.run(_raise_limit_us(n, False)),  # type: ignore[misc]
            },
            rounds,
        )
        cells = " | ".join(f"{statistics.median(v):.2f} | {max(v):.2f}" for v in got.values())
        print(f"| {n:,} | {cells} |")


# -- governors: construction and memory ---------------------------------------------------


def _build_us(make: Callable[[int], object], n: int) -> float:
    start = time.thread_time()
    keep = [make(i) for i in range(n)]
    elapsed = time.thread_time() - start
    del keep
    return elapsed / n * 1e6


def _drive(gov: Governor, clock: ManualClock, decisions: int) -> None:
    """Closes ``decisions`` windows of 10 samples each (overloads now and then)."""
    while gov.stats().decision_count < decisions:
        permits = [gov.try_acquire() for _ in range(4)]
        clock.advance(0.011)
        for j, p in enumerate(permits):
            if p is not None:
                p.release(Outcome.OVERLOAD if j == 0 and clock() % 3 < 0.011 else Outcome.OK)


def _bytes_per_governor(
    n: int, decisions: int, *, keep_whole: bool, policy: Callable[[], Any], store: Any = None
) -> float:
    clock = ManualClock()
    window = WindowConfig(min_samples=10, min_duration_s=0.0, latency_multiple=0.0)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        govs = [Governor(f"g{i}", policy(), clock=clock, window=window, store=store) for i in range(n)]
        kept: list[deque[Decision]] = []
        for gov in govs:
            if keep_whole:
                # The shape before: every kept decision whole, with its Window and reason.
                whole: deque[Decision] = deque(maxlen=100)
                gov.add_listener(whole.append)
                kept.append(whole)
            _drive(gov, clock, decisions)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / n
    finally:
        tracemalloc.stop()


def _history_bytes(decisions: int, *, lagged: bool, sized: bool = False) -> float:
    """Bytes of one history of 100 after ``decisions`` windowed decisions, alone.

    Windows without the loop's lag (what `_drive`'s windows carry: no event loop there), or with
    the lag and the pauses reported (what an asyncio governor's windows carry), and a call size.
    """
    made = []
    end, old = 0.0, 4
    for i in range(decisions):
        new = 4 + i % 3
        w = testing_window(ok=10, start=end, duration_s=0.1, limit=old, latency_s=0.01 + 0.001 * (i % 7))
        if lagged:
            w = dataclasses.replace(w, loop_lag_s=0.0002 * (i % 5), loop_pause_s=0.00001 * i)
        if sized:
            w = dataclasses.replace(w, size_mean=1.5)
        made.append(
            Decision(
                governor="g",
                environment="e",
                at=w.end,
                old_limit=old,
                new_limit=new,
                policy_limit=new + 0.25,
                reason="limit-bound: +1",
                window=w,
                confidence=w.confidence,
            )
        )
        end, old = w.end, new
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        history = DecisionHistory(100, governor="g", environment="e")
        for d in made:
            history.append(d)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()


def _loop_bytes_per_governor(n: int, decisions: int, store: Any) -> float:
    """Bytes per default governor after ``decisions`` on a running asyncio loop, a save pending.

    Windows of 10 calls taking ~0.5 ms each (real time), so every window reports the loop's
    lag; a save interval of an hour, so each governor holds what waits for its next save.
    """
    window = WindowConfig(min_samples=10, min_duration_s=0.0, latency_multiple=0.0)

    async def drive(gov: Governor) -> None:
        while gov.stats().decision_count < decisions:
            permits = [gov.try_acquire() for _ in range(4)]
            await asyncio.sleep(0.0005)
            for permit in permits:
                if permit is not None:
                    permit.release()

    async def main() -> float:
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            govs = [Governor(f"g{i}", window=window, store=store, save_interval_s=3600) for i in range(n)]
            for gov in govs:
                await drive(gov)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / n
        finally:
            tracemalloc.stop()

    return asyncio.run(main())


def _baseline_bytes(windows: int) -> float:
    """Bytes of the default policy's latency baseline after ``windows`` plain windows of 50 calls."""
    made = [testing_window(ok=50, latency_s=0.01 + 0.0001 * i) for i in range(windows)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        baselines = [LatencyBaseline() for _ in range(100)]
        for baseline in baselines:
            for w in made:
                baseline.observe(w)
        gc.collect()
        return (tracemalloc.get_traced_memory()[0] - before) / len(baselines)
    finally:
        tracemalloc.stop()


async def _origin_request_us(new_origins: bool, n: int = 300) -> float:
    """CPU per request through `GovernedTransport(per_host=True)`: each to a new origin, or all to one."""
    import httpx

    from aiogovernor.httpx import GovernedTransport

    transport = GovernedTransport(
        Governor("api", store=None),
        transport=httpx.MockTransport(lambda request: httpx.Response(200)),
        per_host=True,
    )
    urls = [f"http://h{i}.test/" if new_origins else "http://h.test/" for i in range(n)]
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get("http://h.test/")  # the client and the known origin warmed up
        start = time.thread_time()
        for url in urls:
            await client.get(url)
        return (time.thread_time() - start) / n * 1e6


def bench_governors(rounds: int, sizes: tuple[int, ...]) -> None:
    template = Governor("t", store=None)
    frozen = default_policy()
    pickled = pickle.dumps(frozen, pickle.HIGHEST_PROTOCOL)
    copy_policy = copier(frozen)  # what `GovernedTransport(per_host=True)` does per origin
    _table(
        "Building one: µs each, building N = 1 000 in a row",
        _interleave(
            {
                "asyncio.Semaphore": lambda: _build_us(lambda i: asyncio.Semaphore(10), 1000),
                "Governor(name, store=None)": lambda: _build_us(
                    lambda i: Governor(f"g{i}", store=None), 1000
                ),
                "Governor(name) (default store)": lambda: _build_us(lambda i: Governor(f"g{i}"), 1000),
                "per-host origin: derive + deepcopy of the policy (first)": lambda: _build_us(
                    lambda i: template.derive(f"t@{i}", copy.deepcopy(frozen)), 1000
                ),
                "per-host origin: derive + unpickled policy (before)": lambda: _build_us(
                    lambda i: template.derive(f"t@{i}", pickle.loads(pickled)), 1000
                ),
                "per-host origin: derive + copied policy (now)": lambda: _build_us(
                    lambda i: template.derive(f"t@{i}", copy_policy()), 1000
                ),
                "the default policy alone (default_policy())": lambda: _build_us(
                    lambda i: default_policy(), 1000
                ),
                "the default policy's constructor (LatencyAIMD())": lambda: _build_us(
                    lambda i: LatencyAIMD(), 1000
                ),
            },
            rounds,
        ),
        " µs",
    )
    origins = _interleave(
        {
            "a request to a known origin": lambda: asyncio.run(_origin_request_us(False)),
            "a request to a new origin (its governor made)": lambda: asyncio.run(_origin_request_us(True)),
        },
        rounds,
    )
    _table(
        "httpx with `GovernedTransport(per_host=True)` (default policy, no store, a mock upstream): "
        "µs of CPU per request, 300 in a row",
        origins,
        " µs",
    )
    ratio = statistics.median(origins["a request to a new origin (its governor made)"]) / statistics.median(
        origins["a request to a known origin"]
    )
    print(f"\nA new origin's request over a known one's: {ratio:.2f}x (medians)")
    bench_memory(rounds, sizes)


def bench_memory(rounds: int, sizes: tuple[int, ...]) -> None:
    """Memory per governor: without a store, with whole decisions kept, with a store; the history alone."""
    with tempfile.TemporaryDirectory() as directory:
        _memory_tables(JsonFileStore(directory))


MEMORY_DECISIONS = (0, 100, 300)  # decisions each governor makes, by row of the memory table
MEMORY_GOVERNORS = 100  # governors measured at once (bytes are per governor)


def _memory_tables(default_store: Any) -> None:
    print(
        "\nMemory per governor (tracemalloc), default history (100), windows of 10 samples\n\n"
        "| N governors | decisions each | policy | B per governor, no store "
        "| with decisions also kept whole, B | with a MemoryStore, B | with the default store, B |\n"
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: |"
    )
    # The first governor with a store imports what saving needs: not a governor's weight.
    _bytes_per_governor(2, 2, keep_whole=False, policy=AIMD, store=MemoryStore())
    _bytes_per_governor(2, 2, keep_whole=False, policy=AIMD, store=default_store)
    n = MEMORY_GOVERNORS  # per governor: the same at any count (each keeps its own)
    for decisions in MEMORY_DECISIONS:
        for label, policy in (("default", default_policy), ("AIMD", AIMD)):
            now = _bytes_per_governor(n, decisions, keep_whole=False, policy=policy)
            whole = _bytes_per_governor(n, decisions, keep_whole=True, policy=policy)
            # A store's governor also keeps the decisions it saves (`state_history_size`). No
            # loop runs here: nothing is saved, so every decision is one not saved yet.
            stored = _bytes_per_governor(n, decisions, keep_whole=False, policy=policy, store=MemoryStore())
            default = _bytes_per_governor(n, decisions, keep_whole=False, policy=policy, store=default_store)
            cells = " | ".join(f"{b:,.0f}" for b in (now, whole, stored, default))
            print(f"| {n:,} | {decisions} | {label} | {cells} |")
    print(
        "\nThe history alone (100 kept), B: windows without the loop's lag (no event loop, as above),"
        " with the lag reported (an asyncio governor's windows), and with a call size too\n\n"
        "| decisions | without lag | with lag | with lag and size |\n| ---: | ---: | ---: | ---: |"
    )
    for decisions in (100, 300):
        plain = _history_bytes(decisions, lagged=False)
        lagged = _history_bytes(decisions, lagged=True)
        sized = _history_bytes(decisions, lagged=True, sized=True)
        print(f"| {decisions} | {plain:,.0f} | {lagged:,.0f} | {sized:,.0f} |")
    with tempfile.TemporaryDirectory() as directory:
        on_loop = JsonFileStore(directory)
        _loop_bytes_per_governor(2, 5, on_loop)  # imports and first uses: not a governor's weight
        weight = _loop_bytes_per_governor(50, 100, on_loop)
        print(
            "\nA default governor with the default store on a running asyncio loop (windows report the"
            f" loop's lag; a save pending), B each after 100 decisions: {weight:,.0f}"
        )
    print(
        "\nThe default policy's latency baseline (one size band, 50 window medians kept), B each: "
        + ", ".join(f"after {n} windows {_baseline_bytes(n):,.0f}" for n in (10, 200))
    )


# -- decisions: the cost of one, against the window's size ------------------------------


def _decision_us(samples: int, decisions: int, policy: Callable[[], Any]) -> float:
    config = WindowConfig(min_samples=samples, max_samples=samples, min_duration_s=0.0, latency_multiple=0.0)
    fb = Feedback(
        policy(), governor="g", environment="e", window=config, history_size=100, apply=lambda d: None
    )
    lat = fb.ok_latencies
    t = 0.0
    total = 0.0
    values = [0.01 + 0.001 * (i % 11) for i in range(samples)]
    for _ in range(decisions):
        fb.due(t, t, 10)
        lat.extend(values)
        t += 0.1
        start = time.thread_time()
        fb.close(t, 10, peak_inflight=10, saw_waiters=False)
        total += time.thread_time() - start
    return total / decisions * 1e6


async def _requests_cpu_share(requests: int, window: WindowConfig | None, limit: int) -> tuple[float, int]:
    """CPU seconds per second of load at 10⁵ requests/s of virtual time, and decisions made."""
    clock = ManualClock()
    gov = Governor("g", AIMD(initial_limit=limit, max_limit=limit), clock=clock, window=window, store=None)
    start = time.process_time()
    for _ in range(requests):
        p = gov.try_acquire()
        clock.advance(1e-5)
        assert p is not None
        p.release()
    cpu = time.process_time() - start
    return cpu / (requests * 1e-5), gov.stats().decision_count


def bench_decisions(rounds: int, sizes: tuple[int, ...]) -> None:
    print(
        "\nOne decision (window closed, policy asked, decision kept): µs against the window's samples\n\n"
        "| samples per window | default policy median | worst | AIMD median | worst |\n"
        "| ---: | ---: | ---: | ---: | ---: |"
    )
    for n in (10, *sizes[:3]):
        count = max(20, 20_000 // n)
        got = _interleave(
            {
                "default": lambda n=n, c=count: _decision_us(n, c, default_policy),  # type: ignore[misc]
                "aimd": lambda n=n, c=count: _decision_us(n, c, AIMD),  # type: ignore[misc]
            },
            rounds,
        )
        cells = " | ".join(f"{statistics.median(v):.2f} | {max(v):.2f}" for v in got.values())
        print(f"| {n:,} | {cells} |")
    print(
        "\nA governor at 10⁵ requests/s (virtual time, 2×10⁵ requests): share of a core, all costs in\n\n"
        "| window | limit | decisions | share median | worst |\n| --- | ---: | ---: | ---: | ---: |"
    )
    for label, window, limit in (
        ("default (0.1 s floor)", None, 4),
        ("default (0.1 s floor)", None, 100),
        ("short: min_duration_s=0", WindowConfig(min_duration_s=0.0, latency_multiple=0.0), 4),
    ):
        shares: list[float] = []
        made = 0
        for _ in range(rounds):
            share, made = asyncio.run(_requests_cpu_share(200_000, window, limit))
            shares.append(share)
        print(f"| {label} | {limit} | {made:,} | {statistics.median(shares):.1%} | {max(shares):.1%} |")


# -- map: by items and by limit -----------------------------------------------------------


async def _yields(x: int) -> int:
    await asyncio.sleep(0)
    return x


async def _task_per_item(n: int, limit: int) -> list[int]:
    sem = asyncio.Semaphore(limit)

    async def one(x: int) -> int:
        async with sem:
            return await _yields(x)

    return list(await asyncio.gather(*(one(x) for x in range(n))))


async def _aiometer(n: int, limit: int) -> list[int]:
    return list(await aiometer.run_all([functools.partial(_yields, x) for x in range(n)], max_at_once=limit))


async def _pool(n: int, limit: int) -> list[int]:
    results = [0] * n
    it = iter(range(n))

    async def worker() -> None:
        for x in it:
            results[x] = await _yields(x)

    await asyncio.gather(*(worker() for _ in range(limit)))
    return results


async def _governed(n: int, limit: int) -> list[int]:
    return await governed_map(_yields, range(n), governor=Governor("scale", Fixed(limit), store=None))


MAP_CONTENDERS: dict[str, Callable[[int, int], Awaitable[list[int]]]] = {
    "task per item (Semaphore + gather)": _task_per_item,
    "aiometer.run_all": _aiometer,
    "fixed pool (floor)": _pool,
    "governed_map": _governed,
}


def _map_us(fn: Callable[[int, int], Awaitable[list[int]]], n: int, limit: int) -> float:
    start = time.thread_time()
    out = asyncio.run(fn(n, limit))
    elapsed = time.thread_time() - start
    assert len(out) == n and out[-1] == n - 1
    return elapsed / n * 1e6


def bench_map(rounds: int, sizes: tuple[int, ...]) -> None:
    for title, cases in (
        ("by items (limit 100)", [(n, 100) for n in sizes]),
        ("by limit (10 000 items)", [(10_000, limit) for limit in (10, 100, 1_000)]),
    ):
        print(
            f"\nMapping a call that suspends once, {title}: µs per item, median (worst)\n\n"
            "| items | limit | " + " | ".join(MAP_CONTENDERS) + " | task per item / governed_map |\n"
            "| ---: | ---: |" + " ---: |" * (len(MAP_CONTENDERS) + 1)
        )
        for n, limit in cases:
            got = _interleave(
                {k: (lambda f=f, n=n, limit=limit: _map_us(f, n, limit)) for k, f in MAP_CONTENDERS.items()},  # type: ignore[misc]
                rounds,
            )
            cells = " | ".join(f"{statistics.median(v):.2f} ({max(v):.2f})" for v in got.values())
            ratio = statistics.median(got["task per item (Semaphore + gather)"]) / statistics.median(
                got["governed_map"]
            )
            print(f"| {n:,} | {limit:,} | {cells} | {ratio:.1f}x |")
