"""`JobClient`: submit, poll and cancel jobs on one serverless endpoint, governed and cancellation-safe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from aiogovernor._clock import Clock, loop_time
from aiogovernor._governor import Governor, Permit
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_float, check_int
from aiogovernor.limits import AIMD

from ._backoff import PollBackoff
from ._protocol import RunPodProtocol, ServerlessProtocol
from ._states import (
    AuthError,
    EndpointError,
    EndpointHealth,
    JobExpired,
    JobFailed,
    JobState,
    JobStatus,
    JobTimeout,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["JobClient", "JobClientStats"]

logger = logging.getLogger("aiogovernor.dispatch")

T = TypeVar("T")


class _Secret:
    """Holds the API key so that no repr, log line or traceback local shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


@dataclass(frozen=True, slots=True, kw_only=True)
class JobClientStats:
    """Counters of one `JobClient`, from `JobClient.stats`.

    Attributes:
        submitted: Jobs the endpoint accepted.
        completed: Jobs that ended ``COMPLETED``.
        failed: Jobs that ended otherwise (failed, timed out, expired, ...).
        overloaded: 429 answers met (each retried, never ending a job by itself).
        cancels_sent: Cancel calls made for jobs the caller gave up on.
        cancel_failures: Cancel calls that did not get through in ``cancel_timeout_s``
            (those jobs may still be running remotely).
    """

    submitted: int
    completed: int
    failed: int
    overloaded: int
    cancels_sent: int
    cancel_failures: int


async def _await_shielded(task: asyncio.Future[T]) -> T:
    """Await ``task`` to its end even if the caller is cancelled meanwhile, then re-raise that.

    The task bounds its own duration (a timeout inside it), so the caller's
    cancellation is delayed by at most that much.
    """
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved: the caller's cancellation wins
        raise


