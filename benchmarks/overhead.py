"""The gate's cost: ``async with gov:`` against asyncio.Semaphore and anyio.CapacityLimiter.

Side by side in one run, interleaved rounds, medians and worst; prints ratios to asyncio.Semaphore.

    .venv/bin/python benchmarks/overhead.py [--ops 200000] [--rounds 7] [--metrics]

Uncontended: one task enters and leaves the gate ``--ops`` times (the permit is always free).
Contended hand-off: 1 000 tasks, limit 10, each enters, yields once to the loop, and leaves,
``--handoff-rounds`` times: every release hands the permit to a waiter.

``--metrics`` adds a governor watched by each metrics exporter (the ``otel`` and
``prometheus`` extras, and opentelemetry-sdk): the exporter is made before the governor
and closed after its run, so the plain governors of the same round are not watched.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import anyio

from aiogovernor import AIMD, Fixed, Governor

Factory = Callable[[int], AbstractAsyncContextManager[Any]]

# Closes what a factory opened for one run (an exporter), once the run is over.
_after_run: list[Callable[[], None]] = []

CONTENDERS: dict[str, Factory] = {
    "asyncio.Semaphore": lambda n: asyncio.Semaphore(n),
    "Governor(Fixed)": lambda n: Governor("bench", Fixed(n), store=None),
    "Governor(AIMD)": lambda n: Governor(
        "bench", AIMD(initial_limit=n, min_limit=n, max_limit=n), store=None
    ),
    "anyio.CapacityLimiter": lambda n: anyio.CapacityLimiter(n),
}


async def uncontended(gate: AbstractAsyncContextManager[Any], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        async with gate:
            pass
    return (time.perf_counter() - start) / ops


async def contended(gate: AbstractAsyncContextManager[Any], tasks: int, rounds: int) -> float:
    async def worker() -> None:
        for _ in range(rounds):
            async with gate:
                await asyncio.sleep(0)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.perf_counter() - start) / (tasks * rounds)


def metrics_contenders() -> dict[str, Factory]:
    """Governors watched by an exporter (made before the governor, closed after its run)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from prometheus_client import CollectorRegistry

    from aiogovernor.metrics.otel import GovernorInstruments
    from aiogovernor.metrics.prometheus import GovernorCollector

    def aimd(n: int) -> Governor:
        return Governor("bench", AIMD(initial_limit=n, min_limit=n, max_limit=n), store=None)

    def with_otel(n: int) -> Governor:
        reader = InMemoryMetricReader()
        provider = MeterProvider(metric_readers=[reader])
        instruments = GovernorInstruments(provider)
        gov = aimd(n)
        reader.get_metrics_data()  # the SDK's first collection sets up its storage: not timed

        def close() -> None:
            # The latencies windows left are recorded when the SDK collects, off the
            # event loop: timed apart, per window, to show what a collection costs.
            windows = len(instruments._pending)
            start = time.perf_counter()
            reader.get_metrics_data()
            if windows:
                COLLECT_PER_WINDOW.append((time.perf_counter() - start) / windows)
            instruments.close()
            provider.shutdown()

        _after_run.append(close)
        return gov

    def with_prometheus(n: int) -> Governor:
        registry = CollectorRegistry()
        collector = GovernorCollector()
        registry.register(collector)
        gov = aimd(n)

        def close() -> None:
            registry.unregister(collector)
            collector.close()

        _after_run.append(close)
        return gov

    return {"Governor(AIMD) + OTel": with_otel, "Governor(AIMD) + Prometheus": with_prometheus}


COLLECT_PER_WINDOW: list[float] = []


async def measure(
    name_to_run: dict[str, Callable[[], Awaitable[float]]], rounds: int
) -> dict[str, tuple[float, float]]:
    samples: dict[str, list[float]] = {name: [] for name in name_to_run}
    order = list(name_to_run)
    for i in range(rounds):
        # Interleaved, so that noise hits every contender alike, and each round starts one
        # contender later, so that none always runs right after the same neighbour.
        for name in order[i % len(order) :] + order[: i % len(order)]:
            samples[name].append(await name_to_run[name]())
            while _after_run:
                _after_run.pop()()
    return {name: (statistics.median(values), max(values)) for name, values in samples.items()}


