"""Cost against size: what grows with the number of governors, items or waiters, and how fast.

Sections (run one, or all by default):

- ``state``: the default store's save and load cost with 10, 10², 10³, 10⁴ other
  governors in the environment, the store before (one JSON file per environment,
  rewritten whole per save; reimplemented minimally below) against the store now
  (one SQLite file per environment, one record per governor), interleaved,
  median and worst of the rounds; the time 1 000 governors take to load their
  state at once; then the CPU share and the shared thread pool taken by 1 000
  governors saving every 5 s.

- ``waiters``: hand-off per permit and cancellation per waiter with 10² … 10⁵
  callers queued, the governor beside ``asyncio.Semaphore``.
- ``limit``: raising the limit with N waiters (`Governor.reset_limit`) beside
  N ``Semaphore.release()`` calls.
- ``governors``: building one (beside a Semaphore, with and without the default
  store, a per-host origin's copy of the policy as it is made now and as it was made
  before, and the default policy alone), then the ``memory`` section.
- ``memory``: memory per governor (100 of them) after 0, 100 and 300 decisions, without a
  store, with the same decisions also kept whole, with a `MemoryStore` and with the default
  store (no event loop runs: nothing is saved); the history alone, with and without the
  loop's lag and call sizes in its windows; the default policy's latency baseline after 10
  and 200 windows.
- ``decisions``: one decision's cost against its window's size, and the share of
  a core a governor takes at 10⁵ requests/s with the default and a short window.
- ``map``: `governed_map` beside a task per item, aiometer and a bare pool, by
  items (10² … 10⁵) and by limit (10, 100, 1 000).
- ``lag``: the loop-lag probe's share of a core, its timer callbacks and its
  readings per second with 1, 10, 100 and 1 000 busy governors on one loop
  (``--seconds`` each, probe on and off interleaved).

    .venv/bin/python benchmarks/scale.py [state|waiters|limit|governors|memory|decisions|map|lag ...] \
        [--rounds 5] [--seconds 5] [--max-size 100000] [--decisions 0,100,300] [--governors 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import _scale_core
import _scale_lag
import anyio
import anyio.to_thread

from aiogovernor.state import JsonFileStore, LearnedState

SIZES = (10, 100, 1_000, 10_000)


# -- the store before: one JSON file per environment, rewritten whole per save ----------


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class WholeFileStore:
    """The JSON store as it was: each save reads, parses, sorts and rewrites (indent=2) the file."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, environment: str) -> Path:
        return self.directory / f"{environment}.json"

    def _governors(self, environment: str) -> dict[str, Any]:
        try:
            doc = json.loads(self._path(environment).read_bytes())
        except FileNotFoundError:
            return {}
        governors: dict[str, Any] = doc["governors"]
        return governors

    def fill(self, environment: str, entries: dict[str, Any]) -> None:
        self._write(environment, entries)

    def save_sync(self, environment: str, name: str, entry: dict[str, Any]) -> None:
        with _locked(self.directory / f".{environment}.lock"):
            governors = self._governors(environment)
            governors[name] = entry
            self._write(environment, governors)

    def _write(self, environment: str, governors: dict[str, Any]) -> None:
        doc = {
            "format": "aiogovernor-state",
            "schema_version": 1,
            "environment": environment,
            "governors": dict(sorted(governors.items())),
        }
        data = json.dumps(doc, indent=2, allow_nan=False).encode() + b"\n"
        fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=f".{environment}.json.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self._path(environment))
        dir_fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load_sync(self, environment: str, name: str) -> LearnedState | None:
        states = {n: LearnedState.from_json(e) for n, e in self._governors(environment).items()}
        return states.get(name)


# -- the store now, through the same two calls ------------------------------------------


class RecordStore:
    """`JsonFileStore`'s blocking work (what its worker thread runs), through the calls above."""

    def __init__(self, directory: Path) -> None:
        self.store = JsonFileStore(directory)

    def fill(self, environment: str, entries: dict[str, Any]) -> None:
        for name, entry in entries.items():
            self.store._save_sync(environment, name, json.dumps(entry))

    def save_sync(self, environment: str, name: str, entry: dict[str, Any]) -> None:
        self.store._save_sync(environment, name, json.dumps(entry))

    def load_sync(self, environment: str, name: str) -> LearnedState | None:
        return self.store._load_sync(environment, name)


