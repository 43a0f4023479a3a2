"""Dispatch against hostile endpoints: garbage answers, slow-loris bodies, odd ids, leaked keys, trio.

A small HTTP/1.1 server (asyncio streams on loopback, in the test's own
loop) answers each request with whatever the test scripts: real HTTP, real
sockets, no mock transport. Each test runs its own ``asyncio.run`` and
bounds itself with a timeout, so a regression fails instead of hanging.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from types import TracebackType
from typing import Any, TypeVar

import pytest

from aiogovernor.dispatch import AuthError, EndpointError, EndpointPool, JobClient, JobState, JobStatus
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless

T = TypeVar("T")

FAST: dict[str, Any] = {"poll_interval_s": 0.005, "max_poll_interval_s": 0.02, "seed": 3}

Answer = tuple[int, dict[str, str], bytes]


def answer(status: int, body: Any = None, *, raw: bytes | None = None, **headers: str) -> Answer:
    data = raw if raw is not None else json.dumps(body).encode()
    return status, {k.replace("_", "-"): v for k, v in headers.items()}, data


@dataclass
class Hostile:
    """An HTTP server whose answers a test scripts: ``handler(method, path) -> Answer``."""

    handler: Callable[[str, str], Answer]
    dribble_s: float | None = None  # send the body one byte per this many seconds
    requests: list[tuple[str, str]] = field(default_factory=list)
    server: asyncio.Server | None = None
    writers: set[asyncio.StreamWriter] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def wait_for(self, method: str, path: str) -> None:
        """Until a request ``method path`` has come in (woken by each request, no polling)."""
        while (method, path) not in self.requests:
            self.arrived.clear()
            await self.arrived.wait()

    @property
    def base_url(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> Hostile:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self.server is not None
        self.server.close()
        for writer in list(self.writers):
            writer.close()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self.tasks.add(task)
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                method, path, _ = line.decode().split(" ", 2)
                length = 0
                while (header := await reader.readline()) not in (b"\r\n", b""):
                    name, _, value = header.decode().partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if length:
                    await reader.readexactly(length)
                self.requests.append((method, path))
                self.arrived.set()
                status, headers, body = self.handler(method, path)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
                writer.write((head + "\r\n").encode())
                if self.dribble_s is None:
                    writer.write(body)
                    await writer.drain()
                    continue
                for i in range(len(body)):
                    if writer.is_closing():
                        return
                    writer.write(body[i : i + 1])
                    await writer.drain()
                    await asyncio.sleep(self.dribble_s)
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()


def run(factory: Callable[[], Awaitable[T]], *, within_s: float = 5.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(within_s):
            return await factory()

    return asyncio.run(main())


def client_for(server: Hostile, **kwargs: Any) -> JobClient:
    return JobClient("ep", api_key="k-123", base_url=server.base_url, **{**FAST, **kwargs})


def job_api(
    run_answer: Answer, status_answer: Answer | None = None, cancel_answer: Answer | None = None
) -> Callable[[str, str], Answer]:
    """A handler: /run, /status and /cancel answered as given (status: IN_PROGRESS by default)."""

    def handler(method: str, path: str) -> Answer:
        if path.endswith(("/run", "/runsync")):
            return run_answer
        if "/status/" in path:
            return status_answer or answer(200, {"id": path.rsplit("/", 1)[1], "status": "IN_PROGRESS"})
        if "/cancel/" in path:
            return cancel_answer or answer(200, {"id": path.rsplit("/", 1)[1], "status": "CANCELLED"})
        return answer(200, {"workers": {"idle": 1, "running": 0}, "jobs": {}})

    return handler


# -- garbage answers become EndpointError naming the endpoint and the call -------------------------

GARBAGE = [
    pytest.param(b"not json", id="not-json"),
    pytest.param(b"[1, 2]", id="list"),
    pytest.param(b'"text"', id="string"),
    pytest.param(b"null", id="null"),
    pytest.param(b'{"status": "IN_QUEUE"}', id="no-id"),
    pytest.param(b'{"id": 5, "status": "IN_QUEUE"}', id="id-not-a-string"),
    pytest.param(b'{"id": "..", "status": "IN_QUEUE"}', id="id-dot-dot"),
    pytest.param(b'{"id": "j1", "status": "WEIRD"}', id="unknown-status"),
    pytest.param(b"\xff\xfe", id="not-utf8"),
]


@pytest.mark.parametrize("body", GARBAGE)
def test_a_garbage_submit_answer_is_an_endpoint_error_naming_the_call(body: bytes) -> None:
    async def main() -> EndpointError:
        async with Hostile(job_api(answer(200, raw=body))) as server, client_for(server) as c:
            with pytest.raises(EndpointError) as info:
                await c.run({})
            return info.value

    error = run(main)
    assert type(error) is EndpointError
    assert (error.endpoint, error.call) == ("ep", "submit")
    assert "'ep'" in str(error) and "submit" in str(error)


@pytest.mark.parametrize("body", GARBAGE)
def test_a_garbage_status_answer_is_an_endpoint_error_and_the_job_is_cancelled(body: bytes) -> None:
    async def main() -> tuple[EndpointError, list[tuple[str, str]]]:
        handler = job_api(answer(200, {"id": "j1", "status": "IN_QUEUE"}), answer(200, raw=body))
        async with Hostile(handler) as server, client_for(server, max_poll_errors=2) as c:
            with pytest.raises(EndpointError) as info:
                await c.run({})
            return info.value, server.requests

    error, requests = run(main)
    assert type(error) is EndpointError and (error.endpoint, error.call) == ("ep", "status")
    assert requests[-1] == ("POST", "/v2/ep/cancel/j1"), "a job given up on is cancelled"


@pytest.mark.parametrize(
    "body", [b"nope", b"[]", b'{"workers": "many"}', b'{"workers": {"idle": 1}, "jobs": [1]}']
)
def test_a_garbage_health_answer_is_an_endpoint_error(body: bytes) -> None:
    async def main() -> EndpointError:
        async with Hostile(lambda m, p: answer(200, raw=body)) as server, client_for(server) as c:
            with pytest.raises(EndpointError) as info:
                await c.health()
            return info.value

    error = run(main)
    assert type(error) is EndpointError and (error.endpoint, error.call) == ("ep", "health")


def test_a_submit_answer_naming_its_job_but_unreadable_cancels_that_job() -> None:
    async def main() -> list[tuple[str, str]]:
        handler = job_api(answer(200, {"id": "job-8", "status": "WEIRD"}))
        async with Hostile(handler) as server, client_for(server) as c:
            with pytest.raises(EndpointError, match="WEIRD"):
                await c.run({})
            assert c.stats().cancels_sent == 1
            return server.requests

    assert ("POST", "/v2/ep/cancel/job-8") in run(main)


def test_a_cancelled_caller_ends_cancelled_whatever_the_cancel_answer_is() -> None:
    async def main() -> None:
        handler = job_api(
            answer(200, {"id": "j1", "status": "IN_QUEUE"}), cancel_answer=answer(200, raw=b"{garbage")
        )
        async with Hostile(handler) as server, client_for(server) as c:
            task = asyncio.create_task(c.run({}))
            await server.wait_for("GET", "/v2/ep/status/j1")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert ("POST", "/v2/ep/cancel/j1") in server.requests

    run(main)


# -- a total deadline per request ---------------------------------------------------------------


def test_a_slow_loris_answer_is_cut_at_the_request_deadline() -> None:
    async def main() -> float:
        handler = job_api(answer(200, {"id": "j1", "status": "IN_QUEUE"}, raw=b" " * 200))
        async with Hostile(handler, dribble_s=0.05) as server, client_for(server, request_timeout_s=0.3) as c:
            loop = asyncio.get_running_loop()
            start = loop.time()
            with pytest.raises(EndpointError, match="timed out") as info:
                await c.health()
            assert info.value.call == "health"
            return loop.time() - start

    # The body would take 10 s; each byte comes well within httpx's per-read timeout.
    assert run(main) < 2.0


# -- ids in URL paths ---------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint_id", ["a?b#c", "..", ".", "a/b", "", "a b", "-x"])
def test_endpoint_ids_that_would_move_the_url_are_refused(endpoint_id: str) -> None:
    with pytest.raises(ValueError, match="endpoint_id"):
        JobClient(endpoint_id, api_key="k")


def test_job_ids_are_quoted_into_one_path_segment() -> None:
    async def main() -> list[tuple[str, str]]:
        handler = job_api(
            answer(200, {"id": "a?b#c/d", "status": "IN_QUEUE"}),
            answer(200, {"id": "a?b#c/d", "status": "COMPLETED", "output": 1}),
        )
        async with Hostile(handler) as server, client_for(server) as c:
            status = await c.run({})
            assert status.state is JobState.COMPLETED and status.job_id == "a?b#c/d"
            return server.requests

    assert ("GET", "/v2/ep/status/a%3Fb%23c%2Fd") in run(main)


# -- the key never sits in a traceback local -------------------------------------------------------


def _frames_locals(error: BaseException) -> list[tuple[str, str, str]]:
    """(function, name, repr) of every local of every frame of ``error``'s traceback and its chain."""
    found = []
    seen: set[int] = set()
    todo: list[BaseException | None] = [error]
    while todo:
        exc = todo.pop()
        if exc is None or id(exc) in seen:
            continue
        seen.add(id(exc))
        todo += [exc.__cause__, exc.__context__]
        tb = exc.__traceback__
        while tb is not None:
            frame = tb.tb_frame
            if frame.f_code.co_filename == __file__:  # the test itself holds the key
                tb = tb.tb_next
                continue
            for name, value in frame.f_locals.items():
                try:
                    text = repr(value)
                except Exception:  # a repr that fails shows nothing either
                    continue
                found.append((f"{frame.f_code.co_filename}:{frame.f_code.co_name}", name, text))
            tb = tb.tb_next
    return found


