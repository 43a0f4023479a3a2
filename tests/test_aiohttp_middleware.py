"""The aiohttp middleware against the local upstream (and a streaming server): a permit per request,
held until the body is read, released or closed."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator

import aiohttp
import pytest
from aiohttp import web

from aiogovernor import Fixed, Governor, Outcome, Retry
from aiogovernor.aiohttp import GovernedMiddleware, classify_aiohttp
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig


@pytest.fixture(scope="module")
def upstream() -> Iterator[LocalUpstream]:
    with LocalUpstream(UpstreamConfig(capacity=8, service_time_s=0.0, seed=3)) as up:
        yield up


@pytest.fixture
def reset(upstream: LocalUpstream) -> Iterator[LocalUpstream]:
    yield upstream
    upstream.config.max_inflight = None
    upstream.config.failure_rate = 0.0
    upstream.config.service_time_s = 0.0
    upstream.config.retry_after = "1"


def run(gov: Governor, body: Callable[[aiohttp.ClientSession], Awaitable[None]], **kwargs: object) -> None:
    async def main() -> None:
        async with aiohttp.ClientSession(middlewares=(GovernedMiddleware(gov, **kwargs),)) as s:  # type: ignore[arg-type]
            await body(s)

    asyncio.run(main())


def test_exceptions_are_classified_like_every_client() -> None:
    assert classify_aiohttp(TimeoutError()) is Outcome.OVERLOAD
    assert classify_aiohttp(aiohttp.ServerTimeoutError()) is Outcome.OVERLOAD
    assert classify_aiohttp(ValueError()) is Outcome.ERROR


def test_a_request_takes_and_returns_one_permit(reset: LocalUpstream) -> None:
    gov = Governor("a", Fixed(4), store=None)

    async def body(s: aiohttp.ClientSession) -> None:
        async with s.get(f"{reset.url}/work") as r:
            assert r.status == 200
            assert await r.text() == "ok"
        assert gov.inflight == 0

    run(gov, body)
    assert gov.stats().counts["ok"] == 1


@pytest.mark.parametrize(
    ("config", "status", "outcome"),
    [({"max_inflight": 0, "retry_after": "30"}, 429, "overload"), ({"failure_rate": 1.0}, 500, "error")],
)
def test_statuses_are_classified_and_retry_after_pauses(
    reset: LocalUpstream, config: dict[str, object], status: int, outcome: str
) -> None:
    for k, v in config.items():
        setattr(reset.config, k, v)
    gov = Governor("a", Fixed(4), store=None, max_pause_s=60)

    async def body(s: aiohttp.ClientSession) -> None:
        async with s.get(f"{reset.url}/work") as r:
            assert r.status == status
        # Read inside the loop: a pause is measured on the loop's clock.
        assert gov.stats().counts[outcome] == 1
        assert (gov.paused_for_s() > 25) == (status == 429)

    run(gov, body)


def test_retry_sends_again(reset: LocalUpstream) -> None:
    reset.config.max_inflight = 0
    reset.config.retry_after = "0"
    gov = Governor("a", Fixed(4), store=None)

    async def body(s: aiohttp.ClientSession) -> None:
        async with s.get(f"{reset.url}/work") as r:
            assert r.status == 429

    run(gov, body, retry=Retry(attempts=3, base_delay_s=0.0))
    assert gov.stats().counts["overload"] == 3
    assert gov.inflight == 0


def test_a_timeout_is_overload(reset: LocalUpstream) -> None:
    reset.config.service_time_s = 1.0
    gov = Governor("a", Fixed(4), store=None)

    async def body(s: aiohttp.ClientSession) -> None:
        with pytest.raises(asyncio.TimeoutError):
            await s.get(f"{reset.url}/work", timeout=aiohttp.ClientTimeout(total=0.05))

    run(gov, body)
    assert gov.inflight == 0
    assert gov.stats().counts["overload"] == 1


def test_a_streamed_body_holds_the_permit_until_read_or_released() -> None:
    async def main() -> None:
        gates = [asyncio.Event() for _ in range(2)]
        served = iter(gates)

        async def slow(request: web.Request) -> web.StreamResponse:
            gate = next(served)
            resp = web.StreamResponse()
            await resp.prepare(request)
            await resp.write(b"x" * 1024)
            await gate.wait()
            await resp.write(b"y" * 1024)
            await resp.write_eof()
            return resp

        app = web.Application()
        app.router.add_get("/slow", slow)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        url = f"http://127.0.0.1:{port}/slow"
        gov = Governor("a", Fixed(4), store=None)
        try:
            async with aiohttp.ClientSession(middlewares=(GovernedMiddleware(gov),)) as s:
                r = await s.get(url)
                assert gov.inflight == 1  # headers in, body not
                gates[0].set()
                assert len(await r.read()) == 2048
                assert gov.inflight == 0
                r = await s.get(url)
                assert gov.inflight == 1
                r.release()
                assert gov.inflight == 0
        finally:
            for gate in gates:
                gate.set()
            await runner.cleanup()
        assert gov.stats().counts["ok"] == 2

    asyncio.run(main())


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(TypeError, match=r"aiogovernor\.Governor"):
        GovernedMiddleware(object())  # type: ignore[arg-type]
