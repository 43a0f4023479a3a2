"""A service guards each call to its upstream with a governor (`async with gov:`).

    .venv/bin/python examples/service.py

The upstream (a real HTTP server on loopback, in a thread) serves 8 requests at once in 20 ms
and queues the rest, so its latency rises past 8. The service receives 600 requests, 60 at a
time; each handler takes a permit around its upstream call. Nobody told the governor the
upstream's capacity: it finds it from the latency it measures, and the handlers queue in the
service (cheap) instead of at the upstream (where they would slow everyone).
"""

from __future__ import annotations

import asyncio

import httpx

from aiogovernor import Governor
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig


async def serve(upstream: LocalUpstream) -> None:
    # store=None: an example leaves no learned state behind; a real service keeps it (the default).
    gov = Governor("inventory-api", store=None)
    async with httpx.AsyncClient(base_url=upstream.url) as client:

        async def handle(request_id: int) -> int:
            async with gov:  # a permit: its latency and outcome become a sample
                response = await client.get("/work", params={"id": request_id})
            return response.status_code

        arrivals = asyncio.Semaphore(60)  # the service's own callers: 60 requests in flight

        async def arrive(request_id: int) -> int:
            async with arrivals:
                return await handle(request_id)

        codes = await asyncio.gather(*(arrive(i) for i in range(600)))
    stats = gov.stats()
    print(f"600 requests, {codes.count(200)} answered 200")
    print(f"the upstream saw at most {upstream.state.peak_inflight} at once (its capacity: 8)")
    print(f"limit {stats.limit}, p50 latency {1000 * (stats.latency_p50_s or 0):.0f} ms; last decisions:")
    for decision in gov.decisions[-3:]:
        print("  ", decision.describe())


if __name__ == "__main__":
    with LocalUpstream(UpstreamConfig(capacity=8, service_time_s=0.02)) as upstream:
        asyncio.run(serve(upstream))
