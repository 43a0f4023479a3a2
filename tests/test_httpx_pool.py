"""GovernedTransport keeps its connection pool near the governor's limit.

A real local upstream (uvicorn in a thread) and the default transport's pools: requests
held open at once each take a connection; once the limit falls, the idle
connections beyond it (and a little slack) are closed as responses come back,
and while the limit holds, connections are reused, not churned.
Real time (a real server), asyncio.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AsyncExitStack

import httpcore
import httpx
import pytest

from aiogovernor import Governor
from aiogovernor.httpx import GovernedTransport, ShardedTransport
from aiogovernor.limits import Adjustment, BoundedPolicy, Window
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real time: a real server


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalUpstream]:
    # Each request takes 50 ms, so requests sent together are in flight together.
    with LocalUpstream(UpstreamConfig(capacity=32, service_time_s=0.05)) as up:
        yield up


def _open(transport: GovernedTransport) -> list[httpcore.AsyncConnectionInterface]:
    """The open connections of the default transport's shards (pools of 8), all together."""
    inner = transport.transport
    assert isinstance(inner, ShardedTransport)
    pools = []
    for shard in inner.shards:
        assert isinstance(shard, httpx.AsyncHTTPTransport)
        pools.append(shard._pool)
    return [c for pool in pools for c in pool.connections if not c.is_closed()]


class _Manual(BoundedPolicy):
    """A limit that moves only when the test resets it."""

    name = "manual"

    def update(self, window: Window) -> Adjustment:
        return self._hold("manual")


def _governor(limit: int) -> Governor:
    return Governor("pool", _Manual(min_limit=1, max_limit=32, initial_limit=limit), store=None)


async def _together(client: httpx.AsyncClient, url: str, n: int) -> None:
    responses = await asyncio.gather(*(client.get(url) for _ in range(n)))
    assert [r.status_code for r in responses] == [200] * n


async def test_idle_connections_beyond_the_limit_are_closed(upstream: LocalUpstream) -> None:
    gov = _governor(12)
    transport = GovernedTransport(gov)
    async with httpx.AsyncClient(transport=transport) as client:
        await _together(client, f"{upstream.url}/work", 12)
        assert len(_open(transport)) == 12  # one connection per request in flight

        gov.reset_limit(4, reason="test: the upstream shrank")
        await _together(client, f"{upstream.url}/work", 2)
        # The limit (4) plus the slack (2) stay open; the other idle ones are closed.
        assert len(_open(transport)) == 6
        assert (await client.get(f"{upstream.url}/work")).status_code == 200
        assert len(_open(transport)) == 6


async def test_connections_are_reused_while_the_limit_holds(upstream: LocalUpstream) -> None:
    gov = _governor(8)
    transport = GovernedTransport(gov)
    async with httpx.AsyncClient(transport=transport) as client:
        await _together(client, f"{upstream.url}/work", 8)
        first = {id(c) for c in _open(transport)}
        await _together(client, f"{upstream.url}/work", 8)
        assert {id(c) for c in _open(transport)} == first
    assert gov.inflight == 0


async def test_per_host_keeps_the_sum_of_the_origins_limits(upstream: LocalUpstream) -> None:
    transport = GovernedTransport(_governor(6), per_host=True)
    # Two origins (two names for one server), each with its own governor, sharing one pool.
    other = upstream.url.replace("127.0.0.1", "localhost")
    async with httpx.AsyncClient(transport=transport) as client:
        await asyncio.gather(
            _together(client, f"{upstream.url}/work", 6), _together(client, f"{other}/work", 6)
        )
        assert len(_open(transport)) == 12  # limits 6 + 6 with a slack of 3: nothing closed
        transport.governor_for(upstream.url).reset_limit(1, reason="test")
        await _together(client, f"{upstream.url}/work", 1)
        # Limits 1 + 6 = 7, slack 2: nine stay open.
        assert len(_open(transport)) == 9


async def test_a_transport_without_a_visible_pool_is_left_alone(upstream: LocalUpstream) -> None:
    class Wrapper(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            return await self.inner.handle_async_request(request)

        async def aclose(self) -> None:
            await self.inner.aclose()

    gov = _governor(8)
    wrapper = Wrapper()
    async with httpx.AsyncClient(transport=GovernedTransport(gov, transport=wrapper)) as client:
        await _together(client, f"{upstream.url}/work", 8)
        gov.reset_limit(1, reason="test")
        await _together(client, f"{upstream.url}/work", 1)
        assert len([c for c in wrapper.inner._pool.connections if not c.is_closed()]) == 8


async def test_the_default_transport_keeps_each_pool_at_8_and_trims_the_last_shards_first(
    upstream: LocalUpstream,
) -> None:
    gov = _governor(20)
    transport = GovernedTransport(gov)
    sharded = transport.transport
    assert isinstance(sharded, ShardedTransport)

    def per_shard() -> list[int]:
        counts = []
        for shard in sharded.shards:
            assert isinstance(shard, httpx.AsyncHTTPTransport)
            counts.append(sum(1 for c in shard._pool.connections if not c.is_closed()))
        return counts

    async with httpx.AsyncClient(transport=transport) as client:
        await _together(client, f"{upstream.url}/work", 20)
        assert per_shard() == [8, 8, 4]  # httpcore's cost per response is that of a pool of 8
        gov.reset_limit(6, reason="test: the upstream shrank")
        await _together(client, f"{upstream.url}/work", 6)
        # The limit (6) plus the slack (2) stay open, in the shards requests fill first.
        assert per_shard() == [8, 0, 0]
    assert sharded.inflight == 0


async def test_a_shard_with_an_idle_connection_is_chosen_before_one_would_open_a_connection(
    upstream: LocalUpstream,
) -> None:
    # Shards of 2, no governor: four streamed responses held open fill shards 0 and 1.
    sharded = ShardedTransport(shard_connections=2)

    def pool(index: int) -> list[httpcore.AsyncConnectionInterface]:
        shard = sharded.shards[index]
        assert isinstance(shard, httpx.AsyncHTTPTransport)
        return [c for c in shard._pool.connections if not c.is_closed()]

    async with httpx.AsyncClient(transport=sharded) as client, AsyncExitStack() as stack:
        url = f"{upstream.url}/work"
        held = [await stack.enter_async_context(client.stream("GET", url)) for _ in range(4)]
        assert [len(pool(0)), len(pool(1))] == [2, 2]
        # Shard 1's two responses close: two idle connections there. One of shard 0's closes
        # too, and its connection is lost (as a server's 503 closes one): shard 0 has room,
        # and no idle connection.
        for response in [held[2], held[3], held[1]]:
            await response.aread()  # read whole, so that its connection is kept for reuse
            await response.aclose()
        [idle] = [c for c in pool(0) if c.is_idle()]
        await idle.aclose()
        assert [len(pool(0)), len(pool(1))] == [1, 2]
        # The next request reuses an idle connection of shard 1 instead of opening one in shard 0,
        # so no more connections are open than requests in flight need.
        async with client.stream("GET", f"{upstream.url}/work"):
            assert [len(pool(0)), len(pool(1))] == [1, 2]
            assert sharded.inflight == 2
