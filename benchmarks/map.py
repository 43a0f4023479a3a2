"""governed_map against a task per item, aiometer and a fixed worker pool; streamed memory.

Runs every contender side by side in one process, interleaved round by round,
and prints medians, ratios and a markdown table::

    python benchmarks/map.py            # ~1 minute on a quiet machine
    python benchmarks/map.py --rounds 7 --items 200000 --stream-items 2000000
    python benchmarks/map.py --only backpressure --rounds 5

1. Mapping ``--items`` trivial coroutines at 100 in flight: asyncio.Semaphore
   + TaskGroup (a task per item), ``aiometer.amap``, a fixed pool of 100
   workers draining one iterator (the floor), and `governed_map` under a
   governor fixed at 100.
2. Peak traced memory (tracemalloc) while streaming ``--stream-items`` items
   from a generator through `governed_imap`, beside ``asyncio.gather`` over a
   task per item (measured on ``--gather-items`` items: it keeps them all);
   and `governed_map` keeping ``--gather-items`` results beside the bare pool
   filling a list, after one small map (modules loaded on first use not counted).
3. CPU time per call that suspends once (``--cpu-items`` calls, limit 100),
   relative to the bare pool of 100 workers (run just before each contender,
   so that each ratio is of two runs side by side): the pool under the governor,
   the bare pool started through an anyio task group, `governed_map`, and
   `governed_map` whose windows never close during the run (each call still
   sampled: the difference is what closing a window every 1 000 samples costs);
   process time, so a loaded machine disturbs it less than wall time.
   Peak memory of `governed_map` beside the bare pool is in part 2.
4. Backpressure: a consumer slower than the workers (it sleeps
   ``--consumer-sleep-s`` per result) reads ``--slow-items`` results from
   `governed_imap` and from ``aiometer.amap`` at limits 10, 300 and 1000; CPU
   time (process time) per item consumed, median and worst of ``--rounds``
   interleaved rounds. The workers wait for room in the buffer: what they
   cost while waiting should not grow with the limit.
5. ``--only breakdown`` (not run by default): where `governed_map`'s cost per
   call goes, measured as in part 3 with pieces of the per-call sample taken
   out by replacing the gate's renewal (`Governor._renew`, which records a
   kept permit's sample): not at all, reading the clock only, and recording
   the sample without ever closing a window. Not a usable map: a breakdown.

``--limit`` sets the limit of parts 1 to 3 (100 by default; say ``--limit 1000
--cpu-items 10000`` for a map whose start, a worker per permit, weighs more).

``--baseline OTHER_TREE/src`` (with ``--only cpu``) compares two trees in one run:
this tree's ``src`` and another's (a checkout of the commit before a change) each
run part 3 in a process of their own, and the two processes take turns, one
round each, the first of each pair alternating; each ratio is still taken inside
one process (the contender against the bare pool, same round)::

    python benchmarks/map.py --only cpu --rounds 15 --baseline ../before/src
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import tracemalloc
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import _turns
import aiometer
import anyio

from aiogovernor import Fixed, Governor, WindowConfig, governed_imap, governed_map

LIMIT = 100


async def instant(x: int) -> int:
    return x


async def yields(x: int) -> int:
    # Real I/O always suspends at least once: the honest "trivial coroutine".
    await asyncio.sleep(0)
    return x


work = instant


async def task_per_item(n: int) -> list[int]:
    sem = asyncio.Semaphore(LIMIT)

    async def one(x: int) -> int:
        async with sem:
            return await work(x)

    async with asyncio.TaskGroup() as tg:
        tasks = [tg.create_task(one(x)) for x in range(n)]
    return [t.result() for t in tasks]


async def aiometer_amap(n: int) -> list[int]:
    out: list[int] = []
    async with aiometer.amap(work, range(n), max_at_once=LIMIT) as results:
        async for r in results:
            out.append(r)
    return out


async def fixed_pool(n: int) -> list[int]:
    results: list[int] = [0] * n
    it = iter(range(n))

    async def worker() -> None:
        for x in it:
            results[x] = await work(x)

    async with asyncio.TaskGroup() as tg:
        for _ in range(LIMIT):
            tg.create_task(worker())
    return results


async def gated_pool(n: int) -> list[int]:
    results: list[int] = [0] * n
    it = iter(range(n))
    gov = Governor("bench", Fixed(LIMIT), store=None)

    async def worker() -> None:
        for x in it:
            async with gov:
                results[x] = await work(x)

    async with asyncio.TaskGroup() as tg:
        for _ in range(LIMIT):
            tg.create_task(worker())
    return results


async def governed(n: int) -> list[int]:
    return await governed_map(work, range(n), governor=Governor("bench", Fixed(LIMIT), store=None))


async def governed_no_windows(n: int) -> list[int]:
    # Every call still sampled, but no window closes during the run: what closing windows costs.
    window = WindowConfig(max_samples=10**9, min_duration_s=1e9)
    return await governed_map(
        work, range(n), governor=Governor("bench", Fixed(LIMIT), store=None, window=window)
    )


CONTENDERS: dict[str, Callable[[int], Awaitable[list[int]]]] = {
    "asyncio.Semaphore + TaskGroup (task per item)": task_per_item,
    "aiometer.amap": aiometer_amap,
    "fixed pool of workers (floor)": fixed_pool,
    "fixed pool, each call under the governor": gated_pool,
    "governed_map (Fixed)": governed,
}


def time_one(fn: Callable[[int], Awaitable[list[int]]], n: int) -> float:
    start = time.perf_counter()
    result = asyncio.run(fn(n))
    elapsed = time.perf_counter() - start
    assert len(result) == n and result[-1] == n - 1 and result[n // 2] == n // 2
    return elapsed


def endless() -> Iterator[int]:
    i = 0
    while True:
        yield i
        i += 1


async def stream(n: int) -> int:
    count = 0
    async with governed_imap(
        work, endless(), governor=Governor("bench", Fixed(LIMIT), store=None)
    ) as results:
        async for _ in results:
            count += 1
            if count == n:
                break
    return count


async def gather(n: int) -> int:
    sem = asyncio.Semaphore(LIMIT)

    async def one(x: int) -> int:
        async with sem:
            return await work(x)

    return len(await asyncio.gather(*(one(x) for x in range(n))))


def peak_mb(fn: Callable[[int], Awaitable[int]], n: int) -> float:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    assert asyncio.run(fn(n)) == n
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return (peak - base) / 1e6


async def slow_consumer_governed(limit: int, n: int, sleep_s: float) -> None:
    gov = Governor("bench", Fixed(limit), store=None)
    async with governed_imap(instant, endless(), governor=gov) as results:
        count = 0
        async for _ in results:
            await asyncio.sleep(sleep_s)
            count += 1
            if count == n:
                break


async def slow_consumer_aiometer(limit: int, n: int, sleep_s: float) -> None:
    async with aiometer.amap(instant, range(n), max_at_once=limit) as results:
        async for _ in results:
            await asyncio.sleep(sleep_s)


SLOW = {"governed_imap": slow_consumer_governed, "aiometer.amap": slow_consumer_aiometer}


def cpu_per_item_us(
    fn: Callable[[int, int, float], Coroutine[Any, Any, None]], limit: int, n: int, sleep_s: float
) -> float:
    start = time.process_time()
    asyncio.run(fn(limit, n, sleep_s))
    return (time.process_time() - start) / n * 1e6


def main() -> None:
    global LIMIT
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=LIMIT, help="the limit of parts 1 to 3")
    parser.add_argument("--stream-items", type=int, default=1_000_000)
    parser.add_argument("--gather-items", type=int, default=100_000)
    parser.add_argument("--cpu-items", type=int, default=20_000)
    parser.add_argument("--slow-items", type=int, default=1_000)
    parser.add_argument("--consumer-sleep-s", type=float, default=0.0005)
    parser.add_argument(
        "--only",
        choices=("throughput", "memory", "cpu", "backpressure", "breakdown"),
        help="run one of the parts (breakdown runs only when asked)",
    )
    _turns.add_arguments(parser)
    args = parser.parse_args()
    LIMIT = args.limit
    if args.serve:
        _turns.serve(lambda: cpu_round(args.cpu_items))
        return
    if args.baseline:
        if args.only != "cpu":
            parser.error("--baseline compares part 3 only: say --only cpu")
        compare(args)
        return
    if args.only in (None, "throughput"):
        throughput(args)
    if args.only in (None, "memory"):
        memory(args)
    if args.only in (None, "cpu"):
        cpu_per_call(args)
    if args.only in (None, "backpressure"):
        backpressure(args)
    if args.only == "breakdown":
        breakdown(args)


def throughput(args: argparse.Namespace) -> None:
    global work
    for label, fn_ in (("that never suspend", instant), ("that suspend once (asyncio.sleep(0))", yields)):
        work = fn_
        times: dict[str, list[float]] = {name: [] for name in CONTENDERS}
        for _ in range(args.rounds):
            for name, fn in CONTENDERS.items():
                times[name].append(time_one(fn, args.items))
        med = {name: statistics.median(ts) for name, ts in times.items()}
        ours = med["governed_map (Fixed)"]
        print(f"\n{args.items:,} coroutines {label}, limit {LIMIT}, median of {args.rounds} rounds\n")
        print("| contender | median | worst | its time / governed_map's (median) |")
        print("| --- | --- | --- | --- |")
        for name, m in med.items():
            print(f"| {name} | {m * 1e3:.0f} ms | {max(times[name]) * 1e3:.0f} ms | {m / ours:.2f}× |")
    work = instant


async def anyio_pool(n: int) -> list[int]:
    results: list[int] = [0] * n
    it = iter(range(n))

    async def worker() -> None:
        for x in it:
            results[x] = await work(x)

    async with anyio.create_task_group() as tg:
        for _ in range(LIMIT):
            tg.start_soon(worker)
    return results


CPU_CONTENDERS: dict[str, Callable[[int], Awaitable[list[int]]]] = {
    "fixed pool, each call under the governor": gated_pool,
    "fixed pool started by an anyio task group": anyio_pool,
    "governed_map (Fixed)": governed,
    "governed_map, no window closing during the run": governed_no_windows,
}


def cpu_round(items: int) -> dict[str, float]:
    """One round of part 3: each contender's CPU time over the bare pool's, run just before it."""
    global work
    work = yields
    ratios: dict[str, float] = {}
    try:
        for name, fn in CPU_CONTENDERS.items():
            start = time.process_time()
            asyncio.run(fixed_pool(items))
            floor = time.process_time() - start
            start = time.process_time()
            asyncio.run(fn(items))
            ratios[name] = (time.process_time() - start) / floor
    finally:
        work = instant
    return ratios


def cpu_table(results: dict[str, list[float]]) -> None:
    print("| contender | its CPU time / the bare pool's |")
    print("| --- | --- |")
    for name, rs in results.items():
        print(f"| {name} | {statistics.median(rs):.2f}× ({max(rs):.2f}×) |")


def cpu_title(args: argparse.Namespace) -> str:
    return (
        f"CPU time per call that suspends once, {args.cpu_items:,} calls, limit {LIMIT}: "
        f"relative to the bare pool of {LIMIT} workers, median (worst) of {args.rounds} rounds"
    )


def cpu_per_call(args: argparse.Namespace) -> None:
    ratios: dict[str, list[float]] = {name: [] for name in CPU_CONTENDERS}
    for _ in range(args.rounds):
        for name, ratio in cpu_round(args.cpu_items).items():
            ratios[name].append(ratio)
    print(f"\n{cpu_title(args)}\n")
    cpu_table(ratios)


def compare(args: argparse.Namespace) -> None:
    """Part 3 for this tree and ``--baseline``, in two processes that take turns, one round each."""
    options = ["--cpu-items", str(args.cpu_items), "--limit", str(LIMIT)]
    trees = _turns.take_turns(__file__, options, args.baseline, args.rounds)
    print(f"\n{cpu_title(args)}, the two trees taking turns\n")
    for tree in trees:
        print(f"{tree.name} ({tree.src}):\n")
        cpu_table({c: [r[c] for r in tree.rounds] for c in CPU_CONTENDERS})
        print()


def breakdown(args: argparse.Namespace) -> None:
    global work
    work = yields
    renew = Governor._renew

    def no_sample(self: Governor, permit: Any) -> bool:
        return True

    def clock_only(self: Governor, permit: Any) -> bool:
        permit._start = self._time()
        return True

    def never_closing(self: Governor, permit: Any) -> bool:
        now = self._time()
        lat = self._ok_latencies
        lat.append(now - permit._start)
        if len(lat) >= 1000:
            lat.clear()  # as a window would, without deciding anything
        permit._start = now
        permit._generation = self._generation
        return True

    renewals: dict[str, Callable[..., bool]] = {
        "governed_map as it is": renew,
        "sample recorded, no window ever closed": never_closing,
        "clock read, nothing recorded": clock_only,
        "no sample at all": no_sample,
    }
    scale = "the pool in an anyio task group, no governor (for scale)"
    ratios: dict[str, list[float]] = {name: [] for name in [scale, *renewals]}
    try:
        for _ in range(args.rounds):
            for name in ratios:
                start = time.process_time()
                asyncio.run(fixed_pool(args.cpu_items))
                floor = time.process_time() - start
                start = time.process_time()
                if name in renewals:
                    Governor._renew = renewals[name]  # type: ignore[method-assign]
                    asyncio.run(governed(args.cpu_items))
                else:
                    asyncio.run(anyio_pool(args.cpu_items))
                ratios[name].append((time.process_time() - start) / floor)
    finally:
        Governor._renew = renew  # type: ignore[method-assign]
        work = instant
    print(
        f"\nWhere governed_map's CPU per call goes ({args.cpu_items:,} calls that suspend once, limit "
        f"{LIMIT}): relative to the bare pool, each beside its own bare run, "
        f"median (worst) of {args.rounds}\n"
    )
    print("| governed_map's per-call sample | its CPU time / the bare pool's |")
    print("| --- | --- |")
    for name, rs in ratios.items():
        print(f"| {name} | {statistics.median(rs):.2f}× ({max(rs):.2f}×) |")


def memory(args: argparse.Namespace) -> None:
    global work
    work = yields
    # One small map first: the modules `governed_map` loads on first use (anyio's backend,
    # progress, the lag probe) are the process's, once, not the map's; traced, they added
    # about 0.8 MB to the first map measured.
    asyncio.run(governed(100))
    map_mb = peak_mb(lambda n: _count(governed(n)), args.gather_items)
    pool_mb = peak_mb(lambda n: _count(fixed_pool(n)), args.gather_items)
    work = instant
    stream_mb = peak_mb(stream, args.stream_items)
    gather_mb = peak_mb(gather, args.gather_items)
    print("\nPeak traced memory (tracemalloc)\n")
    print("| contender | items | peak growth |")
    print("| --- | --- | --- |")
    print(f"| governed_imap over a generator | {args.stream_items:,} | {stream_mb:.2f} MB |")
    print(f"| asyncio.gather, a task per item | {args.gather_items:,} | {gather_mb:.1f} MB |")
    print(f"| governed_map, results kept | {args.gather_items:,} | {map_mb:.2f} MB |")
    print(
        f"| fixed pool of {LIMIT} workers into a pre-sized list | {args.gather_items:,} | {pool_mb:.2f} MB |"
    )


async def _count(results: Awaitable[list[int]]) -> int:
    return len(await results)


def backpressure(args: argparse.Namespace) -> None:
    limits = (10, 300, 1000)
    cpu: dict[tuple[str, int], list[float]] = {(name, lim): [] for name in SLOW for lim in limits}
    for _ in range(args.rounds):
        for lim in limits:
            for name, slow in SLOW.items():
                cpu[name, lim].append(cpu_per_item_us(slow, lim, args.slow_items, args.consumer_sleep_s))
    print(
        f"\nA consumer slower than the workers ({args.consumer_sleep_s * 1e3:g} ms per result), "
        f"{args.slow_items:,} results: CPU per item consumed, median (worst) of {args.rounds} rounds\n"
    )
    print("| limit | " + " | ".join(SLOW) + " | governed_imap / aiometer (median) |")
    print("| --- | " + " | ".join("---" for _ in SLOW) + " | --- |")
    for lim in limits:
        cells = [f"{statistics.median(cpu[name, lim]):.0f} µs ({max(cpu[name, lim]):.0f})" for name in SLOW]
        ratio = statistics.median(cpu["governed_imap", lim]) / statistics.median(cpu["aiometer.amap", lim])
        print(f"| {lim} | " + " | ".join(cells) + f" | {ratio:.2f}× |")


if __name__ == "__main__":
    main()
