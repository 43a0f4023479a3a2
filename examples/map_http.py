"""Fan out over 400 URLs with `governed_map`, against a real local HTTP upstream.

    .venv/bin/python examples/map_http.py

`governed_map` runs a pool of workers under the governor (never a task per item) and returns
the results in input order. The upstream serves 8 requests at once in 20 ms and slows down past
that; the governor's limit settles near it, and the run takes about as long as it would at the
best fixed concurrency, without anyone having to know it.
"""

from __future__ import annotations

import asyncio
import time

import httpx

from aiogovernor import Governor, governed_map
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig


async def main(url: str) -> None:
    gov = Governor("catalogue", store=None)  # store=None: the example leaves no state behind
    async with httpx.AsyncClient(base_url=url) as client:

        async def fetch(item: int) -> int:
            response = await client.get("/work", params={"item": item})
            response.raise_for_status()
            return item

        started = time.perf_counter()
        results = await governed_map(fetch, range(400), governor=gov)
        elapsed = time.perf_counter() - started
    assert results == list(range(400))  # in input order
    print(f"400 items in {elapsed:.1f} s ({400 / elapsed:.0f}/s), results in input order")
    print(f"limit {gov.limit} after {gov.stats().decision_count} decisions")


if __name__ == "__main__":
    with LocalUpstream(UpstreamConfig(capacity=8, service_time_s=0.02)) as upstream:
        asyncio.run(main(upstream.url))