def test_the_key_is_in_no_traceback_local_of_a_refused_or_failed_call() -> None:
    secret = "sk-LOCALS-very-secret"
    errors: list[BaseException] = []

    async def main() -> None:
        with LocalServerless({"ok": FakeEndpoint()}) as server:
            base_url = server.base_url
            async with JobClient("ok", api_key=secret, base_url=base_url, **FAST) as c:
                try:
                    await c.run({})
                except AuthError as exc:
                    errors.append(exc)
        # Nothing listens there any more: a transport error.
        async with JobClient("ok", api_key=secret, base_url=base_url, **FAST) as c:
            try:
                await c.health()
            except EndpointError as exc:
                errors.append(exc)

    run(main)
    assert [type(e) for e in errors] == [AuthError, EndpointError]
    for error in errors:
        leaks = [(fn, name) for fn, name, text in _frames_locals(error) if secret in text]
        assert leaks == [], f"the key is visible in traceback locals: {leaks}"


# -- asyncio only, said up front -----------------------------------------------------------------------


def test_on_trio_one_clear_error_names_asyncio() -> None:
    import trio

    client = JobClient("ep", api_key="k", base_url="http://127.0.0.1:9")
    pool = EndpointPool([client])
    for call in (client.run, pool.run):
        with pytest.raises(RuntimeError, match="asyncio"):
            trio.run(call, {})


