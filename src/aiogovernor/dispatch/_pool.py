"""`EndpointPool`: trials spread by free capacity, with breakers, failover and a local fallback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import sys
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiogovernor._attempt import Attempts
from aiogovernor._governor import Governor, Permit
from aiogovernor._retry import Retry
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_float, check_int
from aiogovernor.limits import Fixed

from ._breaker import BreakerState, CircuitBreaker
from ._client import JobClient, JobClientClosed, require_asyncio
from ._progress import EndpointSnapshot, PoolSnapshot, ProgressTracker, StudyProgress
from ._states import AuthError, EndpointError, Fault, JobError, JobStatus, TrialFailed

__all__ = ["DispatchResult", "EndpointPool", "LocalFallback"]

logger = logging.getLogger("aiogovernor.dispatch")

LocalFallback = Callable[[Any], Awaitable[Any]]
"""An async callable running a trial's payload locally and returning its output."""

LOCAL = "local"


class _SuccessRate:
    """An endpoint's recent infrastructure success rate: the last ``size`` attempts, with a
    prior of two successes (so that a new endpoint, or one with a single failure, keeps its share)."""

    __slots__ = ("_outcomes",)

    def __init__(self, size: int) -> None:
        self._outcomes: deque[bool] = deque(maxlen=size)

    def record(self, ok: bool) -> None:
        self._outcomes.append(ok)

    @property
    def rate(self) -> float:
        return (sum(self._outcomes) + 2) / (len(self._outcomes) + 2)


@dataclass(frozen=True, slots=True, kw_only=True)
class DispatchResult:
    """A trial's result, from `EndpointPool.run`.

    Attributes:
        output: The job's output (or the local fallback's return value).
        endpoint: The endpoint that produced it, or ``"local"``.
        job_id: The remote job's id (None when local).
        attempts: Runs it took, the successful one included.
        errors: What each earlier failed attempt raised.
        duration_s: Time from the first start to the result.
    """

    output: Any
    endpoint: str
    job_id: str | None
    attempts: int
    errors: tuple[BaseException, ...]
    duration_s: float


