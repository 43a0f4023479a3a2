"""GovernedTransport over real HTTP/2: multiplexing, the governor's limit, streaming, Retry-After.

A starlette app served by hypercorn over cleartext HTTP/2 (h2c with prior
knowledge) in a background thread, on a free loopback port. The client speaks
HTTP/2 only (``httpx.AsyncHTTPTransport(http2=True, http1=False)``), so every
request is a stream of one connection. The app counts the requests it serves at
once and remembers the peak: the governor's limit is checked where it matters,
on the server. Real time (a real server), asyncio.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import cast

import httpx
import pytest
from hypercorn.asyncio import serve
from hypercorn.config import Config
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from aiogovernor import Fixed, Governor, Retry
from aiogovernor.httpx import GovernedTransport

pytestmark = pytest.mark.anyio

CHUNK = b"x" * 1024
CHUNKS = 20


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real time: a real server


@dataclass
class _Seen:
    """What the server saw; touched only by the server's event loop while requests run."""

    inflight: int = 0
    peak: int = 0
    served: int = 0
    clients: set[tuple[str, int]] = field(default_factory=set)  # one per TCP connection
    versions: set[str] = field(default_factory=set)

    def reset(self) -> None:
        self.inflight = self.peak = self.served = 0
        self.clients.clear()
        self.versions.clear()

    def enter(self, request: Request) -> None:
        self.inflight += 1
        self.peak = max(self.peak, self.inflight)
        self.served += 1
        assert request.client is not None
        self.clients.add((request.client.host, request.client.port))
        self.versions.add(request.scope["http_version"])


def _app(seen: _Seen) -> Starlette:
    async def ping(request: Request) -> Response:
        return PlainTextResponse("pong")

    async def work(request: Request) -> Response:
        seen.enter(request)
        try:
            await asyncio.sleep(float(request.query_params.get("s", "0.03")))
        finally:
            seen.inflight -= 1
        return PlainTextResponse("done")

    async def stream(request: Request) -> Response:
        seen.enter(request)

        async def body() -> AsyncIterator[bytes]:
            try:
                for _ in range(CHUNKS):
                    yield CHUNK
                    await asyncio.sleep(0.005)
            finally:
                seen.inflight -= 1

        return StreamingResponse(body())

    async def busy(request: Request) -> Response:
        seen.enter(request)
        seen.inflight -= 1
        return PlainTextResponse("slow down", status_code=429, headers={"Retry-After": "0.3"})

    routes = [Route("/ping", ping), Route("/work", work), Route("/stream", stream), Route("/busy", busy)]
    return Starlette(routes=routes)


class _H2Server:
    """hypercorn serving the app over h2c in a thread, on a free loopback port."""

    def __init__(self, max_streams: int = 100) -> None:
        self.max_streams = max_streams
        self.seen = _Seen()
        self.url = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

    def __enter__(self) -> _H2Server:
        # Bound and listening before the server starts: connecting can never be refused,
        # so readiness is one request that waits in the backlog until hypercorn serves it.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.bind(("127.0.0.1", 0))
        sock.listen(128)
        host, port = sock.getsockname()
        self.url = f"http://{host}:{port}"
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # hypercorn owns (and closes) the socket
        config.graceful_timeout = 2.0
        config.h2_max_concurrent_streams = self.max_streams
        self._thread = threading.Thread(
            target=self._run, args=(config,), name="aiogovernor-h2-upstream", daemon=True
        )
        self._thread.start()
        try:
            with httpx.Client(transport=httpx.HTTPTransport(http2=True, http1=False), timeout=10) as client:
                response = client.get(f"{self.url}/ping")
            assert response.http_version == "HTTP/2", response.http_version
        except BaseException:
            self.__exit__(None, None, None)
            raise RuntimeError(f"the HTTP/2 upstream did not start: {self._error!r}") from None
        return self

    def _run(self, config: Config) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            # starlette's ASGI types and hypercorn's describe the same interface differently.
            app = cast("ASGIFramework", _app(self.seen))
            await serve(app, config, shutdown_trigger=self._stop.wait)

        try:
            asyncio.run(main())
        except BaseException as exc:  # reported by __enter__ if it kills the server
            self._error = exc

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed already
                loop.call_soon_threadsafe(stop.set)
        if self._thread is not None:
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "the HTTP/2 upstream did not stop"


@pytest.fixture(scope="module")
def h2_server() -> Iterator[_H2Server]:
    with _H2Server() as server:
        yield server


@pytest.fixture
def server(h2_server: _H2Server) -> _H2Server:
    h2_server.seen.reset()
    return h2_server


def _h2_transport(gov: Governor, limits: httpx.Limits | None = None) -> GovernedTransport:
    """A governed transport that speaks HTTP/2 only: h2c with prior knowledge on http:// URLs."""
    if limits is None:
        return GovernedTransport(gov, transport=httpx.AsyncHTTPTransport(http2=True, http1=False))
    return GovernedTransport(gov, transport=httpx.AsyncHTTPTransport(http2=True, http1=False, limits=limits))


