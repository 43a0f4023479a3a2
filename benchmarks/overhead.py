"""The gate's cost: ``async with gov:`` against asyncio.Semaphore and anyio.CapacityLimiter.

Side by side in one run, interleaved rounds, medians; prints ratios to asyncio.Semaphore.

    .venv/bin/python benchmarks/overhead.py [--ops 200000] [--rounds 7]

Uncontended: one task enters and leaves the gate ``--ops`` times (the permit is always free).
Contended hand-off: 1 000 tasks, limit 10, each enters, yields once to the loop, and leaves,
``--handoff-rounds`` times: every release hands the permit to a waiter.
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


async def measure(name_to_run: dict[str, Callable[[], Awaitable[float]]], rounds: int) -> dict[str, float]:
    samples: dict[str, list[float]] = {name: [] for name in name_to_run}
    for _ in range(rounds):
        for name, run in name_to_run.items():  # interleaved: noise hits every contender alike
            samples[name].append(await run())
    return {name: statistics.median(values) for name, values in samples.items()}


def table(title: str, medians: dict[str, float]) -> str:
    base = medians["asyncio.Semaphore"]
    lines = [
        f"### {title}",
        "",
        "| gate | median per op | ratio to asyncio.Semaphore |",
        "| --- | ---: | ---: |",
    ]
    for name, value in medians.items():
        lines.append(f"| {name} | {value * 1e9:.0f} ns | {value / base:.2f}x |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    plain = await measure(
        {name: (lambda f=f: uncontended(f(10), args.ops)) for name, f in CONTENDERS.items()}, args.rounds
    )
    print(table(f"Uncontended `async with` ({args.ops} ops, median of {args.rounds} rounds)", plain))
    print()
    handoff = await measure(
        {name: (lambda f=f: contended(f(10), 1000, args.handoff_rounds)) for name, f in CONTENDERS.items()},
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
    asyncio.run(main(parser.parse_args()))
