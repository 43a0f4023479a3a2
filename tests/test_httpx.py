"""GovernedTransport: classification, permit lifetime, Retry-After, per-host, retries, secrets.

Scripted upstreams (httpx.MockTransport, respx) in virtual time, on asyncio and trio.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import anyio
import httpx
import pytest
import respx

from aiogovernor import Fixed, Governor, Outcome, Retry, WindowConfig
from aiogovernor.httpx import GovernedTransport, HTTPAttempts, classify_http, origin_of, retry_after_s
from aiogovernor.testing import wait_until

pytestmark = pytest.mark.anyio


class _Body(httpx.AsyncByteStream):
    """A body that streams: the response is not read before the transport returns it."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b"x" * 1000


def _client(handler: httpx.MockTransport | GovernedTransport) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=handler)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.OK),
        (204, Outcome.OK),
        (301, Outcome.OK),
        (400, Outcome.IGNORED),
        (404, Outcome.IGNORED),
        (422, Outcome.IGNORED),
        (429, Outcome.OVERLOAD),
        (500, Outcome.ERROR),
        (502, Outcome.ERROR),
        (503, Outcome.OVERLOAD),
        (504, Outcome.ERROR),
    ],
)
def test_status_classification_table(status: int, outcome: Outcome) -> None:
    assert classify_http(httpx.Response(status)) is outcome


@pytest.mark.parametrize(
    ("exc", "outcome"),
    [
        (httpx.ConnectTimeout("t"), Outcome.OVERLOAD),
        (httpx.ReadTimeout("t"), Outcome.OVERLOAD),
        (httpx.PoolTimeout("t"), Outcome.OVERLOAD),
        (httpx.WriteTimeout("t"), Outcome.OVERLOAD),
        (httpx.ConnectError("refused"), Outcome.ERROR),
        (httpx.RemoteProtocolError("bad"), Outcome.ERROR),
        (ValueError("bug"), Outcome.ERROR),
        (KeyboardInterrupt(), Outcome.IGNORED),
    ],
)
def test_exception_classification_table(exc: BaseException, outcome: Outcome) -> None:
    assert classify_http(exc) is outcome


def test_origin_drops_userinfo_path_and_query() -> None:
    assert origin_of("https://user:pw@api.example.com/x?key=s3cret") == "https://api.example.com:443"
    assert origin_of("http://[::1]:8080/") == "http://[::1]:8080"


def test_bad_arguments_are_refused_clearly() -> None:
    with pytest.raises(TypeError, match="transport"):
        GovernedTransport(transport=object())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="governor"):
        GovernedTransport("gov")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="classify"):
        GovernedTransport(classify=3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="retry"):
        GovernedTransport(retry=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_retry_after_s"):
        GovernedTransport(max_retry_after_s=-1)


def test_a_pool_smaller_than_the_governor_warns() -> None:
    small = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=4))
    with pytest.warns(RuntimeWarning, match="PoolTimeout"):
        GovernedTransport(Governor("t", Fixed(8)), transport=small)
    big = httpx.AsyncHTTPTransport(limits=httpx.Limits(max_connections=None))
    GovernedTransport(Governor("t", Fixed(8)), transport=big)  # no warning (warnings are errors)


async def test_the_permit_is_held_until_a_streamed_response_is_closed() -> None:
    gov = Governor("t", Fixed(4))

    mock = httpx.MockTransport(lambda request: httpx.Response(200, stream=_Body()))
    async with _client(GovernedTransport(gov, transport=mock)) as client:
        async with client.stream("GET", "http://up/") as response:
            assert gov.inflight == 1  # headers are in, the body is not read
            async for _ in response.aiter_bytes():
                assert gov.inflight == 1
        assert gov.inflight == 0
        response = await client.get("http://up/")  # read at once: released at once
        assert gov.inflight == 0
    assert gov.stats().counts["ok"] == 2


async def test_a_transport_exception_releases_the_permit_with_its_outcome() -> None:
    gov = Governor("t", Fixed(4))

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/slow":
            raise httpx.ReadTimeout("timed out", request=request)
        raise httpx.ConnectError("refused", request=request)

    async with _client(GovernedTransport(gov, transport=httpx.MockTransport(handler))) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("http://up/slow")
        with pytest.raises(httpx.ConnectError):
            await client.get("http://up/down")
    assert gov.inflight == 0
    assert gov.stats().counts == {"ok": 0, "overload": 1, "error": 1, "ignored": 0}


async def test_a_failing_classifier_leaks_no_permit_and_hides_no_error() -> None:
    gov = Governor("t", Fixed(1))

    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    def broken(result: httpx.Response | BaseException) -> Outcome | None:
        raise RuntimeError("bug in the classifier")

    transport = GovernedTransport(gov, transport=httpx.MockTransport(handler), classify=broken)
    async with _client(transport) as client:
        for _ in range(2):
            with pytest.raises(httpx.ConnectError):
                await client.get("http://up/down")
    assert gov.inflight == 0
    assert gov.stats().counts["error"] == 2  # the default classification


