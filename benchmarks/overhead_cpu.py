"""The uncontended gate in CPU time: ``async with gov:`` against asyncio.Semaphore, one process.

`overhead.py` measures wall time, which a busy machine's scheduling stretches; this counts the
thread's CPU time only, so that two trees (say, before and after a change to the gate) can be
compared on a shared machine. Interleaved rounds, one ratio per round; prints the median,
worst and best ratio to asyncio.Semaphore.

    .venv/bin/python benchmarks/overhead_cpu.py [--ops 100000] [--rounds 15]

To compare two trees, run it on each in alternating processes (``PYTHONPATH=<tree>/src``).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from contextlib import AbstractAsyncContextManager
from typing import Any

from aiogovernor import Fixed, Governor


async def per_op(gate: AbstractAsyncContextManager[Any], ops: int) -> float:
    start = time.thread_time()
    for _ in range(ops):
        async with gate:
            pass
    return (time.thread_time() - start) / ops


async def main(args: argparse.Namespace) -> None:
    ratios = []
    for _ in range(args.rounds):
        semaphore = await per_op(asyncio.Semaphore(10), args.ops)
        governor = await per_op(Governor("bench", Fixed(10), store=None), args.ops)
        ratios.append(governor / semaphore)
    print(
        f"Governor(Fixed) / asyncio.Semaphore, uncontended, CPU time: median "
        f"{statistics.median(ratios):.2f}x, worst {max(ratios):.2f}x, best {min(ratios):.2f}x "
        f"({args.rounds} rounds of {args.ops} ops)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ops", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=15)
    asyncio.run(main(parser.parse_args()))