class EndpointPool:
    """Several endpoints, each with its own governor and circuit breaker, and an optional local fallback.

    `run` sends a trial to the endpoint with the most free capacity among
    those whose breaker lets calls through, preferring endpoints the trial
    has not failed on. An endpoint's share is its governor's limit weighed by
    the square of its recent success rate (over the last ``success_window``
    attempts); its free capacity is that share minus the work in flight and
    queued there. An endpoint that loses 40 % of its jobs holds about a third
    of its limit, so trials flow to the endpoints that complete them.

    Failures are told apart (see `Fault`):

    - **the endpoint's** (5xx, connection errors, unreadable answers,
      ``TIMED_OUT``, a job lost with its worker, a deadline passed): counts
      against that endpoint's breaker and success rate and fails over to
      another endpoint, up to ``max_attempts`` remote runs; then, or when no
      endpoint is available, the local fallback runs it, at most
      ``local_limit`` at once. A trial that fails everywhere raises
      `TrialFailed` with every attempt's error;
    - **the trial's own** (its handler raised, its output was judged a
      failure): raises `TrialFailed` with ``fault=Fault.TRIAL`` at once, not
      retried anywhere, not counted against the endpoint;
    - **a refused key** (401/403, or no key where one is needed): the endpoint
      is out of the pool for good (never retried, never a breaker failure);
      the trial moves to another endpoint, and when no endpoint is left that
      accepts the key, `run` raises that `AuthError` (also with a local
      fallback: a mistyped key must not quietly turn a remote study into a
      local one).

    Every remote job a trial gives up on is cancelled (see `JobClient.run`).

    Use it as an async context manager: entering reads each endpoint's
    ``/health`` and starts its governor from the number of workers it
    reports (times ``health_limit_factor``), and raises `AuthError` at once
    when every endpoint refuses the key; leaving closes the clients.

    Args:
        clients: One `JobClient` per endpoint; ids must be distinct. May be
            empty when there is a ``local_fallback`` (everything runs here).
        failure_threshold: Consecutive failures that open an endpoint's breaker.
        reset_timeout_s: How long a breaker stays open before half-open probes.
        half_open_max_calls: Probe trials at once on a half-open endpoint.
        max_attempts: Remote runs per trial before giving up (or going local).
        local_fallback: Runs a payload locally when remote attempts are used
            up or no endpoint is available.
        local_limit: Local runs at once.
        health_limit_factor: An endpoint's governor starts at its ``/health``
            worker count times this (>= 1): a short queue on the endpoint hides
            the polling delay between one job's end and the next one's start.
        success_window: Recent attempts per endpoint its success rate is measured over.
        progress: A tracker to report to; by default the pool makes one.
        on_progress: Called with a `StudyProgress` after every change (when the
            pool makes the tracker); any `aiogovernor.ProgressCallback` will do.
    """

    def __init__(
        self,
        clients: Sequence[JobClient],
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        max_attempts: int = 3,
        local_fallback: LocalFallback | None = None,
        local_limit: int = 1,
        health_limit_factor: float = 2.0,
        success_window: int = 20,
        progress: ProgressTracker | None = None,
        on_progress: Callable[[StudyProgress], object] | None = None,
    ) -> None:
        clients = list(clients) if not isinstance(clients, JobClient) else [clients]
        if not clients and local_fallback is None:
            raise ValueError(
                "clients must name at least one endpoint, or give a local_fallback; the pool is empty"
            )
        for client in clients:
            if not isinstance(client, JobClient):
                raise TypeError(f"clients must be JobClient instances, got {client!r}")
        ids = [c.endpoint_id for c in clients]
        if len(set(ids)) != len(ids) or LOCAL in ids:
            raise ValueError(f"endpoint ids must be distinct and not {LOCAL!r}, got {ids!r}")
        check_int("failure_threshold", failure_threshold, low=1)
        check_float("reset_timeout_s", reset_timeout_s, low=0.0, low_open=True)
        check_int("half_open_max_calls", half_open_max_calls, low=1)
        self._max_attempts = check_int("max_attempts", max_attempts, low=1)
        if local_fallback is not None and not callable(local_fallback):
            raise TypeError(f"local_fallback must be an async callable, got {local_fallback!r}")
        check_int("local_limit", local_limit, low=1)
        self._health_factor = check_float("health_limit_factor", health_limit_factor, low=1.0)
        check_int("success_window", success_window, low=1)
        if progress is not None and not isinstance(progress, ProgressTracker):
            raise TypeError(f"progress must be a ProgressTracker, got {progress!r}")
        if progress is not None and on_progress is not None:
            raise ValueError("pass on_progress to the ProgressTracker you give, not to the pool")
        self._clients = clients
        self._breakers = {
            c.endpoint_id: CircuitBreaker(
                failure_threshold=failure_threshold,
                reset_timeout_s=reset_timeout_s,
                half_open_max_calls=half_open_max_calls,
                name=c.endpoint_id,
                on_change=lambda old, new: self._notify(),
            )
            for c in clients
        }
        self._local_fallback = local_fallback
        self._local = Governor("dispatch:local", Fixed(local_limit)) if local_fallback else None
        self._progress = progress or ProgressTracker(on_change=on_progress)
        if self._progress.capacity is None:
            self._progress.capacity = self.capacity  # the trials' limit is the pool's capacity
        self._local_counts = {"completed": 0, "failed": 0}
        self._changed: asyncio.Event | None = None
        self._success = {c.endpoint_id: _SuccessRate(success_window) for c in clients}
        self._refused: dict[str, AuthError] = {}

    # -- introspection ----------------------------------------------------

    @property
    def clients(self) -> tuple[JobClient, ...]:
        """The endpoints' clients, in the order given."""
        return tuple(self._clients)

    @property
    def progress(self) -> ProgressTracker:
        """The tracker trials are reported to."""
        return self._progress

    @property
    def local_governor(self) -> Governor | None:
        """The governor bounding local fallback runs, if there is a fallback."""
        return self._local

    def breaker(self, endpoint_id: str) -> CircuitBreaker:
        """The circuit breaker of one endpoint."""
        return self._breakers[endpoint_id]

    def success_rate(self, endpoint_id: str) -> float:
        """An endpoint's recent infrastructure success rate, in (0, 1]; its share is weighed by its square."""
        return self._success[endpoint_id].rate

    @property
    def refused(self) -> dict[str, AuthError]:
        """Endpoints that refused the key (endpoint id → the error); they get no more work."""
        return dict(self._refused)

    def _share(self, client: JobClient) -> float:
        """The trials an endpoint should hold: its limit weighed by its success rate, squared.

        Squared, because a failed job costs more than its own slot: its trial
        waits for the failure, then takes a slot elsewhere for the retry. At
        60 % success an endpoint holds 36 % of its limit; at 95 %, 90 %.
        """
        rate = self._success[client.endpoint_id].rate
        return client.governor.limit * rate * rate

    def _usable(self, client: JobClient) -> bool:
        return client.endpoint_id not in self._refused and self._breakers[client.endpoint_id].available()

    def capacity(self) -> int:
        """Trials the pool can run at once now: the shares of endpoints that accept the key
        and whose breaker lets calls through, plus the local fallback's slots."""
        total = sum(max(1, round(self._share(c))) for c in self._clients if self._usable(c))
        return total + (self._local.limit if self._local is not None else 0)

    def _all_refused(self) -> AuthError | None:
        """The first refusal when every endpoint has refused the key (None while one accepts it)."""
        if self._clients and len(self._refused) == len(self._clients):
            first = next(iter(self._refused.values()))
            # A fresh error per raise: one instance raised from many tasks would pile up tracebacks.
            return AuthError(
                f"no endpoint accepts the API key: {first}",
                endpoint=first.endpoint,
                status_code=first.status_code,
                call=first.call,
            )
        return None

    def _refuse(self, client: JobClient, error: AuthError) -> None:
        if client.endpoint_id not in self._refused:
            logger.error("endpoint %r refused the key: it gets no more work (%s)", client.endpoint_id, error)
            self._refused[client.endpoint_id] = error
        self._notify()

    def snapshot(self) -> PoolSnapshot:
        """The pool now: the trials' progress, and each endpoint's breaker, limit and job counts."""
        endpoints = []
        for c in self._clients:
            stats = c.stats()
            endpoints.append(
                EndpointSnapshot(
                    name=c.endpoint_id,
                    breaker=self._breakers[c.endpoint_id].state,
                    limit=c.governor.limit,
                    inflight=c.governor.inflight,
                    waiting=c.governor.waiting,
                    completed=stats.completed,
                    failed=stats.failed,
                    success_rate=self._success[c.endpoint_id].rate,
                    refused=c.endpoint_id in self._refused,
                )
            )
        if self._local is not None:
            endpoints.append(
                EndpointSnapshot(
                    name=LOCAL,
                    breaker=None,
                    limit=self._local.limit,
                    inflight=self._local.inflight,
                    waiting=self._local.waiting,
                    completed=self._local_counts["completed"],
                    failed=self._local_counts["failed"],
                )
            )
        return PoolSnapshot(progress=self._progress.snapshot(), endpoints=tuple(endpoints))

    def __repr__(self) -> str:
        parts = ", ".join(
            f"{c.endpoint_id}:{self._breakers[c.endpoint_id].state.value}:{c.governor.inflight}/{c.governor.limit}"
            for c in self._clients
        )
        return f"<EndpointPool [{parts}]{' +local' if self._local else ''}>"

    # -- lifecycle ----------------------------------------------------------

    async def __aenter__(self) -> EndpointPool:
        try:
            await self.start()
        except BaseException:
            await self.aclose()  # __aexit__ will not run: close the clients here
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Read each endpoint's ``/health`` and start its governor from its worker count.

        An endpoint that does not answer keeps its governor's limit, and the
        failure counts against its breaker. An endpoint that refuses the key
        is out of the pool.

        Raises:
            AuthError: Every endpoint refused the key.
        """
        require_asyncio("EndpointPool.start")
        await asyncio.gather(*(self._seed_limit(c) for c in self._clients))
        refused = self._all_refused()
        if refused is not None:
            raise refused

    async def _seed_limit(self, client: JobClient) -> None:
        try:
            health = await client.health()
        except AuthError as exc:
            self._refuse(client, exc)
            return
        except EndpointError as exc:
            logger.warning("endpoint %r health check failed: %s", client.endpoint_id, exc)
            self._breakers[client.endpoint_id].record_failure()
            return
        if health.workers > 0:
            limit = math.ceil(health.workers * self._health_factor)
            client.governor.reset_limit(limit, reason=f"/health: {health.workers} workers")

    async def aclose(self) -> None:
        """Close every client, and the local fallback's governor (its state is saved)."""
        try:
            for client in self._clients:
                await client.aclose()
        finally:
            if self._local is not None:
                await self._local.aclose()

    # -- running trials -------------------------------------------------------

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def _wait_for_change(self) -> None:
        """Wait until an attempt ends or the first open breaker half-opens."""
        waits = [b.retry_in_s() for b in self._breakers.values() if b.state is BreakerState.OPEN]
        if self._changed is None:
            self._changed = asyncio.Event()
        event = self._changed
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(waits) if waits else None):
                await event.wait()

    def _pick(self, tried: set[str]) -> JobClient | None:
        """The endpoint with the most free capacity (its share, less its work in flight and
        queued) that accepts the key and whose breaker allows a call; untried ones first."""

        def free(c: JobClient) -> float:
            g = c.governor
            return self._share(c) - g.inflight - g.waiting

        candidates = [c for c in self._clients if self._usable(c)]
        fresh = [c for c in candidates if c.endpoint_id not in tried]
        for client in sorted(fresh or candidates, key=free, reverse=True):
            if self._breakers[client.endpoint_id].allow():
                return client
        return None

    async def run(self, payload: Any, *, sync: bool = False) -> DispatchResult:
        """Run one trial: remote with failover, then the local fallback.

        Args:
            payload: The job's input (JSON-serialisable).
            sync: Submit through ``/runsync``.

        Returns:
            The result, with where it ran and how many attempts it took.

        Raises:
            TrialFailed: The trial failed by itself (``fault=Fault.TRIAL``, at
                once), or every attempt failed; ``errors`` holds each one.
            AuthError: No endpoint is left that accepts the key.
            RuntimeError: Not called from an asyncio event loop, or the pool
                was closed while the trial ran (its job was cancelled).
        """
        require_asyncio("EndpointPool.run")
        progress = self._progress
        progress.queued()
        trial = _Failover(self, payload, sync)
        ok: bool | None = None
        errors = trial.errors
        loop = asyncio.get_running_loop()
        try:
            try:
                # `_Failover.choose` names each attempt's governor: the one given here is nominal.
                nominal = self._clients[0].governor if self._clients else self._local
                assert nominal is not None
                status = await trial.run(nominal, trial.call)
            except _GoLocal:
                pass  # nothing remote is available now: run it here
            except AuthError:
                ok = False  # no endpoint is left that accepts the key
                raise
            except Exception as exc:
                if not errors or exc is not errors[-1]:
                    raise  # not an attempt's failure
                if isinstance(exc, JobError) and exc.fault is Fault.TRIAL:
                    ok = False
                    assert trial.client is not None
                    raise TrialFailed(
                        f"trial failed on {trial.client.endpoint_id!r} by itself: {exc}",
                        errors,
                        fault=Fault.TRIAL,
                    ) from None
                # Every remote attempt failed: the local fallback, if any, is next.
            else:
                client = trial.client
                assert client is not None
                ok = True
                return DispatchResult(
                    output=status.output,
                    endpoint=client.endpoint_id,
                    job_id=status.job_id,
                    attempts=trial.attempts,
                    errors=tuple(errors),
                    duration_s=loop.time() - trial.started_at,
                )
            if self._local is not None and self._local_fallback is not None:
                async with self._local as permit:
                    trial.start()
                    trial.attempts += 1
                    try:
                        output = await self._local_fallback(payload)
                    except Exception as exc:
                        permit.error()
                        errors.append(exc)
                        self._local_counts["failed"] += 1
                    else:
                        ok = True
                        self._local_counts["completed"] += 1
                        return DispatchResult(
                            output=output,
                            endpoint=LOCAL,
                            job_id=None,
                            attempts=trial.attempts,
                            errors=tuple(errors),
                            duration_s=loop.time() - trial.started_at,
                        )
            ok = False
            last = f": {errors[-1]}" if errors else ""
            raise TrialFailed(f"trial failed after {trial.attempts} attempt(s){last}", errors)
        finally:
            token = trial.token
            if token is None and ok is False:
                # Failed without ever starting: still a finished (failed) trial.
                progress.finished(progress.started(), ok=False)
            elif token is None:
                progress.unqueued()
            else:
                progress.finished(token, ok=ok)

    def _endpoint_failed(
        self, client: JobClient, exc: Exception, attempts: int, errors: list[BaseException], tried: set[str]
    ) -> None:
        """An infrastructure failure: count it against the endpoint, and let the trial move on."""
        self._breakers[client.endpoint_id].record_failure()
        self._success[client.endpoint_id].record(False)
        errors.append(exc)
        tried.add(client.endpoint_id)
        logger.info("trial attempt %d on %r failed: %s", attempts, client.endpoint_id, exc)