async def test_cancellation_releases_the_permit_as_ignored() -> None:
    gov = Governor("t", Fixed(4))
    entered = anyio.Event()

    async def handler(request: httpx.Request) -> httpx.Response:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    transport = GovernedTransport(gov, transport=httpx.MockTransport(handler))
    async with _client(transport) as client, anyio.create_task_group() as tg:
        tg.start_soon(client.get, "http://up/")
        await entered.wait()
        assert gov.inflight == 1
        tg.cancel_scope.cancel()
    assert gov.inflight == 0
    assert gov.stats().counts["ignored"] == 1


async def test_the_permit_is_released_when_the_body_fails_midway() -> None:
    gov = Governor("t", Fixed(4))

    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield b"partial"
            raise httpx.ReadTimeout("stalled")

    mock = httpx.MockTransport(lambda request: httpx.Response(200, stream=Broken()))
    async with _client(GovernedTransport(gov, transport=mock)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get("http://up/")
    assert gov.inflight == 0
    assert gov.stats().counts["overload"] == 1  # the timeout, not the 200, is the outcome


@pytest.mark.parametrize(
    ("value", "paused"),
    [
        ("5", True),
        ("  7 ", True),
        ("soon", False),
        ("-3", False),
        ("", False),
        ("Wed, 01 Jan 1990 00:00:00 GMT", False),
    ],
)
async def test_retry_after_on_an_overload_pauses_the_governor(value: str, paused: bool) -> None:
    gov = Governor("t", Fixed(4))
    mock = httpx.MockTransport(lambda request: httpx.Response(429, headers={"Retry-After": value}))
    async with _client(GovernedTransport(gov, transport=mock, seed=1)) as client:
        await client.get("http://up/")
    if paused:
        asked = float(value)
        assert asked <= gov.paused_for_s() <= asked * 1.1
    else:
        assert gov.paused_for_s() == 0.0


@pytest.mark.parametrize("how", ["retry", "deprecated"])
async def test_retry_after_is_capped_and_ignored_outside_overloads(how: str) -> None:
    gov = Governor("t", Fixed(4))

    def handler(request: httpx.Request) -> httpx.Response:
        code = 200 if request.url.path == "/fine" else 503
        return httpx.Response(code, headers={"Retry-After": "3600"})

    mock = httpx.MockTransport(handler)
    if how == "retry":
        # The Retry policy is the one cap and jitter, with or without retries.
        transport = GovernedTransport(gov, transport=mock, retry=Retry(attempts=1, max_retry_after_s=2))
    else:
        with pytest.warns(DeprecationWarning, match="max_retry_after_s"):
            transport = GovernedTransport(gov, transport=mock, max_retry_after_s=2)
    async with _client(transport) as c:
        await c.get("http://up/fine")
        assert gov.paused_for_s() == 0.0
        await c.get("http://up/busy")
    assert 2.0 <= gov.paused_for_s() <= 2.2


def test_an_http_date_is_measured_against_the_servers_date() -> None:
    server_now = datetime(2030, 1, 1, tzinfo=UTC)
    headers = {
        "Date": format_datetime(server_now, usegmt=True),
        "Retry-After": format_datetime(server_now + timedelta(seconds=30), usegmt=True),
    }
    assert retry_after_s(httpx.Response(429, headers=headers)) == 30.0
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "garbage"})) is None


async def test_new_requests_wait_out_the_pause() -> None:
    gov = Governor("t", Fixed(4))
    calls: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(anyio.current_time())
        return httpx.Response(429 if len(calls) == 1 else 200, headers={"Retry-After": "10"})

    async with _client(GovernedTransport(gov, transport=httpx.MockTransport(handler), seed=0)) as client:
        await client.get("http://up/")
        await client.get("http://up/")
    assert calls[1] - calls[0] >= 10.0


async def test_per_host_governors_are_isolated() -> None:
    template = Governor("api", Fixed(2), environment="staging")
    mock = httpx.MockTransport(
        lambda request: httpx.Response(429 if request.url.host == "a" else 200, headers={"Retry-After": "30"})
    )
    transport = GovernedTransport(template, transport=mock, per_host=True)
    async with _client(transport) as client:
        await client.get("http://a/x")
        await client.get("http://b/y")
        await client.get("http://b:80/z")  # the same origin as http://b/
    govs = transport.governors
    assert set(govs) == {"http://a:80", "http://b:80"}
    a, b = govs["http://a:80"], govs["http://b:80"]
    assert (a.name, a.environment, a.limit) == ("api@http://a:80", "staging", 2)
    assert a.paused_for_s() > 0 and b.paused_for_s() == 0.0
    assert b.stats().counts["ok"] == 2 and a.stats().counts["overload"] == 1
    assert template.stats().counts["ok"] == 0