def _retry_after_s(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: rare from job APIs; the backoff covers it
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


class JobClient:
    """Runs jobs on one serverless endpoint (RunPod's API by default).

    Two governors guard the endpoint: `governor` bounds the jobs in flight
    (its limit adapts, and `EndpointPool` seeds it from ``/health``), and
    `request_governor` bounds the API calls themselves — submit, status
    polls and cancels — in concurrency and, with ``requests_per_s``, in rate.
    A 429 is an overload (with its Retry-After as a pause) and is retried,
    never the end of a job; several 429s within ``overload_debounce_s`` count
    as one congestion event.

    `run` submits, polls with jittered backoff until a terminal state, and
    cancels the remote job whenever it stops caring before that: the caller
    was cancelled or timed out, the queue wait or execution deadline passed,
    polling failed. The cancel call is shielded from the caller's
    cancellation and bounded by ``cancel_timeout_s``.

    The API key is sent as a bearer token and never appears in a repr, log
    line or error message.

    Args:
        endpoint_id: The endpoint's id (the ``{endpoint_id}`` in the paths).
        api_key: The key; None reads the protocol's environment variable
            (``RUNPOD_API_KEY``). Required when the protocol requires one.
        base_url: Scheme and host of the API.
        protocol: Paths and parsing; `RunPodProtocol` by default.
        http: An ``httpx.AsyncClient`` to share; by default the client makes
            (and closes) its own.
        governor: Bounds jobs in flight; by default an `AIMD` up to ``max_jobs``.
        request_governor: Bounds API calls; by default an `AIMD` with the
            ``requests_per_s`` ceiling.
        max_jobs: Ceiling of the default job governor.
        requests_per_s: Rate ceiling of API calls (None: none).
        queue_timeout_s: The longest a job may wait for a worker (including
            time spent retrying 429s at submit) before it is cancelled.
        execution_timeout_s: The longest a job may run once started.
        request_timeout_s: Timeout of each HTTP call.
        cancel_timeout_s: The most time spent trying to cancel a job.
        poll_interval_s: The first delay between status polls.
        max_poll_interval_s: The largest delay between status polls.
        overload_debounce_s: 429s closer together than this count as one overload.
        max_poll_errors: Consecutive failed polls (transport errors, 5xx)
            before the job is given up (and cancelled).
        clock: Seconds as a float for deadlines; defaults to the loop's time.
        seed: Seeds the polling jitter, for reproducible runs.
    """

    def __init__(
        self,
        endpoint_id: str,
        *,
        api_key: str | None = None,
        base_url: str = "https://api.runpod.ai",
        protocol: ServerlessProtocol | None = None,
        http: httpx.AsyncClient | None = None,
        governor: Governor | None = None,
        request_governor: Governor | None = None,
        max_jobs: int = 100,
        requests_per_s: float | None = None,
        queue_timeout_s: float = 600.0,
        execution_timeout_s: float = 3600.0,
        request_timeout_s: float = 30.0,
        cancel_timeout_s: float = 10.0,
        poll_interval_s: float = 0.5,
        max_poll_interval_s: float = 10.0,
        overload_debounce_s: float = 1.0,
        max_poll_errors: int = 3,
        clock: Clock | None = None,
        seed: int | None = None,
    ) -> None:
        if not isinstance(endpoint_id, str) or not endpoint_id or "/" in endpoint_id:
            raise ValueError(f"endpoint_id must be a non-empty string without '/', got {endpoint_id!r}")
        protocol = RunPodProtocol() if protocol is None else protocol
        if not isinstance(protocol, ServerlessProtocol):
            raise TypeError(f"protocol must implement ServerlessProtocol, got {protocol!r}")
        if api_key is None and protocol.api_key_env:
            api_key = os.environ.get(protocol.api_key_env) or None
        if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
            raise ValueError("api_key must be a non-empty string")
        if api_key is None and protocol.requires_api_key:
            where = f" or set ${protocol.api_key_env}" if protocol.api_key_env else ""
            raise ValueError(f"api_key is required for endpoint {endpoint_id!r}: pass api_key={where}")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        for name, gov in (("governor", governor), ("request_governor", request_governor)):
            if gov is not None and not isinstance(gov, Governor):
                raise TypeError(f"{name} must be a Governor, got {gov!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
        check_int("max_jobs", max_jobs, low=1)
        if requests_per_s is not None:
            check_float("requests_per_s", requests_per_s, low=0.0, low_open=True)
        self._queue_timeout_s = check_float("queue_timeout_s", queue_timeout_s, low=0.0, low_open=True)
        self._execution_timeout_s = check_float(
            "execution_timeout_s", execution_timeout_s, low=0.0, low_open=True
        )
        self._request_timeout_s = check_float("request_timeout_s", request_timeout_s, low=0.0, low_open=True)
        self._cancel_timeout_s = check_float("cancel_timeout_s", cancel_timeout_s, low=0.0, low_open=True)
        self._poll_interval_s = check_float("poll_interval_s", poll_interval_s, low=0.0, low_open=True)
        self._max_poll_interval_s = check_float(
            "max_poll_interval_s", max_poll_interval_s, low=self._poll_interval_s
        )
        self._debounce_s = check_float("overload_debounce_s", overload_debounce_s, low=0.0)
        self._max_poll_errors = check_int("max_poll_errors", max_poll_errors, low=1)

        self._endpoint_id = endpoint_id
        self._api_key = None if api_key is None else _Secret(api_key)
        self._base_url = base_url.rstrip("/")
        self._protocol = protocol
        self._http = http
        self._owns_http = http is None
        self._governor = governor or Governor(
            f"dispatch:{endpoint_id}", AIMD(min_limit=1, max_limit=max_jobs, initial_limit=min(4, max_jobs))
        )
        self._requests = request_governor or Governor(
            f"dispatch:{endpoint_id}:api",
            AIMD(min_limit=1, max_limit=256, initial_limit=32),
            max_per_second=requests_per_s,
            burst=max(1, math.ceil(requests_per_s or 1)),
        )
        self._clock: Clock = clock or loop_time
        self._rng = random.Random(seed)
        self._last_overload = -math.inf
        self._counts = dict.fromkeys(
            ("submitted", "completed", "failed", "overloaded", "cancels_sent", "cancel_failures"), 0
        )

    # -- introspection ----------------------------------------------------

    @property
    def endpoint_id(self) -> str:
        """The endpoint's id."""
        return self._endpoint_id

    @property
    def governor(self) -> Governor:
        """The governor bounding jobs in flight on this endpoint."""
        return self._governor

    @property
    def request_governor(self) -> Governor:
        """The governor bounding API calls (submit, status, cancel) to this endpoint."""
        return self._requests

    def stats(self) -> JobClientStats:
        """A snapshot of the counters."""
        return JobClientStats(**self._counts)

    def __repr__(self) -> str:
        return (
            f"<JobClient {self._endpoint_id!r} at {self._base_url} "
            f"limit={self._governor.limit} inflight={self._governor.inflight}>"
        )

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> JobClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP client if this client made it."""
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    def _client(self) -> httpx.AsyncClient:
        if self._http is None:
            import httpx

            # The governors bound the calls in flight; a connection pool smaller than
            # they allow would turn their headroom into PoolTimeouts (httpx #1171).
            self._http = httpx.AsyncClient(limits=httpx.Limits(max_connections=None))
        return self._http

    # -- one API call ---------------------------------------------------------

    async def _send(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One HTTP call, no governing: transport failures become `EndpointError`."""
        import httpx

        headers = self._protocol.auth_headers(self._api_key.reveal()) if self._api_key else {}
        try:
            response = await self._client().request(
                method, self._base_url + path, json=body, headers=headers, timeout=self._request_timeout_s
            )
        except httpx.TimeoutException:
            raise EndpointError(
                f"{method} {path} timed out after {self._request_timeout_s:g}s", endpoint=self._endpoint_id
            ) from None
        except httpx.TransportError as exc:
            # The exception's text names the URL and the cause, never the headers.
            raise EndpointError(
                f"{method} {path} failed: {type(exc).__name__}: {exc}", endpoint=self._endpoint_id
            ) from None
        if response.status_code in (401, 403):
            raise AuthError(
                f"{method} {path}: the endpoint refused the API key ({response.status_code})",
                endpoint=self._endpoint_id,
                status_code=response.status_code,
            )
        return response

    def _judge(self, permit: Permit, response: httpx.Response) -> None:
        """Set the API call's outcome: 429 and 503 are overload, other 5xx an error."""
        code = response.status_code
        if code == 429 or code == 503:
            self._overload(permit, _retry_after_s(response))
        elif code >= 500:
            permit.error()

    def _overload(self, permit: Permit, retry_after_s: float | None) -> None:
        """Record one overload per debounce interval; always honour the pause."""
        self._counts["overloaded"] += 1
        now = self._clock()
        if now - self._last_overload >= self._debounce_s:
            self._last_overload = now
            permit.overload(retry_after_s=retry_after_s)
        else:
            permit.ignore()  # the same congestion event, already answered
            if retry_after_s is not None:
                permit.governor.pause(retry_after_s)

    async def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        """One governed API call."""
        async with self._requests as permit:
            response = await self._send(method, path, body)
            self._judge(permit, response)
            return response

    def _error(self, response: httpx.Response, what: str) -> EndpointError:
        return EndpointError(
            f"{what} on endpoint {self._endpoint_id!r}: HTTP {response.status_code}",
            endpoint=self._endpoint_id,
            status_code=response.status_code,
        )

    # -- the API ----------------------------------------------------------------

    async def health(self) -> EndpointHealth:
        """Read ``/health``: workers and queue.

        Raises:
            EndpointError: When the endpoint is unreachable or answers an error.
        """
        response = await self._call("GET", self._protocol.health_path(self._endpoint_id))
        if response.status_code != 200:
            raise self._error(response, "health")
        return self._protocol.parse_health(response.json())

    async def status(self, job_id: str) -> JobStatus:
        """Read a job's status once; a 404 reads as ``EXPIRED``.

        Raises:
            EndpointError: When the endpoint is unreachable, overloaded or answers an error.
        """
        response = await self._call("GET", self._protocol.status_path(self._endpoint_id, job_id))
        if response.status_code == 404:
            return JobStatus(job_id=job_id, state=JobState.EXPIRED, error="unknown job or result expired")
        if response.status_code != 200:
            raise self._error(response, f"status of job {job_id}")
        return self._protocol.parse_status(response.json())

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a job; shielded from the caller's cancellation and bounded by ``cancel_timeout_s``.

        Returns:
            The job's status after the cancel, or None if the cancel did not
            get through (logged as a warning; the job may still run).
        """
        return await _await_shielded(asyncio.ensure_future(self._cancel(job_id)))

    async def _cancel(self, job_id: str) -> JobStatus | None:
        self._counts["cancels_sent"] += 1
        path = self._protocol.cancel_path(self._endpoint_id, job_id)
        reason = "timed out"
        try:
            async with asyncio.timeout(self._cancel_timeout_s):
                backoff = PollBackoff(initial_s=0.05, max_s=1.0, rng=self._rng)
                while True:
                    try:
                        response = await self._call("POST", path)
                    except AuthError:
                        raise
                    except EndpointError as exc:
                        reason = str(exc)
                    else:
                        if response.status_code == 404:
                            return JobStatus(job_id=job_id, state=JobState.EXPIRED)
                        if response.status_code == 200:
                            return self._protocol.parse_status(response.json())
                        reason = f"HTTP {response.status_code}"
                    await asyncio.sleep(backoff.next_s())
        except TimeoutError:
            pass
        except AuthError as exc:
            reason = str(exc)
        self._counts["cancel_failures"] += 1
        logger.warning(
            "could not cancel job %s on endpoint %r within %gs (%s): it may keep running",
            job_id,
            self._endpoint_id,
            self._cancel_timeout_s,
            reason,
        )
        return None

    async def submit(self, payload: Any, *, sync: bool = False) -> JobStatus:
        """Submit one job, retrying 429s until ``queue_timeout_s``; not cancellation-safe on its own.

        Prefer `run`, which cancels the job when the caller gives up. With
        ``sync`` the endpoint's ``/runsync`` is used: it may answer with the
        result at once.

        Raises:
            JobTimeout: When 429s kept the job out for ``queue_timeout_s``.
            EndpointError: When the endpoint is unreachable or answers an error.
        """
        return await self._submit(payload, sync, self._clock() + self._queue_timeout_s, None)

    async def _submit(
        self, payload: Any, sync: bool, deadline: float, job_permit: Permit | None
    ) -> JobStatus:
        path = self._protocol.run_path(self._endpoint_id, sync=sync)
        body = self._protocol.run_body(payload)
        backoff = PollBackoff(initial_s=self._poll_interval_s, max_s=self._max_poll_interval_s, rng=self._rng)
        while True:
            async with self._requests as permit:
                post = asyncio.ensure_future(self._send("POST", path, body))
                try:
                    response = await _await_shielded(post)
                except asyncio.CancelledError:
                    await self._cancel_created(post)
                    raise
                self._judge(permit, response)
            if response.status_code == 429:
                if job_permit is not None and permit.outcome is Outcome.OVERLOAD:
                    job_permit.overload()  # the endpoint's queue is full: too many jobs
                if self._clock() >= deadline:
                    raise JobTimeout(
                        f"endpoint {self._endpoint_id!r} kept refusing the job (429) for "
                        f"{self._queue_timeout_s:g}s",
                        endpoint=self._endpoint_id,
                        job_id=None,
                        state=None,
                        phase="queue",
                    )
                await asyncio.sleep(min(backoff.next_s(), max(0.0, deadline - self._clock())))
                continue
            if response.status_code not in (200, 201, 202):
                raise self._error(response, "submit")
            self._counts["submitted"] += 1
            return self._protocol.parse_status(response.json())

    async def _cancel_created(self, post: asyncio.Future[httpx.Response]) -> None:
        """The caller was cancelled while a submit was out: cancel the job it created, if any."""
        if post.cancelled() or post.exception() is not None:
            return
        response = post.result()
        if response.status_code not in (200, 201, 202):
            return
        try:
            created = self._protocol.parse_status(response.json())
        except ValueError:
            return
        if not created.state.terminal:
            await self.cancel(created.job_id)

    async def run(self, payload: Any, *, sync: bool = False) -> JobStatus:
        """Run one job to its end: submit, poll, return the ``COMPLETED`` status.

        Holds one permit of `governor` for the job's life. Whatever ends the
        call early (cancellation, a timeout around it, a deadline, an error
        while polling), the remote job is cancelled before this returns or
        raises.

        Args:
            payload: The job's input (JSON-serialisable).
            sync: Submit through ``/runsync`` (the result may come back at once).

        Returns:
            The final status; its ``output`` is the job's result.

        Raises:
            JobFailed: The job ended ``FAILED``, ``CANCELLED`` or ``TIMED_OUT``.
            JobExpired: The endpoint forgot the job (404) before it ended.
            JobTimeout: Queue wait or execution passed its deadline (the job was cancelled).
            EndpointError: The endpoint is unreachable or answers errors.
        """
        async with self._governor as permit:
            return await self._run(payload, sync, permit)

    async def _run(self, payload: Any, sync: bool, permit: Permit) -> JobStatus:
        submitted_at = self._clock()
        status: JobStatus | None = None
        job_id: str | None = None
        try:
            status = await self._submit(payload, sync, submitted_at + self._queue_timeout_s, permit)
            job_id = status.job_id
            status = await self._follow(status, submitted_at)
        except JobTimeout as exc:
            self._counts["failed"] += 1
            if permit.outcome is None:
                # A long queue wait is the endpoint saying it is full; a long run is not.
                permit.overload() if exc.phase == "queue" else permit.error()
            raise
        except Exception:
            self._counts["failed"] += 1
            permit.error()
            raise
        finally:
            if job_id is not None and (status is None or not status.state.terminal):
                await self.cancel(job_id)
        if status.state is JobState.COMPLETED:
            self._counts["completed"] += 1
            return status
        self._counts["failed"] += 1
        permit.error()
        if status.state is JobState.EXPIRED:
            raise JobExpired(
                f"job {status.job_id} on endpoint {self._endpoint_id!r} is unknown or its result expired",
                endpoint=self._endpoint_id,
                job_id=status.job_id,
                state=status.state,
            )
        raise JobFailed(
            f"job {status.job_id} on endpoint {self._endpoint_id!r} ended {status.state.value}"
            + (f": {status.error}" if status.error else ""),
            endpoint=self._endpoint_id,
            job_id=status.job_id,
            state=status.state,
        )

    async def _follow(self, status: JobStatus, submitted_at: float) -> JobStatus:
        """Poll until a terminal state, enforcing the queue and execution deadlines."""
        backoff = PollBackoff(initial_s=self._poll_interval_s, max_s=self._max_poll_interval_s, rng=self._rng)
        started_at: float | None = None
        errors = 0
        while not status.state.terminal:
            now = self._clock()
            if status.state is JobState.IN_PROGRESS:
                started_at = now if started_at is None else started_at
                deadline, phase, limit_s = (
                    started_at + self._execution_timeout_s,
                    "execution",
                    self._execution_timeout_s,
                )
            else:
                deadline, phase, limit_s = (
                    submitted_at + self._queue_timeout_s,
                    "queue",
                    self._queue_timeout_s,
                )
            if now >= deadline:
                raise JobTimeout(
                    f"job {status.job_id} on endpoint {self._endpoint_id!r} passed its {phase} deadline "
                    f"({limit_s:g}s); it was cancelled",
                    endpoint=self._endpoint_id,
                    job_id=status.job_id,
                    state=status.state,
                    phase=phase,
                )
            await asyncio.sleep(min(backoff.next_s(), deadline - now))
            try:
                fresh = await self.status(status.job_id)
            except AuthError:
                raise
            except EndpointError as exc:
                if exc.status_code in (429, 503):
                    continue  # overload: the governors already slowed down; poll again later
                errors += 1
                if errors >= self._max_poll_errors:
                    raise
                continue
            errors = 0
            if fresh.state is not status.state:
                backoff.reset()
            status = fresh
        return status