def _entry(i: int) -> dict[str, Any]:
    return LearnedState(
        limit=4.0 + i % 50, policy="aimd", updated_at=time.time(), sample_count=i, latency_floor_s=0.04
    ).to_json()


def _median_call_us(call: Callable[[int], object], calls: int) -> float:
    times = []
    for n in range(calls):
        t0 = time.perf_counter()
        call(n)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def bench_calls(rounds: int) -> None:
    with tempfile.TemporaryDirectory() as before_dir, tempfile.TemporaryDirectory() as after_dir:
        stores: dict[str, Any] = {
            "before": WholeFileStore(Path(before_dir)),
            "now": RecordStore(Path(after_dir)),
        }
        for size in SIZES:
            entries = {f"gov-{i}": _entry(i) for i in range(size)}
            for store in stores.values():
                store.fill(f"env{size}", entries)
        entry = _entry(7)
        # (store, op, size) -> per-round medians, in microseconds
        results: dict[tuple[str, str, int], list[float]] = {}
        for _ in range(rounds):
            for size in SIZES:  # interleaved: the machine's noise falls on every cell alike
                calls = max(3, min(200, 20_000 // size))
                for label, store in stores.items():
                    env = f"env{size}"
                    names = [f"gov-{n % size}" for n in range(calls)]
                    save = _median_call_us(
                        lambda n, s=store, e=env, g=names: s.save_sync(e, g[n], entry), calls
                    )
                    load = _median_call_us(lambda n, s=store, e=env, g=names: s.load_sync(e, g[n]), calls)
                    results.setdefault((label, "save", size), []).append(save)
                    results.setdefault((label, "load", size), []).append(load)
    print(f"Store calls: blocking work per call, median of {rounds} interleaved rounds (worst), µs\n")
    print("| governors in the environment | " + " | ".join(f"{n:,}" for n in SIZES) + " | growth 10 → 10⁴ |")
    print("| --- | " + " | ".join("---:" for _ in SIZES) + " | ---: |")
    for label in stores:
        for op in ("save", "load"):
            cells = []
            for size in SIZES:
                values = results[(label, op, size)]
                cells.append(f"{statistics.median(values):,.0f} ({max(values):,.0f})")
            growth = statistics.median(results[(label, op, SIZES[-1])]) / statistics.median(
                results[(label, op, SIZES[0])]
            )
            print(f"| {op}, {label} | " + " | ".join(cells) + f" | {growth:.1f}x |")
    print()


async def _fleet(
    store_factory: Callable[[Path], Any], directory: Path, governors: int, seconds: float
) -> dict[str, float]:
    """``governors`` governors, each saving every 5 s, for ``seconds``: CPU share and threads taken."""
    store = store_factory(directory)
    entries = {f"gov-{i}": _entry(i) for i in range(governors)}
    store.fill("fleet", entries)
    rng = random.Random(1)
    done = 0
    default_pool = anyio.to_thread.current_default_thread_limiter()
    peak_default = 0

    async def governor(name: str) -> None:
        nonlocal done
        await anyio.sleep(rng.uniform(0, 5.0))
        while True:
            if isinstance(store, RecordStore):
                await store.store.save("fleet", name, LearnedState.from_json(entries[name]))
            else:
                await anyio.to_thread.run_sync(store.save_sync, "fleet", name, entries[name])
            done += 1
            await anyio.sleep(5.0)

    window: dict[str, float] = {}

    async def watch(scope: anyio.CancelScope) -> None:
        nonlocal peak_default
        await anyio.sleep(1.0)  # every governor has started (their first saves are spread over 5 s)
        window.update(cpu=time.process_time(), wall=time.perf_counter(), done=done)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            peak_default = max(peak_default, int(default_pool.borrowed_tokens))
            await anyio.sleep(0.01)
        window.update(
            cpu=time.process_time() - window["cpu"],
            wall=time.perf_counter() - window["wall"],
            done=done - window["done"],
        )
        scope.cancel()

    async with anyio.create_task_group() as tg:
        for name in entries:
            tg.start_soon(governor, name)
        tg.start_soon(watch, tg.cancel_scope)
    cpu, wall = window["cpu"], window["wall"]
    return {
        "cpu_share": cpu / wall,
        "saves_per_s": window["done"] / wall,
        "asked_per_s": governors / 5.0,
        "peak_default_threads": peak_default,
    }


def bench_fleet(seconds: float, rounds: int) -> None:
    governors = 1_000
    factories: dict[str, Callable[[Path], Any]] = {"before": WholeFileStore, "now": RecordStore}
    results: dict[str, list[dict[str, float]]] = {k: [] for k in factories}
    for _ in range(rounds):
        for label, factory in factories.items():
            with tempfile.TemporaryDirectory() as d:
                results[label].append(asyncio.run(_fleet(factory, Path(d), governors, seconds)))
    print(f"{governors:,} governors saving every 5 s, {seconds:g} s measured per run, {rounds} runs:")
    print("median (worst)\n")
    print("| store | CPU share of one core | saves per s (asked: 200) | anyio default-pool threads, peak |")
    print("| --- | ---: | ---: | ---: |")
    for label, runs in results.items():
        cpu = [r["cpu_share"] for r in runs]
        rate = [r["saves_per_s"] for r in runs]
        threads = [r["peak_default_threads"] for r in runs]
        print(
            f"| {label} | {statistics.median(cpu):.1%} ({max(cpu):.1%}) | "
            f"{statistics.median(rate):.0f} ({min(rate):.0f}) | "
            f"{statistics.median(threads):.0f} ({max(threads):.0f}) |"
        )
    print()


async def _start(store_factory: Callable[[Path], Any], directory: Path, governors: int) -> float:
    """Seconds for ``governors`` governors of one environment to load their state at once."""
    store = store_factory(directory)
    store.fill("start", {f"gov-{i}": _entry(i) for i in range(governors)})

    async def load(name: str) -> None:
        if isinstance(store, RecordStore):
            await store.store.load("start", name)
        else:
            await anyio.to_thread.run_sync(store.load_sync, "start", name)

    t0 = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for i in range(governors):
            tg.start_soon(load, f"gov-{i}")
    return time.perf_counter() - t0


def bench_start(governors: int) -> None:
    print(f"{governors:,} governors of one environment loading their state at once (first acquires), s\n")
    print("| store | seconds |")
    print("| --- | ---: |")
    for label, factory in (("before", WholeFileStore), ("now", RecordStore)):
        with tempfile.TemporaryDirectory() as d:
            seconds = asyncio.run(_start(factory, Path(d), governors))
        print(f"| {label} | {seconds:.2f} |")
    print()


CORE_SECTIONS: dict[str, Callable[[int, tuple[int, ...]], None]] = {
    "waiters": _scale_core.bench_waiters,
    "limit": _scale_core.bench_limit,
    "governors": _scale_core.bench_governors,
    "memory": _scale_core.bench_memory,
    "decisions": _scale_core.bench_decisions,
    "map": _scale_core.bench_map,
}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sections = ["state", *CORE_SECTIONS, "lag"]
    parser.add_argument("sections", nargs="*", choices=sections, default=sections)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--max-size", type=int, default=100_000, help="largest N of the core sections")
    parser.add_argument(
        "--decisions", default="0,100,300", help="memory: decisions per governor, by row (comma-separated)"
    )
    parser.add_argument("--governors", type=int, default=100, help="memory: governors measured at once")
    args = parser.parse_args()
    _scale_core.MEMORY_DECISIONS = tuple(int(n) for n in args.decisions.split(","))
    _scale_core.MEMORY_GOVERNORS = args.governors
    if "state" in args.sections:
        bench_calls(args.rounds)
        bench_start(1_000)
        bench_fleet(args.seconds, max(1, args.rounds // 2))
    sizes = tuple(n for n in _scale_core.SIZES if n <= args.max_size)
    for name, bench in CORE_SECTIONS.items():
        if name in args.sections:
            bench(args.rounds, sizes)
    if "lag" in args.sections:
        _scale_lag.bench_lag(args.rounds, min(args.seconds, 2.0))


if __name__ == "__main__":
    main()