# -- Retry-After in its HTTP-date form pauses submits ------------------------------------------------------


def test_a_retry_after_date_pauses_the_submits_only() -> None:
    async def main() -> tuple[float, float]:
        when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
        handler = job_api(answer(429, {"error": "queue full"}, Retry_After=when))
        async with Hostile(handler) as server, client_for(server, queue_timeout_s=0.05) as c:
            with pytest.raises(Exception, match="429"):
                await c.run({})
            return c.submit_governor.paused_for_s(), c.request_governor.paused_for_s()

    submit_pause, poll_pause = run(main)
    assert 20 < submit_pause <= 31 and poll_pause == 0


def test_a_polls_retry_after_is_capped_and_jittered_by_retry_and_cancels_still_go() -> None:
    async def main() -> tuple[float, float, JobStatus | None]:
        handler = job_api(
            answer(200, {"id": "job-1", "status": "IN_QUEUE"}),
            status_answer=answer(429, {"error": "slow down"}, Retry_After="3600"),
        )
        async with Hostile(handler) as server, client_for(server) as c:
            with pytest.raises(EndpointError, match="429"):
                await c.status("job-1")
            pauses = c.request_governor.paused_for_s(), c.submit_governor.paused_for_s()
            return *pauses, await c.cancel("job-1")

    poll_pause, submit_pause, cancelled = run(main)
    # Retry's default cap (60 s) and jitter (up to 10 % longer), as everywhere in the library.
    assert 55 < poll_pause <= 66 and submit_pause == 0
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
