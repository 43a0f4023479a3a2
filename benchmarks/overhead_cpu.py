"""The uncontended gate in CPU time: ``async with gov:`` against asyncio.Semaphore, one process.

`overhead.py` measures wall time, which a busy machine's scheduling stretches; this counts the
thread's CPU time only, so that two trees (say, before and after a change to the gate) can be
compared on a shared machine. Interleaved rounds, one ratio per round; prints the median,
worst and best ratio to asyncio.Semaphore.

    .venv/bin/python benchmarks/overhead_cpu.py [--ops 100000] [--rounds 15] [--contended]

To compare two trees, run it on each in alternating processes (``PYTHONPATH=<tree>/src``);
a tree whose ``_governor.py`` was compiled with mypyc is measured the same way.
``--contended`` adds a hand-off ratio: 200 tasks through a limit of 10, each entering
20 times and yielding once to the loop inside.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiogovernor import Fixed, Governor, _governor


async def per_op(gate: AbstractAsyncContextManager[Any], ops: int) -> float:
    start = time.thread_time()
    for _ in range(ops):
        async with gate:
            pass
    return (time.thread_time() - start) / ops


async def contended(gate: AbstractAsyncContextManager[Any], tasks: int = 200, entries: int = 20) -> float:
    async def worker() -> None:
        for _ in range(entries):
            async with gate:
                await asyncio.sleep(0)

    start = time.thread_time()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    return (time.thread_time() - start) / (tasks * entries)


async def main(args: argparse.Namespace) -> None:
    ratios = []
    handoff = []
    for _ in range(args.rounds):
        semaphore = await per_op(asyncio.Semaphore(10), args.ops)
        governor = await per_op(Governor("bench", Fixed(10), store=None), args.ops)
        ratios.append(governor / semaphore)
        if args.contended:
            semaphore = await contended(asyncio.Semaphore(10))
            governor = await contended(Governor("bench", Fixed(10), store=None))
            handoff.append(governor / semaphore)
    compiled = " (compiled _governor)" if _governor.__file__.endswith((".so", ".pyd")) else ""
    print(
        f"Governor(Fixed){compiled} / asyncio.Semaphore, uncontended, CPU time: median "
        f"{statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x, best {min(ratios):.2f}x "
        f"({args.rounds} rounds of {args.ops} ops)"
    )
    if handoff:
        print(
            f"Governor(Fixed){compiled} / asyncio.Semaphore, contended hand-off, CPU time: median "
            f"{statistics.median(handoff):.2f}x, worst {max(handoff):.2f}x, best {min(handoff):.2f}x"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--contended", action="store_true")
    asyncio.run(main(parser.parse_args()))
