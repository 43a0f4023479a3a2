"""`JobClient`: submit, poll and cancel jobs on one serverless endpoint, governed and cancellation-safe."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import random
import re
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from aiogovernor._attempt import Attempts
from aiogovernor._clock import Clock, loop_time
from aiogovernor._governor import Governor, Permit
from aiogovernor._http import retry_after_header
from aiogovernor._retry import Retry
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_float, check_int
from aiogovernor.limits import AIMD, Fixed

from ._backoff import PollBackoff
from ._protocol import RunPodProtocol, ServerlessProtocol
from ._secret import Secret
from ._states import (
    AuthError,
    EndpointError,
    EndpointHealth,
    Fault,
    JobClassifier,
    JobExpired,
    JobFailed,
    JobState,
    JobStatus,
    JobTimeout,
    default_classify_job,
)

if TYPE_CHECKING:
    import httpx

__all__ = ["JobClient", "JobClientStats", "require_asyncio"]

logger = logging.getLogger("aiogovernor.dispatch")

T = TypeVar("T")


# An endpoint id goes into URL paths as it is: letters, digits, ".", "_", "-" and "~"
# (RFC 3986's unreserved set), starting with a letter or digit (so never "." or "..").
_ENDPOINT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._~-]*")
_MAX_JOB_ID = 512

# A lane's retries end at its deadline (the queue timeout, the cancel timeout), not after a count.
_UNTIL_DEADLINE = sys.maxsize

# Cancels are retried quickly (they free a GPU), each wait drawn by `Retry`, until
# ``cancel_timeout_s`` ends them. Every failure is worth another try: a cancel's 429 is an
# error, not an overload, so no Retry-After ever pauses the cancels' lane.
_CANCEL_RETRY = Retry(
    attempts=_UNTIL_DEADLINE,
    base_delay_s=0.05,
    max_delay_s=1.0,
    multiplier=1.5,
    retry_on=frozenset({Outcome.ERROR}),
    budget_ratio=None,
)

# The cancels' lane counts cancels in flight and holds none back: no pause, no rate
# ceiling, and a limit far above the cancels any run makes at once.
_CANCELS_AT_ONCE = 1 << 20


def require_asyncio(what: str) -> None:
    """Raise one clear error when ``what`` is called outside a running asyncio loop (trio, no loop).

    Dispatch's cancellation safety is built on asyncio tasks and `asyncio.shield`:
    under trio it would fail deep inside trio with a confusing error instead.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            f"{what} must run on an asyncio event loop: aiogovernor.dispatch supports asyncio only "
            "(not trio); run it under asyncio.run(...)"
        ) from None


def _path_job_id(job_id: str) -> str:
    """A job id as one URL path segment: percent-quoted, never "." or ".." (which would move the path)."""
    return quote(job_id, safe="")


def _bad_job_id(job_id: object) -> str | None:
    """Why ``job_id`` cannot be a job id the endpoint gave us, or None when it can."""
    if not isinstance(job_id, str) or not job_id:
        return f"no job id (got {job_id!r})"
    if job_id in (".", "..") or len(job_id) > _MAX_JOB_ID or not job_id.isprintable():
        return f"an unusable job id {job_id[:40]!r}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class JobClientStats:
    """Counters of one `JobClient`, from `JobClient.stats`.

    Attributes:
        submitted: Jobs the endpoint accepted.
        completed: Jobs that ended ``COMPLETED``.
        failed: Jobs that ended otherwise (failed, timed out, expired, ...), both kinds.
        trial_failures: Of those, the ones the job classifier put on the trial
            (`Fault.TRIAL`): never retried, never counted against the endpoint.
        overloaded: 429 answers met (each retried, never ending a job by itself).
        cancels_sent: Cancel calls made for jobs the caller gave up on.
        cancel_failures: Cancel calls that did not get through in ``cancel_timeout_s``
            (those jobs may still be running remotely).
    """

    submitted: int
    completed: int
    failed: int
    trial_failures: int
    overloaded: int
    cancels_sent: int
    cancel_failures: int


class JobClientClosed(RuntimeError):
    """A call on a `JobClient` that is closed (or closing); raised to callers as `RuntimeError`."""


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