class _GoLocal(Exception):
    """No endpoint is available now and there is a local fallback: run the trial there."""


class _Requeue(Exception):
    """The endpoint's breaker opened (or it refused the key) while the trial queued for it."""


# Failover across endpoints: no wait between attempts, no retry budget; how many runs a trial
# gets is the pool's ``max_attempts`` (attempts that never ran the trial do not count).
_FAILOVER = Retry(
    attempts=sys.maxsize,
    base_delay_s=0.0,
    max_delay_s=0.0,
    retry_on=frozenset({Outcome.ERROR}),  # what `_Failover.classify` makes of every exception
    budget_ratio=None,
)

_NO_JITTER = random.Random(0)  # the failover's waits are all 0 s: no jitter, no seed drawn per trial


class _Failover(Attempts[JobStatus]):
    """One trial's remote attempts through the one attempt loop: each attempt picks its endpoint.

    The permit goes back with the outcome `JobClient._run` set on it (a 429 during submit
    marks the job overloaded even when it then succeeds), as under ``async with governor``.
    `retryable` caps the runs at the pool's ``max_attempts``, counting only attempts that ran
    the trial (not one whose endpoint refused the key, or whose breaker opened while it queued).
    """

    permit_outcome = True

    def __init__(self, pool: EndpointPool, payload: Any, sync: bool) -> None:
        super().__init__(retry=_FAILOVER, rng=_NO_JITTER)
        self.pool = pool
        self.payload = payload
        self.sync = sync
        self.client: JobClient | None = None
        self.errors: list[BaseException] = []
        self.tried: set[str] = set()
        self.attempts = 0
        self.token: int | None = None
        self.started_at = asyncio.get_running_loop().time()

    def start(self) -> None:
        if self.token is None:
            self.token = self.pool._progress.started()
            self.started_at = asyncio.get_running_loop().time()

    async def choose(self, governor: Governor, attempt: int) -> Governor:
        pool = self.pool
        while True:
            refused = pool._all_refused()
            if refused is not None:
                raise refused
            client = pool._pick(self.tried)
            if client is not None:
                self.client = client
                return client.governor
            if pool._local is not None:
                raise _GoLocal
            await pool._wait_for_change()

    async def acquire(self, governor: Governor) -> Permit:
        try:
            return await governor.acquire()
        except BaseException:
            # Cancelled while queued for a permit: give back the probe slot `_pick` took.
            assert self.client is not None
            self.pool._breakers[self.client.endpoint_id].record_ignored()
            raise

    def classify(self, governor: Governor, result: JobStatus | BaseException) -> Outcome:
        # Whether to go on is `retryable`'s call; what the governor records is the permit's.
        return Outcome.ERROR if isinstance(result, Exception) else super().classify(governor, result)

    def retry_after_s(self, result: JobStatus | BaseException) -> float | None:
        return None  # failover waits for nothing

    def retryable(self, result: JobStatus | BaseException) -> bool:
        if isinstance(result, JobClientClosed):
            return False  # the pool is closing: no failover
        if isinstance(result, _Requeue | AuthError):
            return True  # the trial did not run there: not an attempt
        if isinstance(result, JobError) and result.fault is Fault.TRIAL:
            return False
        return self.attempts < self.pool._max_attempts

    def keep(self, value: JobStatus, permit: Permit, outcome: Outcome) -> None:
        super().keep(value, permit, outcome)
        assert self.client is not None
        self.pool._breakers[self.client.endpoint_id].record_success()
        self.pool._success[self.client.endpoint_id].record(True)

    async def wait(self, delay_s: float) -> None:
        pass  # straight to the next endpoint

    async def call(self, permit: Permit, attempt: int) -> JobStatus:
        pool = self.pool
        client = self.client
        assert client is not None
        breaker = pool._breakers[client.endpoint_id]
        if breaker.state is BreakerState.OPEN or client.endpoint_id in pool._refused:
            # It opened (or refused the key) while this trial queued: go elsewhere.
            permit.ignore()
            breaker.record_ignored()
            raise _Requeue
        self.start()
        self.attempts += 1
        try:
            return await client._run(self.payload, self.sync, permit)
        except (asyncio.CancelledError, JobClientClosed):
            breaker.record_ignored()  # no fault of the endpoint (a closed client: the pool is closing)
            raise
        except AuthError as exc:
            # Fatal for this endpoint, and no fault of its capacity or health.
            breaker.record_ignored()
            self.errors.append(exc)
            self.attempts -= 1  # the trial never ran: not a retry
            pool._refuse(client, exc)
            raise
        except JobError as exc:
            if exc.fault is Fault.TRIAL:
                breaker.record_success()  # the endpoint did its work
                pool._success[client.endpoint_id].record(True)
                self.errors.append(exc)
                raise
            pool._endpoint_failed(client, exc, self.attempts, self.errors, self.tried)
            raise
        except Exception as exc:
            pool._endpoint_failed(client, exc, self.attempts, self.errors, self.tried)
            raise
        finally:
            pool._notify()