def table(title: str, figures: dict[str, tuple[float, float]]) -> str:
    base, base_worst = figures["asyncio.Semaphore"]
    lines = [
        f"### {title}",
        "",
        "| gate | median per op | ratio | worst per op | ratio |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, (median, worst) in figures.items():
        lines.append(
            f"| {name} | {median * 1e9:.0f} ns | {median / base:.2f}x "
            f"| {worst * 1e9:.0f} ns | {worst / base_worst:.2f}x |"
        )
    return "\n".join(lines)


def per_window(size: int, rounds: int) -> str:
    """What each exporter's window listener costs for one closed window of ``size`` samples."""
    import random

    from opentelemetry.sdk.metrics import MeterProvider

    from aiogovernor.metrics._histogram import DEFAULT_LATENCY_BUCKETS_S, _Buckets
    from aiogovernor.metrics.otel import GovernorInstruments

    instruments = GovernorInstruments(MeterProvider())
    gov = Governor("bench-window", store=None)
    latencies = sorted(random.lognormvariate(-4, 0.5) for _ in range(size))
    window = gov.stats().last_window  # the listeners here do not read it
    work: dict[str, Callable[[], object]] = {
        "copy of the sorted latencies (the core, once per window)": lambda: latencies[:],
        "Prometheus: fold into the buckets": lambda: _Buckets(DEFAULT_LATENCY_BUCKETS_S).fold(
            window,  # type: ignore[arg-type]
            latencies,
        ),
        "OTel: keep 16 order statistics": lambda: instruments._make_listener(gov)(
            window,  # type: ignore[arg-type]
            latencies,
        ),
    }
    lines = [f"### One window of {size} samples: what watching it costs (median of {rounds} x 200)", ""]
    for name, run in work.items():
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(200):
                run()
            times.append((time.perf_counter() - start) / 200)
            instruments._pending.clear()
        m = statistics.median(times)
        lines.append(f"- {name}: {m * 1e6:.1f} µs per window, {m / size * 1e9:.1f} ns per sample")
    instruments.close()
    return "\n".join(lines)


def registration(count: int, rounds: int) -> str:
    """What registering a governor costs (a WeakSet add) against making one."""
    from aiogovernor import _registry

    class Stand:  # a fresh, weakly referenceable object: registering a new governor costs the same
        pass

    made: list[float] = []
    registered: list[float] = []
    for _ in range(rounds):
        start = time.perf_counter()
        keep = [Governor("bench", store=None) for _ in range(count)]
        made.append((time.perf_counter() - start) / count)
        stands = [Stand() for _ in range(count)]
        start = time.perf_counter()
        for stand in stands:
            _registry.register(stand)  # type: ignore[arg-type]
        registered.append((time.perf_counter() - start) / count)
        del keep, stands
    m, r = statistics.median(made), statistics.median(registered)
    return (
        f"### Registering a governor ({count} per round, median of {rounds} rounds)\n\n"
        f"`Governor(...)` {m * 1e6:.2f} µs (worst {max(made) * 1e6:.2f} µs); of which registering "
        f"{r * 1e9:.0f} ns (worst {max(registered) * 1e9:.0f} ns), {r / m:.1%} of it."
    )


async def main(args: argparse.Namespace) -> None:
    contenders = dict(CONTENDERS)
    if args.metrics:
        contenders.update(metrics_contenders())
    plain = await measure(
        {name: (lambda f=f: uncontended(f(10), args.ops)) for name, f in contenders.items()}, args.rounds
    )
    print(table(f"Uncontended `async with` ({args.ops} ops, median of {args.rounds} rounds)", plain))
    print()
    handoff = await measure(
        {name: (lambda f=f: contended(f(10), 1000, args.handoff_rounds)) for name, f in contenders.items()},
        args.rounds,
    )
    print(
        table(
            f"Contended hand-off (1000 tasks, limit 10, {args.handoff_rounds} entries each, "
            f"median of {args.rounds} rounds)",
            handoff,
        )
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--handoff-rounds", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--metrics", action="store_true", help="add governors watched by each exporter")
    arguments = parser.parse_args()
    asyncio.run(main(arguments))
    if arguments.metrics:
        print()
        if COLLECT_PER_WINDOW:
            print(
                f"OTel: recording a window's latencies at collection costs "
                f"{statistics.median(COLLECT_PER_WINDOW) * 1e6:.0f} µs per window (median; worst "
                f"{max(COLLECT_PER_WINDOW) * 1e6:.0f} µs), on the collecting thread."
            )
        print()
        print(per_window(1000, arguments.rounds))
        print()
        print(registration(2000, arguments.rounds))
