"""The httpx transport against a server that answers 429 with Retry-After.

    .venv/bin/python examples/retry_after.py

The upstream answers in 20 ms, as fast at 6 requests at once as at 1, and refuses every
request past 6 at once with ``429 Too Many Requests`` and ``Retry-After: 1``: a wall with no
warning. `GovernedTransport` holds a permit per request, reads each 429 as an
overload (the limit falls) and each Retry-After as a pause (no new request starts until then),
and with a `Retry` policy sends refused requests again after the pause: every request ends
answered, and the limit settles under the wall.
"""

from __future__ import annotations

import asyncio

import httpx

from aiogovernor import Governor, Retry
from aiogovernor.httpx import GovernedTransport
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig


async def main(upstream: LocalUpstream) -> None:
    gov = Governor("search-api", store=None)  # store=None: the example leaves no state behind
    transport = GovernedTransport(gov, retry=Retry(attempts=5))
    async with httpx.AsyncClient(transport=transport, base_url=upstream.url) as client:
        responses = await asyncio.gather(*(client.get("/work") for _ in range(300)))
    codes = [r.status_code for r in responses]
    stats = gov.stats()
    print(f"300 requests: {codes.count(200)} answered 200 in the end, {codes.count(429)} still refused")
    print(f"the server refused {upstream.state.rejected} attempts with 429 along the way")
    print(f"limit {stats.limit}; outcomes {dict(stats.counts)}")


if __name__ == "__main__":
    config = UpstreamConfig(capacity=64, service_time_s=0.02, max_inflight=6, retry_after="1")
    with LocalUpstream(config) as upstream:
        asyncio.run(main(upstream))