async def test_per_host_governors_keep_their_state_where_the_template_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from aiogovernor.state import MemoryStore

    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE")
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    for store in (MemoryStore(), None):
        template = Governor("api", Fixed(2), store=store)
        transport = GovernedTransport(template, transport=mock, per_host=True)
        async with _client(transport) as client:
            await client.get("http://a/x")
        assert transport.governor_for("http://a/x").store is store  # not the default JSON file


@respx.mock
async def test_retries_each_attempt_its_own_sample() -> None:
    route = respx.get("http://up/x").mock(
        side_effect=[
            httpx.Response(429, headers={"Retry-After": "1"}),
            httpx.Response(503),
            httpx.Response(200, text="done"),
        ]
    )
    gov = Governor("t", Fixed(4))
    retry = Retry(attempts=3, base_delay_s=0.5, max_delay_s=1.0)
    transport = GovernedTransport(gov, transport=httpx.AsyncHTTPTransport(), retry=retry, seed=3)
    async with _client(transport) as client:
        response = await client.get("http://up/x")
    assert response.text == "done"
    assert route.call_count == 3
    assert gov.stats().counts == {"ok": 1, "overload": 2, "error": 0, "ignored": 0}
    assert gov.inflight == 0


@respx.mock
async def test_retries_give_up_after_the_last_attempt_and_skip_one_shot_bodies() -> None:
    route = respx.post("http://up/x").mock(return_value=httpx.Response(503))
    gov = Governor("t", Fixed(4))
    transport = GovernedTransport(gov, transport=httpx.AsyncHTTPTransport(), retry=Retry(attempts=2))
    async with _client(transport) as client:
        assert (await client.post("http://up/x", content=b"body")).status_code == 503
        assert route.call_count == 2

        async def one_shot() -> AsyncIterator[bytes]:
            yield b"once"

        assert (await client.post("http://up/x", content=one_shot())).status_code == 503
        assert route.call_count == 3


async def test_event_hooks_and_timeouts_work_unchanged() -> None:
    gov = Governor("t", Fixed(4))
    seen: list[str] = []

    async def on_request(request: httpx.Request) -> None:
        seen.append(f"request {request.extensions['timeout']['read']}")

    async def on_response(response: httpx.Response) -> None:
        seen.append(f"response {response.status_code} inflight={gov.inflight}")

    mock = httpx.MockTransport(lambda request: httpx.Response(200, stream=_Body()))
    async with httpx.AsyncClient(
        transport=GovernedTransport(gov, transport=mock),
        event_hooks={"request": [on_request], "response": [on_response]},
        timeout=3.0,
    ) as client:
        await client.get("http://up/")
    assert seen == ["request 3.0", "response 200 inflight=1"]
    assert gov.inflight == 0


