"""ShardedTransport: requests fill small pools in order, and each frees its place when its response closes.

Shards here are `httpx.MockTransport`s, so where each request went is read
from the shard that answered it; streamed responses held open keep their
places. Virtual time, asyncio and trio (see conftest).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import anyio
import httpx
import pytest

from aiogovernor import Governor
from aiogovernor.httpx import GovernedTransport, ShardedTransport
from aiogovernor.limits import Fixed

pytestmark = pytest.mark.anyio


class _Shards:
    """A factory of mock shards; each answers with its own index in a header."""

    def __init__(self) -> None:
        self.made: list[httpx.MockTransport] = []
        self.closed: list[int] = []

    def __call__(self) -> httpx.AsyncBaseTransport:
        index = len(self.made)

        def answer(request: httpx.Request) -> httpx.Response:
            if request.url.path == "/fail":
                raise httpx.ConnectError("refused", request=request)
            return httpx.Response(200, headers={"x-shard": str(index)}, stream=_Body())

        shard = _ClosingMock(answer, on_close=lambda: self.closed.append(index))
        self.made.append(shard)
        return shard


class _Body(httpx.AsyncByteStream):
    """A body read as it streams (not one in memory, which a response would read at once)."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b"ok"


class _ClosingMock(httpx.MockTransport):
    def __init__(self, handler: httpx._transports.mock.SyncHandler, on_close: object) -> None:
        super().__init__(handler)
        self._on_close = on_close

    async def aclose(self) -> None:
        assert callable(self._on_close)
        self._on_close()


async def _hold(stack: AsyncExitStack, client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    """Open n streamed responses and keep them open (each keeps its place on its shard)."""
    return [await stack.enter_async_context(client.stream("GET", "http://up/")) for _ in range(n)]


def _shard(response: httpx.Response) -> int:
    return int(response.headers["x-shard"])


async def test_requests_fill_the_first_shard_with_room() -> None:
    factory = _Shards()
    transport = ShardedTransport(factory, shard_connections=2)
    assert len(transport.shards) == 1  # the first shard is made at once
    async with httpx.AsyncClient(transport=transport) as client:
        async with AsyncExitStack() as stack:
            held = await _hold(stack, client, 5)
            assert [_shard(r) for r in held] == [0, 0, 1, 1, 2]
            assert len(transport.shards) == 3
            assert transport.inflight == 5
            await held[1].aclose()  # a place on shard 0 is free again: the next request takes it
            assert transport.inflight == 4
            [again] = await _hold(stack, client, 1)
            assert _shard(again) == 0
            [next_one] = await _hold(stack, client, 1)
            assert _shard(next_one) == 2
        assert transport.inflight == 0
        # Everything closed: the first shard takes the next request, and no shard is added.
        response = await client.get("http://up/")
        assert _shard(response) == 0
        assert len(transport.shards) == 3


async def test_a_response_closed_twice_frees_its_place_once() -> None:
    transport = ShardedTransport(_Shards(), shard_connections=2)
    async with httpx.AsyncClient(transport=transport) as client, AsyncExitStack() as stack:
        first, _ = await _hold(stack, client, 2)
        await first.aclose()
        await first.aclose()
        assert transport.inflight == 1
        [third] = await _hold(stack, client, 1)
        assert _shard(third) == 0 and transport.inflight == 2


async def test_a_failed_request_frees_its_place() -> None:
    transport = ShardedTransport(_Shards(), shard_connections=1)
    async with httpx.AsyncClient(transport=transport) as client:
        for _ in range(3):
            with pytest.raises(httpx.ConnectError):
                await client.get("http://up/fail")
        assert transport.inflight == 0
        assert len(transport.shards) == 1
        assert _shard(await client.get("http://up/")) == 0


async def test_a_cancelled_request_frees_its_place() -> None:
    started = anyio.Event()

    class Slow(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            started.set()
            await anyio.sleep(60)
            raise AssertionError("not reached")

    transport = ShardedTransport(Slow, shard_connections=1)
    async with httpx.AsyncClient(transport=transport) as client:
        async with anyio.create_task_group() as tg:
            tg.start_soon(client.get, "http://up/")
            await started.wait()
            assert transport.inflight == 1
            tg.cancel_scope.cancel()
        assert transport.inflight == 0
        assert len(transport.shards) == 1


async def test_aclose_closes_every_shard_even_when_one_fails() -> None:
    factory = _Shards()
    transport = ShardedTransport(factory, shard_connections=1)
    async with httpx.AsyncClient(transport=transport) as client, AsyncExitStack() as stack:
        await _hold(stack, client, 3)

    class Broken(Exception):
        pass

    async def fail() -> None:
        factory.closed.append(-1)
        raise Broken("socket already gone")

    factory.made[1].aclose = fail  # type: ignore[method-assign]
    factory.closed.clear()
    with pytest.raises(Broken):
        await transport.aclose()
    assert factory.closed == [0, -1, 2]
    with pytest.raises(RuntimeError, match="closed"):
        await transport.handle_async_request(httpx.Request("GET", "http://up/"))


def test_bad_configuration_is_refused() -> None:
    with pytest.raises(ValueError, match="shard_connections"):
        ShardedTransport(shard_connections=0)
    with pytest.raises(TypeError, match="AsyncBaseTransport"):
        ShardedTransport(lambda: object())  # type: ignore[arg-type, return-value]
    small = httpx.Limits(max_connections=4)
    with pytest.raises(ValueError, match="pools 4 connections, fewer than shard_connections"):
        ShardedTransport(lambda: httpx.AsyncHTTPTransport(limits=small))
    # A pool at least as large as a shard is fine; so is an HTTP/2-only one, whose connections carry streams.
    ShardedTransport(lambda: httpx.AsyncHTTPTransport(limits=small), shard_connections=4)
    ShardedTransport(lambda: httpx.AsyncHTTPTransport(http2=True, http1=False, limits=small))


def test_the_default_shard_is_httpx_own_transport_with_a_pool_of_shard_connections() -> None:
    transport = ShardedTransport(shard_connections=5)
    [shard] = transport.shards
    assert isinstance(shard, httpx.AsyncHTTPTransport)
    assert shard._pool._max_connections == 5
    assert transport.shard_connections == 5
    assert repr(transport) == "ShardedTransport(shards=1, shard_connections=5, inflight=0)"


def test_the_default_shards_share_one_tls_context() -> None:
    # Making a TLS context costs ~20 ms of CPU: one per shard would stall the event loop
    # each time the concurrency passes a multiple of shard_connections.
    transport = ShardedTransport(shard_connections=2)
    transport._add_shard()
    transport._add_shard()
    contexts = set()
    for shard in transport.shards:
        assert isinstance(shard, httpx.AsyncHTTPTransport)
        contexts.add(id(shard._pool._ssl_context))
    assert len(transport.shards) == 3 and len(contexts) == 1


async def test_governed_transport_uses_shards_by_default_and_passes_permits_through_them() -> None:
    assert isinstance(GovernedTransport(Governor("g", Fixed(4), store=None)).transport, ShardedTransport)
    gov = Governor("g", Fixed(3), store=None)
    shards = ShardedTransport(_Shards(), shard_connections=2)
    async with httpx.AsyncClient(transport=GovernedTransport(gov, transport=shards)) as client:
        async with AsyncExitStack() as stack:
            held = await _hold(stack, client, 3)
            assert [_shard(r) for r in held] == [0, 0, 1]
            assert gov.inflight == 3 and shards.inflight == 3
        assert gov.inflight == 0 and shards.inflight == 0
