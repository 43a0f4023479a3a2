"""`ShardedTransport`: httpx's connections spread over small pools, so a response's cost stays flat.

httpcore's connection pool, on every request and every response, walks all its
connections and, for each idle one, builds a list of all of them again: the
client's CPU per response grows with the square of the pool's size. On one
core that is about 1 ms per response up to 16 connections and 5-9 ms at 64,
and it feeds itself: when the client's loop lags, responses finish before
the callers waiting for a permit can send their next request, so more
connections sit idle at once, each response costs more, and the loop lags
further. A client that once went past its ceiling can stay collapsed at a
concurrency it handled well before (docs/control.md has the measurements).

Several pools of a few connections each cost what one small pool costs, per
response, whatever the concurrency. This module imports httpx; only the httpx
integration imports it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence

import httpcore
import httpx

from ._validate import check_int

__all__ = ["ShardedTransport"]


def _connection_pool(transport: httpx.AsyncBaseTransport) -> httpcore.AsyncConnectionPool | None:
    """httpx's own transport's httpcore pool (httpx's private ``_pool``), or None for any other."""
    if isinstance(transport, httpx.AsyncHTTPTransport):
        pool = getattr(transport, "_pool", None)
        if isinstance(pool, httpcore.AsyncConnectionPool):
            return pool
    return None


def _pool_size(transport: httpx.AsyncBaseTransport) -> int | None:
    """The most connections the transport's pool opens, when it can be read (httpx's own transport).

    None for a pool that speaks HTTP/2 only (``http2=True, http1=False``): one
    connection there carries many requests as streams, so the number of
    connections bounds nothing, and a request beyond a connection's stream
    limit waits inside that connection, never in the pool.
    """
    if isinstance(transport, httpx.AsyncHTTPTransport):
        pool = transport._pool
        if getattr(pool, "_http2", False) and not getattr(pool, "_http1", True):
            return None
        size = getattr(pool, "_max_connections", None)
        return size if isinstance(size, int) else None
    return None


class ShardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that spreads requests over several small connection pools ("shards").

    Each shard is a transport of its own (by default `httpx.AsyncHTTPTransport`
    with a pool of ``shard_connections``). A request goes to the first shard
    with an idle connection, else to the first with fewer than
    ``shard_connections`` requests in flight (which opens one), so that
    connections are reused before new ones are opened (a server that counts
    open connections, idle ones included, sees no more than the requests in
    flight need) and the first shards stay busy. A new shard is made only when
    every shard is full, and a shard's request counts as in flight until its
    response is closed. (Idle connections are seen in httpx's own transport;
    a factory's other transports are filled in order.) Shards are kept until
    `aclose`; their idle connections close as httpx's keep-alive expiry (or
    `GovernedTransport`'s trimming) closes them.

    Why: httpcore's pool costs the client CPU per response that grows with
    the square of its number of connections (quadratic bookkeeping on every
    request and response), and past a few dozen connections a client that
    falls behind collapses into that cost and stays there. Shards of 8 keep
    the cost of a pool of 8 at any concurrency. `GovernedTransport` uses
    this transport by default; pass one yourself to choose the shards'
    transport (TLS settings, proxies, HTTP/2, ...).

    There is no bound on the number of shards: the concurrency is bounded by
    whoever sends the requests (a governor). Used without one, this
    transport opens as many connections as there are requests in flight.

    Args:
        transport_factory: Makes one shard's transport; called once now
            (the first shard) and again each time every shard is full. None
            makes ``httpx.AsyncHTTPTransport`` with a pool of
            ``shard_connections``, every shard with the same TLS context
            (`httpx.create_ssl_context`, made once). A factory of your own
            should share one context too: making one costs ~20 ms of CPU,
            spent on the event loop each time a shard is added. A
            factory's transport whose pool is smaller than
            ``shard_connections`` is refused (`ValueError`): requests would
            queue in it.
        shard_connections: The most requests in flight on one shard, so
            about the most connections its pool opens (default 8).

    Raises:
        ValueError: ``shard_connections`` below 1, or a factory's transport
            with a smaller pool.
        TypeError: The factory returned something other than an httpx async
            transport.
    """

    def __init__(
        self,
        transport_factory: Callable[[], httpx.AsyncBaseTransport] | None = None,
        *,
        shard_connections: int = 8,
    ) -> None:
        size = check_int("shard_connections", shard_connections, low=1)
        if transport_factory is None:
            # One TLS context for every shard: making one (loading the CA bundle) takes
            # ~20 ms of CPU, which would stall the event loop each time the concurrency
            # passes a multiple of ``shard_connections`` and read as a latency rise.
            tls = httpx.create_ssl_context()

            def transport_factory() -> httpx.AsyncBaseTransport:
                return httpx.AsyncHTTPTransport(
                    verify=tls, limits=httpx.Limits(max_connections=size, max_keepalive_connections=size)
                )

        self._factory = transport_factory
        self._size = size
        self._shards: list[httpx.AsyncBaseTransport] = []
        self._pools: list[httpcore.AsyncConnectionPool | None] = []
        self._inflight: list[int] = []
        self._closed = False
        self._add_shard()  # the first one now, so a factory that is wrong fails here

    @property
    def shard_connections(self) -> int:
        """The most requests in flight on one shard."""
        return self._size

    @property
    def shards(self) -> Sequence[httpx.AsyncBaseTransport]:
        """The shards made so far, in the order requests fill them (a copy)."""
        return tuple(self._shards)

    @property
    def inflight(self) -> int:
        """Requests sent through this transport whose responses are not closed yet."""
        return sum(self._inflight)

    def _add_shard(self) -> int:
        shard = self._factory()
        if not isinstance(shard, httpx.AsyncBaseTransport):
            raise TypeError(f"transport_factory must return an httpx.AsyncBaseTransport, got {shard!r}")
        pool_size = _pool_size(shard)
        if pool_size is not None and pool_size < self._size:
            raise ValueError(
                f"transport_factory's transport pools {pool_size} connections, fewer than "
                f"shard_connections ({self._size}): requests would queue in its pool; pass "
                f"limits=httpx.Limits(max_connections={self._size}) or a smaller shard_connections"
            )
        self._shards.append(shard)
        self._pools.append(_connection_pool(shard))
        self._inflight.append(0)
        return len(self._shards) - 1

    def _choose(self) -> int:
        size, pools = self._size, self._pools
        room = -1
        for index, inflight in enumerate(self._inflight):
            if inflight < size:
                pool = pools[index]
                # More open connections than requests in flight: one is idle. (A closed one
                # stays listed until the pool's next pass.) Unknown: fill the shards in order.
                if pool is None or sum(not c.is_closed() for c in pool.connections) > inflight:
                    return index
                if room < 0:
                    room = index
        return room if room >= 0 else self._add_shard()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send the request on the first shard with room; it counts there until its response is closed."""
        if self._closed:
            raise RuntimeError("this ShardedTransport is closed")
        index = self._choose()
        self._inflight[index] += 1
        try:
            response = await self._shards[index].handle_async_request(request)
        except BaseException:
            self._inflight[index] -= 1
            raise
        response.stream = _ShardStream(response.stream, self, index)  # type: ignore[arg-type]
        return response

    def _done(self, index: int) -> None:
        self._inflight[index] -= 1

    async def aclose(self) -> None:
        """Close every shard (all of them, even when one fails to close; the first failure is raised)."""
        self._closed = True
        failure: Exception | None = None
        for shard in self._shards:
            try:
                await shard.aclose()
            except Exception as exc:  # the others still get closed
                failure = failure or exc
        if failure is not None:
            raise failure

    def __repr__(self) -> str:
        shards, size = len(self._shards), self._size
        return f"ShardedTransport(shards={shards}, shard_connections={size}, inflight={self.inflight})"


class _ShardStream(httpx.AsyncByteStream):
    """A response body that frees its place on its shard when it is closed (once)."""

    def __init__(self, inner: httpx.AsyncByteStream, owner: ShardedTransport, index: int) -> None:
        self._inner = inner
        self._owner: ShardedTransport | None = owner
        self._index = index

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            yield chunk

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            owner, self._owner = self._owner, None
            if owner is not None:
                owner._done(self._index)