async def test_secrets_never_reach_logs_decisions_or_state(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    secrets = ["Bearer tok-AUTH", "session=tok-COOKIE", "tok-APIKEY", "tok-PASSWORD", "tok-QUERY"]
    gov = Governor("t", Fixed(2))

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(429 if request.url.path == "/busy" else 200, headers={"Retry-After": "1"})

    transport = GovernedTransport(gov, transport=httpx.MockTransport(handler), per_host=True)
    headers = {"Authorization": secrets[0], "Cookie": secrets[1], "X-API-Key": secrets[2]}
    async with _client(transport) as client:
        for path in ["/ok", "/busy", "/ok"] * 5:
            await client.get(f"http://user:{secrets[3]}@up{path}?api_key={secrets[4]}", headers=headers)
    await wait_until(lambda: all(g.inflight == 0 for g in transport.governors.values()))
    # httpx's own INFO line logs the URL as given; aiogovernor's loggers must log none of it.
    recorded = [r.getMessage() for r in caplog.records if r.name.startswith("aiogovernor")]
    for g in transport.governors.values():
        recorded += [g.name, repr(g), repr(g.stats()), *(d.describe() for d in g.decisions)]
    assert any("paused" in line for line in recorded)
    for secret in secrets:
        for text in recorded:
            assert secret not in text


async def test_http_attempts_run_a_hand_made_call_through_the_same_loop() -> None:
    sent: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(anyio.current_time())
        if len(sent) == 1:
            return httpx.Response(429, headers={"Retry-After": "2"})
        return httpx.Response(200, text="ok")

    gov = Governor("t", Fixed(2))
    attempts = HTTPAttempts(retry=Retry(attempts=3, retry_after_jitter=0.0))
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        request = client.build_request("GET", "http://up/")
        response = await attempts.run(gov, lambda permit, attempt: client.send(request))
    assert response.text == "ok"
    assert sent[1] - sent[0] == pytest.approx(2.0)  # the Retry-After, through the Retry policy
    assert gov.inflight == 0 and gov.stats().counts["overload"] == 1
    with pytest.raises(TypeError, match="classify"):
        HTTPAttempts(classify=3)  # type: ignore[arg-type]


def _drop(responses: list[httpx.Response]) -> None:
    """Forget the responses, unclosed, and collect them."""
    responses.clear()
    gc.collect()


async def test_an_unclosed_streamed_response_gives_its_permit_back_when_collected() -> None:
    gov = Governor("t", Fixed(1))
    mock = httpx.MockTransport(lambda request: httpx.Response(200, stream=_Body()))
    async with _client(GovernedTransport(gov, transport=mock)) as client:
        kept = [await client.send(client.build_request("GET", "http://up/"), stream=True)]
        assert gov.inflight == 1
        with pytest.warns(ResourceWarning, match="never closed; its permit was given back"):
            _drop(kept)
        await wait_until(lambda: gov.inflight == 0)
        # The governor works on: the permit is free again.
        async with client.stream("GET", "http://up/") as again:
            await again.aread()
    assert gov.inflight == 0
    assert gov.stats().counts["ignored"] == 1


def test_a_streamed_response_collected_after_its_loop_closed_gives_its_permit_back() -> None:
    gov = Governor("t", Fixed(1))
    mock = httpx.MockTransport(lambda request: httpx.Response(200, stream=_Body()))
    kept: list[httpx.Response] = []

    async def leave_it_open() -> None:
        client = _client(GovernedTransport(gov, transport=mock))
        kept.append(await client.send(client.build_request("GET", "http://up/"), stream=True))

    asyncio.run(leave_it_open())
    assert gov.inflight == 1
    with pytest.warns(ResourceWarning, match="never closed"):
        _drop(kept)
    assert gov.inflight == 0


async def test_idle_origins_governors_are_dropped_and_saved(monkeypatch: pytest.MonkeyPatch) -> None:
    from aiogovernor.state import MemoryStore
    from aiogovernor.testing import ManualClock

    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE")
    clock, store = ManualClock(), MemoryStore()
    every_request = WindowConfig(min_samples=1, min_duration_s=0.0)  # a decision to save
    template = Governor("api", Fixed(2), store=store, clock=clock, window=every_request)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    transport = GovernedTransport(template, transport=mock, per_host=True, host_idle_s=60.0, max_hosts=None)
    async with _client(transport) as client:
        await client.get("http://a/")
        first = transport.governor_for("http://a/")
        clock.advance(30.0)
        await client.get("http://b/")
        clock.advance(31.0)  # a: idle 61 s, b: 31 s
        await client.get("http://c/")
        assert set(transport.governors) == {"http://b:80", "http://c:80"}
        await client.get("http://c/")  # on trio, the next request saves what was dropped
        for task in list(transport._saving):  # on asyncio, a task does
            await task
        assert await store.load(template.environment, "api@http://a:80") is not None  # saved
        again = transport.governor_for("http://a/")
        assert again is not first
        assert set(transport.governors) == {"http://a:80", "http://b:80", "http://c:80"}
        held = transport.governor_for("http://b/").try_acquire()  # a permit held: b is not idle
        assert held is not None
        clock.advance(100.0)
        await client.get("http://d/")
        assert set(transport.governors) == {"http://b:80", "http://d:80"}
        held.release()


async def test_origins_beyond_max_hosts_drop_the_least_recently_used_idle_one() -> None:
    template = Governor("api", Fixed(2), store=None)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    transport = GovernedTransport(template, transport=mock, per_host=True, max_hosts=2, host_idle_s=None)
    async with _client(transport) as client:
        await client.get("http://a/")
        await client.get("http://b/")
        await client.get("http://a/")  # b is now the least recently used
        await client.get("http://c/")
        assert list(transport.governors) == ["http://a:80", "http://c:80"]
        held = [transport.governor_for(url).try_acquire() for url in ("http://a/", "http://c/")]
        await client.get("http://d/")  # every other one is busy: the bound gives way
        assert set(transport.governors) == {"http://a:80", "http://c:80", "http://d:80"}
        for permit in held:
            assert permit is not None
            permit.release()
        await client.get("http://e/")
        assert list(transport.governors) == ["http://d:80", "http://e:80"]


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"max_hosts": 0}, "max_hosts"), ({"host_idle_s": 0.0}, "host_idle_s")]
)
def test_bad_eviction_settings_are_refused(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        GovernedTransport(Governor("api", Fixed(1), store=None), per_host=True, **kwargs)  # type: ignore[arg-type]
