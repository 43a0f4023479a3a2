"""On-demand worker processes: started when jobs arrive, reaped when idle.

Run it: ``python examples/workers.py``. The job function lives at module
level and the work starts under ``if __name__ == "__main__":``, as for
`multiprocessing`: each worker process imports this module to find it.
"""

from __future__ import annotations

import asyncio
import math

from aiogovernor.workers import WorkerPool, WorkerType


def slow_square(n: int) -> int:
    """CPU work standing in for a real job (an image to resize, a model to score)."""
    math.factorial(2000)
    return n * n


async def main() -> None:
    squares = WorkerType(
        "square",
        fn=slow_square,
        max_workers=2,  # at most two worker processes (default: the CPU count)
        idle_timeout_s=5.0,  # an idle worker exits after 5 s
        max_jobs_per_worker=20,  # and is replaced after 20 jobs
    )
    async with WorkerPool(squares) as pool:
        one = await pool.run("square", 12)
        many = await pool.map("square", range(50))
        status = pool.status()["square"]
        print("one:", one)
        print("squares:", many[:5], "...", many[-1])
        print(f"workers started: {status.spawned}, jobs done: {status.jobs_done}")
        for event in pool.events[:4]:
            print("event:", event.describe())
    # Leaving the block waited for every job and stopped every worker.


if __name__ == "__main__":
    asyncio.run(main())
