"""The three ways in, against a simulated upstream, in virtual time (runs in about a second).

    .venv/bin/python examples/quickstart.py

The upstream serves 8 requests at once in 50 ms and slows down past that (its knee): nobody
told the governor, which finds it from the latency it measures.
"""

from __future__ import annotations

import asyncio

from aiogovernor import Governor, governed_map
from aiogovernor.sim import KneeUpstream, run_virtual


async def main() -> None:
    upstream = KneeUpstream(capacity=8, service_time_s=0.05, seed=1)
    # store=None: an example should not leave learned state behind; a service would keep it.
    gov = Governor("quickstart", store=None)

    # 1. A service guards each call with a permit.
    async def handle_request() -> None:
        async with gov:
            await upstream()

    await asyncio.gather(*(handle_request() for _ in range(100)))
    print(f"after 100 guarded calls: limit {gov.limit}")

    # 2. Fan out over many items: a pool of workers under the same governor, results in order.
    #    governed_map takes the permit for each call; an OverloadError raised by the call
    #    counts as overload (and its retry_after_s pauses the governor).
    async def fetch(i: int) -> int:
        await upstream()
        return i * i

    squares = await governed_map(fetch, range(2000), governor=gov)
    loop = asyncio.get_running_loop()
    print(f"mapped {len(squares)} items by t={loop.time():.1f}s (simulated); limit {gov.limit}")

    # What it decided, and why.
    stats = gov.stats()
    print(f"outcomes {dict(stats.counts)}")
    if stats.last_decision is not None:
        print(f"last decision: {stats.last_decision.describe()}")

    # 3. With httpx, the same governor plugs in as a transport:
    #    httpx.AsyncClient(transport=aiogovernor.httpx.GovernedTransport(gov))


if __name__ == "__main__":
    run_virtual(main())