async def test_concurrent_requests_share_one_http2_connection_within_the_governors_limit(
    server: _H2Server,
) -> None:
    gov = Governor("h2", Fixed(8))
    async with httpx.AsyncClient(transport=_h2_transport(gov), base_url=server.url, timeout=10) as client:
        responses = await asyncio.gather(*(client.get("/work") for _ in range(48)))
    assert [r.status_code for r in responses] == [200] * 48
    assert {r.http_version for r in responses} == {"HTTP/2"}
    seen = server.seen
    assert seen.versions == {"2"}
    assert len(seen.clients) == 1  # multiplexed: one TCP connection carried every request
    assert seen.served == 48
    assert seen.peak == 8  # the governor, not the connection, set how many ran at once
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 48


async def test_streamed_responses_hold_their_permits_until_closed(server: _H2Server) -> None:
    gov = Governor("h2", Fixed(8))
    async with (
        httpx.AsyncClient(transport=_h2_transport(gov), base_url=server.url, timeout=10) as client,
        contextlib.AsyncExitStack() as stack,
    ):
        streams = await asyncio.gather(
            *(stack.enter_async_context(client.stream("GET", "/stream")) for _ in range(5))
        )
        assert {r.http_version for r in streams} == {"HTTP/2"}
        assert gov.inflight == 5  # headers are in, no body read: every permit is held

        for response in streams[:2]:
            await response.aclose()  # closed unread: the stream is reset, the permit comes back
        assert gov.inflight == 3
        bodies = await asyncio.gather(*(response.aread() for response in streams[2:]))
        assert bodies == [CHUNK * CHUNKS] * 3
        assert gov.inflight == 0

        again = await client.get("/work", params={"s": "0"})  # the reset streams left the connection usable
        assert again.status_code == 200
    assert len(server.seen.clients) == 1
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 6


async def test_a_429_with_retry_after_over_http2_is_overload_and_pauses_the_governor(
    server: _H2Server,
) -> None:
    gov = Governor("h2", Fixed(4))
    transport = GovernedTransport(
        gov,
        transport=httpx.AsyncHTTPTransport(http2=True, http1=False),
        retry=Retry(attempts=1, retry_after_jitter=0.1),
        seed=3,
    )
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=10) as client:
        refused = await client.get("/busy")
        assert refused.status_code == 429
        assert refused.http_version == "HTTP/2"
        assert gov.stats().counts["overload"] == 1
        paused = gov.paused_for_s()
        assert 0.2 < paused <= 0.3 * 1.1
        start = time.monotonic()
        response = await client.get("/work", params={"s": "0"})  # waits out the pause
        waited = time.monotonic() - start
    assert response.status_code == 200
    assert waited >= paused - 0.05
    assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 1


async def test_an_http2_only_pool_of_one_connection_is_no_bound_on_the_governor(server: _H2Server) -> None:
    # One connection carries every stream: the pool's size does not bound concurrency, so
    # it earns no PoolTimeout warning (warnings are errors here), and no request waits in
    # the pool long enough to hit a pool timeout of 50 ms while each takes 100 ms.
    gov = Governor("h2", Fixed(16))
    transport = _h2_transport(gov, limits=httpx.Limits(max_connections=1))
    timeout = httpx.Timeout(10, pool=0.05)
    async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=timeout) as client:
        responses = await asyncio.gather(*(client.get("/work", params={"s": "0.1"}) for _ in range(32)))
    assert [r.status_code for r in responses] == [200] * 32
    assert len(server.seen.clients) == 1
    assert server.seen.peak == 16
    assert gov.inflight == 0


@pytest.fixture
def narrow_server() -> Iterator[_H2Server]:
    """A server that allows 4 concurrent streams per connection."""
    with _H2Server(max_streams=4) as server:
        yield server


async def test_the_servers_stream_limit_queues_the_rest_inside_the_connection(
    narrow_server: _H2Server,
) -> None:
    # A connection runs at most the server's SETTINGS_MAX_CONCURRENT_STREAMS at once, and
    # httpcore opens no second one: the rest wait for a stream, holding their permits, and
    # still never in the pool (a 10 ms pool timeout is never hit).
    gov = Governor("h2", Fixed(8))
    timeout = httpx.Timeout(10, pool=0.01)
    url = narrow_server.url
    async with httpx.AsyncClient(transport=_h2_transport(gov), base_url=url, timeout=timeout) as client:
        responses = await asyncio.gather(*(client.get("/work", params={"s": "0.05"}) for _ in range(16)))
    assert [r.status_code for r in responses] == [200] * 16
    assert len(narrow_server.seen.clients) == 1
    assert narrow_server.seen.peak == 4
    assert gov.inflight == 0


def test_only_a_pool_that_may_speak_http1_is_warned_about() -> None:
    GovernedTransport(Governor("t"), transport=httpx.AsyncHTTPTransport(http2=True, http1=False))
    both = httpx.AsyncHTTPTransport(http2=True, limits=httpx.Limits(max_connections=4))
    with pytest.warns(RuntimeWarning, match="PoolTimeout"):  # it may fall back to HTTP/1.1
        GovernedTransport(Governor("t", Fixed(8)), transport=both)