class JobClient:
    """Runs jobs on one serverless endpoint (RunPod's API by default).

    An endpoint's work goes through separate lanes, so that one kind of refusal
    never stalls another:

    - **jobs**: `governor` bounds the jobs in flight (an `AIMD` by default, which
      `EndpointPool` seeds from ``/health``); infrastructure failures are its
      errors. For a GPU worker that runs several jobs at once (a concurrency
      setting), pass ``governor=Governor(f"dispatch:{endpoint_id}")``: the
      library's default policy reads the jobs' latency, which rises past the
      GPU's knee long before anything refuses a job, and settles there;
    - **submits**: `submit_governor` bounds ``/run`` calls. A 429 on submit
      (the endpoint's queue is full) is an overload of this lane and of the
      job governor, and its Retry-After pauses submits only;
    - **polls**: `request_governor` bounds ``/status`` and ``/health`` calls, in
      concurrency and, with ``max_per_second``, in rate (the status budget); a
      429 on a poll pauses polls only;
    - **cancels** go out on their own: no pause and no rate ceiling can hold
      a cancel back (their own governor only counts them); each is retried
      until ``cancel_timeout_s``.

    Every call on these lanes runs through the library's one attempt loop
    (`aiogovernor.Retry` caps and jitters each Retry-After and draws each
    backoff); the status polls of one job follow their own schedule, not a retry's.

    A 429 is retried, never the end of a job; several 429s within
    ``overload_debounce_s`` count as one congestion event.

    `run` submits, polls with jittered backoff until a terminal state, and
    cancels the remote job whenever it stops caring before that: the caller
    was cancelled or timed out, the queue wait or execution deadline passed,
    polling failed. The cancel call is shielded from the caller's
    cancellation and bounded by ``cancel_timeout_s``; a task that was
    cancelled always ends cancelled, whatever the cancel call met.

    Each HTTP call has a total deadline of ``request_timeout_s``, from the
    first byte sent to the last byte read (a server dribbling its answer
    cannot stretch it). An answer that cannot be read (not JSON, no job id,
    an unknown status) raises `EndpointError` naming the endpoint and the
    call; a submit answer that names its job but is otherwise unreadable
    cancels that job first.

    A job's final status is judged by ``classify_job`` (`default_classify_job`):
    a failure of the trial itself (its handler raised) raises `JobFailed` with
    ``fault=Fault.TRIAL`` and does not count against the endpoint's governor;
    an infrastructure failure (``TIMED_OUT``, a lost job, ...) raises with
    ``fault=Fault.ENDPOINT`` and counts as an error of the job governor.

    The API key is sent by an ``httpx.Auth`` that reads it as each request
    goes out: it never appears in a repr, log line, error message or
    traceback local. A 401 or 403 (a wrong key, or none) raises `AuthError`.

    Args:
        endpoint_id: The endpoint's id (the ``{endpoint_id}`` in the paths):
            letters, digits, ``.``, ``_``, ``-``, ``~``, starting with a letter or digit.
        api_key: The key; None reads the protocol's environment variable
            (``RUNPOD_API_KEY``). Required when the protocol requires one.
        base_url: Scheme and host of the API.
        protocol: Paths and parsing; `RunPodProtocol` by default.
        http: An ``httpx.AsyncClient`` to share; by default the client makes
            (and closes) its own.
        governor: Bounds jobs in flight; by default an `AIMD` up to ``max_jobs``.
        submit_governor: Bounds submits; by default an `AIMD` from 8 up to 64 at once.
        request_governor: Bounds status polls and health reads; by default an
            `AIMD` with the ``max_per_second`` ceiling.
        max_jobs: Ceiling of the default job governor.
        max_per_second: Rate ceiling of status polls and health reads (None: none).
        requests_per_s: Deprecated spelling of ``max_per_second``.
        classify_job: Says whose failure a job's final status is (see `Fault`).
        queue_timeout_s: The longest a job may wait for a worker (including
            time spent retrying 429s at submit) before it is cancelled.
        execution_timeout_s: The longest a job may run once started.
        request_timeout_s: Total deadline of each HTTP call.
        cancel_timeout_s: The most time spent trying to cancel a job.
        poll_interval_s: The first delay between status polls.
        max_poll_interval_s: The largest delay between status polls.
        overload_debounce_s: 429s closer together than this count as one overload.
        max_poll_errors: Consecutive failed polls (transport errors, 5xx,
            unreadable answers) before the job is given up (and cancelled).
        clock: Seconds as a float for deadlines; defaults to the loop's time.
        seed: Seeds the polling and retry jitter, for reproducible runs.
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
        submit_governor: Governor | None = None,
        request_governor: Governor | None = None,
        max_jobs: int = 100,
        max_per_second: float | None = None,
        requests_per_s: float | None = None,
        classify_job: JobClassifier | None = None,
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
        if not isinstance(endpoint_id, str) or not _ENDPOINT_ID.fullmatch(endpoint_id):
            raise ValueError(
                "endpoint_id must be letters, digits, '.', '_', '-' or '~', starting with a letter "
                f"or digit, got {endpoint_id!r}"
            )
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
        for name, gov in (
            ("governor", governor),
            ("submit_governor", submit_governor),
            ("request_governor", request_governor),
        ):
            if gov is not None and not isinstance(gov, Governor):
                raise TypeError(f"{name} must be a Governor, got {gov!r}")
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
        if classify_job is not None and not callable(classify_job):
            raise TypeError(f"classify_job must be callable, got {classify_job!r}")
        check_int("max_jobs", max_jobs, low=1)
        if requests_per_s is not None:
            warnings.warn(
                "requests_per_s is deprecated: use max_per_second",
                DeprecationWarning,
                stacklevel=2,
            )
            if max_per_second is not None:
                raise TypeError("pass max_per_second only (requests_per_s is its deprecated spelling)")
            check_float("requests_per_s", requests_per_s, low=0.0, low_open=True)
            max_per_second = requests_per_s
        if max_per_second is not None:
            check_float("max_per_second", max_per_second, low=0.0, low_open=True)
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
        self._api_key = None if api_key is None else Secret(api_key)
        self._auth: httpx.Auth | None = None
        self._base_url = base_url.rstrip("/")
        self._protocol = protocol
        self._classify_job: JobClassifier = classify_job or default_classify_job
        self._http = http
        self._owns_http = http is None
        # The tasks running a job (`_run`), so that closing can cancel them first (each
        # cancels its remote job through the still open HTTP client), then close that client.
        self._runs: set[asyncio.Task[Any]] = set()
        self._cancelled_by_close: set[asyncio.Task[Any]] = set()
        self._drained: asyncio.Event | None = None  # set when the last run leaves, once closing
        self._closing = False  # no new run or call
        self._closed = False  # the HTTP client is closed: no new one is ever made
        # AIMD reads refusals only: a job queued behind busy single-job workers is not a
        # sign of too many jobs (a short queue hides the polling delay between one job's
        # end and the next one's start). A GPU worker running several jobs at once wants
        # a latency-aware governor instead (see the class docstring).
        # The governors made here are closed (their state saved) by `aclose`.
        self._made = [g is None for g in (governor, submit_governor, request_governor)]
        self._governor = governor or Governor(
            f"dispatch:{endpoint_id}", AIMD(min_limit=1, max_limit=max_jobs, initial_limit=min(4, max_jobs))
        )
        self._submits = submit_governor or Governor(
            f"dispatch:{endpoint_id}:submit", AIMD(min_limit=1, max_limit=64, initial_limit=8)
        )
        self._requests = request_governor or Governor(
            f"dispatch:{endpoint_id}:api",
            AIMD(min_limit=1, max_limit=256, initial_limit=32),
            max_per_second=max_per_second,
            burst=max(1, math.ceil(max_per_second or 1)),
        )
        self._cancels = Governor(f"dispatch:{endpoint_id}:cancel", Fixed(_CANCELS_AT_ONCE), store=None)
        self._clock: Clock = clock or loop_time
        self._rng = random.Random(seed)
        # A 429 on submit is retried until the queue deadline, the waits drawn by `Retry`
        # from the polling interval up (or the capped, jittered Retry-After).
        self._submit_retry = Retry(
            attempts=_UNTIL_DEADLINE,
            base_delay_s=self._poll_interval_s,
            max_delay_s=self._max_poll_interval_s,
            multiplier=1.5,
            budget_ratio=None,
        )
        self._polls = _LaneAttempts(self)
        self._last_overload: dict[int, float] = {}
        self._counts = dict.fromkeys(
            (
                "submitted",
                "completed",
                "failed",
                "trial_failures",
                "overloaded",
                "cancels_sent",
                "cancel_failures",
            ),
            0,
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
    def submit_governor(self) -> Governor:
        """The governor bounding submits (``/run``, ``/runsync``) to this endpoint."""
        return self._submits

    @property
    def request_governor(self) -> Governor:
        """The governor bounding status polls and health reads (never cancels) to this endpoint."""
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
        """Close the client: cancel the runs in flight, then close the HTTP client and the governors.

        Each `run` still in flight is cancelled: its remote job is cancelled (as
        when its caller gives up, bounded by ``cancel_timeout_s``) and it raises
        `RuntimeError`. Then the HTTP client (if this client made it) and the
        governors this client made (their state saved) are closed. A closed
        client takes no new call (`RuntimeError`). Closing twice is fine.
        """
        self._closing = True
        try:
            if self._runs:
                for task in self._runs - self._cancelled_by_close:
                    self._cancelled_by_close.add(task)
                    task.cancel()
                if self._drained is None:
                    self._drained = asyncio.Event()
                await self._drained.wait()
        finally:
            await self._close_resources()

    async def _close_resources(self) -> None:
        self._closed = True
        try:
            if self._owns_http and self._http is not None:
                await self._http.aclose()
                self._http = None
        finally:
            governors = (self._governor, self._submits, self._requests)
            for made, gov in zip(self._made, governors, strict=True):
                if made:
                    await gov.aclose()  # shielded, and never raises for a store failure

    def _check_open(self) -> None:
        if self._closing:
            raise JobClientClosed(f"JobClient {self._endpoint_id!r} is closed")

    def _client(self) -> httpx.AsyncClient:
        if self._closed:
            # Never a new connection pool after the close: nobody would close it.
            raise JobClientClosed(f"JobClient {self._endpoint_id!r} is closed")
        if self._http is None:
            import httpx

            from aiogovernor._shards import ShardedTransport

            # The governors bound the calls in flight; a connection pool smaller than
            # they allow would turn their headroom into PoolTimeouts (httpx #1171), and
            # one large pool costs the client CPU per call that grows with the square
            # of its size: a connection per call in flight, in pools of 8.
            self._http = httpx.AsyncClient(transport=ShardedTransport())
        if self._auth is None and self._api_key is not None:
            from ._auth import SecretAuth

            self._auth = SecretAuth(self._api_key, self._protocol)
        return self._http

    # -- one API call ---------------------------------------------------------

    def _fail(self, call: str, what: str, status_code: int | None = None) -> EndpointError:
        return EndpointError(
            f"{call} on endpoint {self._endpoint_id!r}: {what}",
            endpoint=self._endpoint_id,
            status_code=status_code,
            call=call,
        )

    async def _send(self, call: str, method: str, path: str, body: Any = None) -> httpx.Response:
        """One HTTP call, no governing, within a total deadline; failures become `EndpointError`.

        The error is raised outside the ``except`` blocks, so that it carries no
        context from inside httpx (whose frames hold the request's headers).
        """
        import httpx

        failure: str | None = None
        response: httpx.Response | None = None
        http = self._client()
        try:
            # httpx's timeout bounds each read; this bounds the whole call (a slow-loris answer).
            async with asyncio.timeout(self._request_timeout_s):
                response = await http.request(
                    method,
                    self._base_url + path,
                    json=body,
                    auth=self._auth if self._auth is not None else httpx.USE_CLIENT_DEFAULT,
                    timeout=self._request_timeout_s,
                )
        except (TimeoutError, httpx.TimeoutException):
            failure = f"{method} {path} timed out after {self._request_timeout_s:g}s"
        except httpx.TransportError as exc:
            # The exception's text names the URL and the cause, never the headers.
            failure = f"{method} {path} failed: {type(exc).__name__}: {exc}"
        if response is None:
            raise self._fail(call, failure or f"{method} {path} got no answer")
        if response.status_code in (401, 403):
            refused = (
                "refused the API key" if self._api_key is not None else "needs an API key (none was sent)"
            )
            raise AuthError(
                f"{call} on endpoint {self._endpoint_id!r}: the endpoint {refused} "
                f"(HTTP {response.status_code})",
                endpoint=self._endpoint_id,
                status_code=response.status_code,
                call=call,
            )
        return response

    def _overloaded(self, governor: Governor) -> Outcome:
        """Count a 429/503; the governor samples one overload per debounce interval and lane."""
        self._counts["overloaded"] += 1
        now = self._clock()
        lane = id(governor)
        if now - self._last_overload.get(lane, -math.inf) >= self._debounce_s:
            self._last_overload[lane] = now
            return Outcome.OVERLOAD
        return Outcome.IGNORED  # the same congestion event, already answered (its pause still holds)

    async def _poll_call(self, call: str, path: str) -> httpx.Response:
        """One status or health read, through the polls' governor (one attempt: polling is the retry)."""
        return await self._polls.run(self._requests, lambda permit, attempt: self._send(call, "GET", path))

    def _decode(self, response: httpx.Response, call: str) -> Mapping[str, Any]:
        """The answer's JSON object, or an `EndpointError` naming the endpoint and the call."""
        try:
            data = response.json()
        except ValueError:
            data = _NOT_JSON
        if data is _NOT_JSON:
            raise self._fail(
                call, f"the answer (HTTP {response.status_code}) is not JSON", response.status_code
            )
        if not isinstance(data, Mapping):
            raise self._fail(
                call,
                f"the answer (HTTP {response.status_code}) is a JSON {type(data).__name__}, not an object",
                response.status_code,
            )
        return data

    def _status_from(self, data: Mapping[str, Any], call: str, status_code: int) -> JobStatus:
        """Read a job status answer; anything unreadable is an `EndpointError`."""
        problem: str | None = None
        status: JobStatus | None = None
        try:
            status = self._protocol.parse_status(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problem = f"unreadable job status: {exc}"
        if status is not None:
            problem = _bad_job_id(status.job_id)
        if problem is not None or status is None:
            raise self._fail(call, problem or "unreadable job status", status_code)
        return status

    # -- the API ----------------------------------------------------------------

    async def health(self) -> EndpointHealth:
        """Read ``/health``: workers and queue.

        Raises:
            AuthError: The endpoint refused the key.
            EndpointError: When the endpoint is unreachable, answers an error or garbage.
        """
        require_asyncio("JobClient.health")
        self._check_open()
        response = await self._poll_call("health", self._protocol.health_path(self._endpoint_id))
        if response.status_code != 200:
            raise self._fail("health", f"HTTP {response.status_code}", response.status_code)
        data = self._decode(response, "health")
        try:
            health = self._protocol.parse_health(data)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            problem = f"unreadable health answer: {exc}"
        else:
            return health
        raise self._fail("health", problem, response.status_code)

    async def status(self, job_id: str) -> JobStatus:
        """Read a job's status once; a 404 reads as ``EXPIRED``.

        Raises:
            AuthError: The endpoint refused the key.
            EndpointError: When the endpoint is unreachable, overloaded, answers an error or garbage.
        """
        require_asyncio("JobClient.status")
        self._check_open()
        path = self._protocol.status_path(self._endpoint_id, _path_job_id(job_id))
        response = await self._poll_call("status", path)
        if response.status_code == 404:
            return JobStatus(job_id=job_id, state=JobState.EXPIRED, error="unknown job or result expired")
        if response.status_code != 200:
            raise self._fail("status", f"job {job_id}: HTTP {response.status_code}", response.status_code)
        return self._status_from(self._decode(response, "status"), "status", response.status_code)

    async def cancel(self, job_id: str) -> JobStatus | None:
        """Cancel a job; shielded from the caller's cancellation and bounded by ``cancel_timeout_s``.

        Cancels have their own lane: no governor, pause or rate ceiling holds
        them back. This never raises (but `CancelledError` when the caller is
        cancelled meanwhile): a cancel that fails is logged.

        Returns:
            The job's status after the cancel, or None if the cancel was not
            confirmed (logged as a warning; the job may still run).
        """
        require_asyncio("JobClient.cancel")
        return await _await_shielded(asyncio.ensure_future(self._cancel(job_id)))

    async def _cancel(self, job_id: str) -> JobStatus | None:
        self._counts["cancels_sent"] += 1
        path = self._protocol.cancel_path(self._endpoint_id, _path_job_id(job_id))
        attempts = _CancelAttempts(self)
        reason = "timed out"
        try:
            async with asyncio.timeout(self._cancel_timeout_s):
                response = await attempts.run(
                    self._cancels, lambda permit, attempt: self._send("cancel", "POST", path)
                )
            if response.status_code == 404:
                return JobStatus(job_id=job_id, state=JobState.EXPIRED)
            # Accepted (200); an answer that says nothing readable about the job is a failure.
            return self._status_from(self._decode(response, "cancel"), "cancel", 200)
        except TimeoutError:
            reason = attempts.reason
        except EndpointError as exc:  # a refused key, or an unreadable answer: trying again won't help
            reason = str(exc)
        except Exception as exc:  # a cancel never raises into the code cleaning up after a job
            reason = f"{type(exc).__name__}: {exc}"
        self._counts["cancel_failures"] += 1
        logger.warning(
            "could not confirm the cancel of job %s on endpoint %r within %gs (%s): it may keep running",
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
            AuthError: The endpoint refused the key.
            EndpointError: When the endpoint is unreachable or answers an error or garbage
                (a job the garbage names is cancelled first).
        """
        require_asyncio("JobClient.submit")
        self._check_open()
        return await self._submit(payload, sync, self._clock() + self._queue_timeout_s, None)

    async def _submit(
        self, payload: Any, sync: bool, deadline: float, job_permit: Permit | None
    ) -> JobStatus:
        path = self._protocol.run_path(self._endpoint_id, sync=sync)
        body = self._protocol.run_body(payload)

        async def post(permit: Permit, attempt: int) -> httpx.Response:
            sent = asyncio.ensure_future(self._send("submit", "POST", path, body))
            try:
                return await _await_shielded(sent)
            except asyncio.CancelledError:
                await self._cancel_created(sent)
                raise

        response = await _SubmitAttempts(self, deadline, job_permit).run(self._submits, post)
        if response.status_code == 429:  # the last one: the queue deadline passed
            raise JobTimeout(
                f"endpoint {self._endpoint_id!r} kept refusing the job (429) for {self._queue_timeout_s:g}s",
                endpoint=self._endpoint_id,
                job_id=None,
                state=None,
                phase="queue",
            )
        if response.status_code not in (200, 201, 202):
            raise self._fail("submit", f"HTTP {response.status_code}", response.status_code)
        self._counts["submitted"] += 1
        return await self._read_created(response)

    async def _read_created(self, response: httpx.Response) -> JobStatus:
        """Read a submit's answer; if it names its job but is otherwise unreadable, cancel that job."""
        data = self._decode(response, "submit")  # not JSON: no id to cancel (the window left open)
        try:
            return self._status_from(data, "submit", response.status_code)
        except EndpointError:
            job_id = data.get("id")
            if _bad_job_id(job_id) is None:
                assert isinstance(job_id, str)
                await self.cancel(job_id)  # the job exists; nobody would ever poll it
            raise

    async def _cancel_created(self, post: asyncio.Future[httpx.Response]) -> None:
        """The caller was cancelled while a submit was out: cancel the job it created, if any."""
        if post.cancelled() or post.exception() is not None:
            return
        response = post.result()
        if response.status_code not in (200, 201, 202):
            return
        try:
            data = self._decode(response, "submit")
        except EndpointError:
            return
        job_id = data.get("id")
        if _bad_job_id(job_id) is not None:
            return
        with contextlib.suppress(EndpointError):
            if self._status_from(data, "submit", response.status_code).state.terminal:
                return
        assert isinstance(job_id, str)
        await self.cancel(job_id)

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
            JobFailed: The job ended ``FAILED``, ``CANCELLED`` or ``TIMED_OUT``, or the
                job classifier judged its output a failure; ``fault`` says whose.
            JobExpired: The endpoint forgot the job (404) before it ended.
            JobTimeout: Queue wait or execution passed its deadline (the job was cancelled).
            AuthError: The endpoint refused the key.
            EndpointError: The endpoint is unreachable or answers errors or garbage.
            RuntimeError: Not called from an asyncio event loop, or the client is
                closed (or was closed while the job ran: the job was cancelled).
        """
        require_asyncio("JobClient.run")
        self._check_open()
        async with self._governor as permit:
            return await self._run(payload, sync, permit)

    async def _run(self, payload: Any, sync: bool, permit: Permit) -> JobStatus:
        """`_run_job`, as a run that closing the client cancels (its caller then gets `RuntimeError`)."""
        self._check_open()  # it may have queued for its permit while the client closed
        task = asyncio.current_task()
        assert task is not None  # require_asyncio: a task runs this
        self._runs.add(task)
        try:
            return await self._run_job(payload, sync, permit)
        except asyncio.CancelledError:
            # Cancelled by the close alone (the asyncio.timeout way: nobody else asked): say why.
            if task in self._cancelled_by_close and task.uncancel() == 0:
                if permit.outcome is None:
                    permit.ignore()  # the endpoint did nothing wrong
                raise JobClientClosed(
                    f"JobClient {self._endpoint_id!r} was closed while the job ran; the job was cancelled"
                ) from None
            raise
        finally:
            self._runs.discard(task)
            self._cancelled_by_close.discard(task)
            if not self._runs and self._drained is not None:
                self._drained.set()

    async def _run_job(self, payload: Any, sync: bool, permit: Permit) -> JobStatus:
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
        except AuthError:
            self._counts["failed"] += 1
            permit.ignore()  # a refused key says nothing about the endpoint's capacity
            raise
        except Exception:
            self._counts["failed"] += 1
            permit.error()
            raise
        finally:
            if job_id is not None and (status is None or not status.state.terminal):
                await self.cancel(job_id)
        fault = self._classify_job(status)
        if not isinstance(fault, Fault):
            raise TypeError(f"classify_job must return a Fault, got {fault!r}")
        if status.state is JobState.COMPLETED and fault is Fault.NONE:
            self._counts["completed"] += 1
            return status
        if fault is Fault.NONE:
            fault = Fault.ENDPOINT  # a job that did not complete produced no result
        self._counts["failed"] += 1
        if fault is Fault.TRIAL:
            self._counts["trial_failures"] += 1
            permit.ignore()  # the endpoint did its work: not its failure
        else:
            permit.error()
        if status.state is JobState.EXPIRED:
            raise JobExpired(
                f"job {status.job_id} on endpoint {self._endpoint_id!r} is unknown or its result expired",
                endpoint=self._endpoint_id,
                job_id=status.job_id,
                state=status.state,
                fault=fault,
            )
        reason = status.error
        if reason is None and status.state is JobState.COMPLETED:
            reason = f"the job classifier rejected its output {_short(status.output)}"
        raise JobFailed(
            f"job {status.job_id} on endpoint {self._endpoint_id!r} ended {status.state.value}"
            + (f": {reason}" if reason else ""),
            endpoint=self._endpoint_id,
            job_id=status.job_id,
            state=status.state,
            fault=fault,
            error=status.error,
            output=status.output,
        )

    async def _follow(self, status: JobStatus, submitted_at: float) -> JobStatus:
        """Poll until a terminal state, enforcing the queue and execution deadlines.

        Polls are not retries: each is the next planned look at a running job,
        on `PollBackoff`'s schedule, so a failed poll (a 429, a 5xx) is simply
        followed by the next one; only ``max_poll_errors`` in a row give up.
        """
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


_NOT_JSON = object()


class _LaneAttempts(Attempts["httpx.Response"]):
    """An API call on a governed lane (polls; submits below): the shared attempt loop's hooks.

    A 429 or 503 is an overload of the lane's governor (debounced into one
    congestion event per ``overload_debounce_s``) whose Retry-After pauses that
    lane only, capped and jittered by `Retry`; another 5xx is an error.
    Without a retry policy (polls) each call is one attempt.
    """

    __slots__ = ("_client",)

    scoped = True

    def __init__(self, client: JobClient, *, retry: Retry | None = None) -> None:
        super().__init__(retry=retry, rng=client._rng)
        self._client = client

    def classify(self, governor: Governor, result: httpx.Response | BaseException) -> Outcome:
        if isinstance(result, BaseException):
            return super().classify(governor, result)
        code = result.status_code
        if code == 429 or code == 503:
            return Outcome.OVERLOAD
        return Outcome.ERROR if code >= 500 else Outcome.OK

    def retry_after_s(self, result: httpx.Response | BaseException) -> float | None:
        if isinstance(result, BaseException):
            return None
        # An HTTP-date is read against the server's own Date, as every HTTP integration reads it.
        return retry_after_header(result.headers.get("Retry-After"), result.headers.get("Date"))

    def sample(self, governor: Governor, result: httpx.Response | BaseException, outcome: Outcome) -> Outcome:
        if outcome is Outcome.OVERLOAD and not isinstance(result, BaseException):
            return self._client._overloaded(governor)
        return outcome


class _SubmitAttempts(_LaneAttempts):
    """One job's submit: a 429 (the endpoint's queue is full) is retried until the queue deadline.

    The deadline also bounds each wait for the submits' lane (a long Retry-After
    pause, or the lane full), and a sampled 429 is an overload of the job's own
    permit too (too many jobs). A 503 pauses the lane but is not retried.
    """

    __slots__ = ("_deadline", "_job_permit")

    scoped = False

    def __init__(self, client: JobClient, deadline: float, job_permit: Permit | None) -> None:
        super().__init__(client, retry=client._submit_retry)
        self._deadline = deadline
        self._job_permit = job_permit

    def classify(self, governor: Governor, result: httpx.Response | BaseException) -> Outcome:
        if isinstance(result, EndpointError):
            return Outcome.ERROR
        return super().classify(governor, result)

    def retryable(self, result: httpx.Response | BaseException) -> bool:
        if isinstance(result, BaseException) or result.status_code != 429:
            return False
        client = self._client
        # A lane paused (this 429's Retry-After) past the deadline could only time out: stop now.
        return client._clock() + client._submits.paused_for_s() < self._deadline

    def sample(self, governor: Governor, result: httpx.Response | BaseException, outcome: Outcome) -> Outcome:
        recorded = super().sample(governor, result, outcome)
        job_permit = self._job_permit
        if (
            recorded is Outcome.OVERLOAD
            and job_permit is not None
            and not isinstance(result, BaseException)
            and result.status_code == 429
        ):
            job_permit.overload()  # the endpoint's queue is full: too many jobs
        return recorded

    async def acquire(self, governor: Governor) -> Permit:
        client = self._client
        try:
            return await governor.acquire(timeout_s=max(0.0, self._deadline - client._clock()))
        except TimeoutError:
            raise JobTimeout(
                f"endpoint {client.endpoint_id!r} did not take the job within {client._queue_timeout_s:g}s "
                "(its submits were paused by a Retry-After, or full)",
                endpoint=client.endpoint_id,
                job_id=None,
                state=None,
                phase="queue",
            ) from None

    async def wait(self, delay_s: float) -> None:
        await asyncio.sleep(min(delay_s, max(0.0, self._deadline - self._client._clock())))


class _CancelAttempts(Attempts["httpx.Response"]):
    """A cancel call, retried on every failure but a refused key until ``cancel_timeout_s``.

    Nothing here pauses the cancels' lane: a cancel's 429 is an error, and its
    Retry-After is not read. `reason` keeps why the last attempt failed.
    """

    __slots__ = ("reason",)

    scoped = False

    def __init__(self, client: JobClient) -> None:
        super().__init__(retry=_CANCEL_RETRY, rng=client._rng)
        self.reason = "timed out"

    def classify(self, governor: Governor, result: httpx.Response | BaseException) -> Outcome:
        if isinstance(result, BaseException):
            self.reason = str(result) if isinstance(result, EndpointError) else type(result).__name__
            return Outcome.ERROR if isinstance(result, Exception) else Outcome.IGNORED
        if result.status_code in (200, 404):
            return Outcome.OK
        self.reason = f"HTTP {result.status_code}"
        return Outcome.ERROR

    def retry_after_s(self, result: httpx.Response | BaseException) -> float | None:
        return None

    def retryable(self, result: httpx.Response | BaseException) -> bool:
        # Transport errors, timeouts and error answers pass; a refused key does not.
        if isinstance(result, BaseException):
            return isinstance(result, EndpointError) and not isinstance(result, AuthError)
        return True


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
