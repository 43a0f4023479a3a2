"""Costs that grow only with the work: cancelling a queued waiter is O(1), whatever the queue's length.

A shape test, not a speed test: it compares the gate with itself at two sizes, in
CPU time (so a busy machine's scheduling does not count), best of a few tries.
"""

from __future__ import annotations

import asyncio
import gc
import time

from aiogovernor import Fixed, Governor
from aiogovernor.sim import run_virtual


def cancel_cost_per_waiter(waiters: int) -> float:
    """CPU seconds per cancellation of a queued waiter, the newest first (the far end of the queue)."""

    async def main() -> float:
        gov = Governor("scale", Fixed(1), store=None)
        held = await gov.acquire()

        async def wait() -> None:
            async with gov:
                pass

        tasks = [asyncio.create_task(wait()) for _ in range(waiters)]
        await asyncio.sleep(0)  # every task queues
        assert gov.waiting == waiters
        gc.disable()  # a collection's cost grows with the heap, not with the queue
        try:
            start = time.thread_time()
            for task in reversed(tasks):
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            spent = time.thread_time() - start
        finally:
            gc.enable()
        assert gov.waiting == 0
        held.release()
        assert gov.inflight == 0
        return spent / waiters

    return run_virtual(main())


def test_cancelling_a_queued_waiter_costs_the_same_in_a_long_queue() -> None:
    small = min(cancel_cost_per_waiter(2_000) for _ in range(3))
    large = min(cancel_cost_per_waiter(20_000) for _ in range(2))
    # Searching the queue for each cancelled waiter made this about 10x (and 43 s of blocked
    # loop to cancel half of 10**5 waiters).
    assert large < 3 * small, (large, small)
