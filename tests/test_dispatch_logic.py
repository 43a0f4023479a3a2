"""Dispatch logic without a server: breaker, backoff, progress/ETA, protocol parsing, validation, secrets."""

from __future__ import annotations

import random
from typing import Any

import httpx
import pytest

from aiogovernor.dispatch import (
    BreakerState,
    CircuitBreaker,
    EndpointPool,
    JobClient,
    JobState,
    JobTimeout,
    ProgressTracker,
    RunPodProtocol,
)
from aiogovernor.dispatch._backoff import PollBackoff
from aiogovernor.sim import run_virtual
from aiogovernor.testing import ManualClock

KEY = "sk-test-SECRET-0123456789"


# -- circuit breaker, on a manual clock ------------------------------------------------


def state_of(breaker: CircuitBreaker) -> BreakerState:
    """The state, read through a call: mypy would otherwise keep a narrowed property."""
    return breaker.state


def test_breaker_opens_after_consecutive_failures_only() -> None:
    clock = ManualClock()
    breaker = CircuitBreaker(failure_threshold=3, reset_timeout_s=10, clock=clock)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()  # resets the run of failures
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is BreakerState.CLOSED and breaker.allow()
    breaker.record_failure()
    assert state_of(breaker) is BreakerState.OPEN
    assert not breaker.allow() and not breaker.available()
    assert breaker.retry_in_s() == 10


def test_breaker_half_opens_probes_and_closes_or_reopens() -> None:
    clock = ManualClock()
    changes: list[tuple[BreakerState, BreakerState]] = []
    breaker = CircuitBreaker(
        failure_threshold=1,
        reset_timeout_s=5,
        half_open_max_calls=2,
        clock=clock,
        on_change=lambda old, new: changes.append((old, new)),
    )
    breaker.record_failure()
    clock.advance(4.9)
    assert breaker.state is BreakerState.OPEN and breaker.retry_in_s() == pytest.approx(0.1)
    clock.advance(0.1)
    assert state_of(breaker) is BreakerState.HALF_OPEN
    assert breaker.allow() and breaker.allow()
    assert not breaker.allow(), "only half_open_max_calls probes at once"
    breaker.record_ignored()  # a cancelled probe frees its slot
    assert breaker.allow()
    breaker.record_failure()  # a failed probe opens again, for a full timeout
    assert breaker.state is BreakerState.OPEN and breaker.retry_in_s() == 5
    clock.advance(5)
    assert breaker.allow()
    breaker.record_success()
    assert state_of(breaker) is BreakerState.CLOSED and breaker.times_opened == 2
    assert changes == [
        (BreakerState.CLOSED, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.OPEN),
        (BreakerState.OPEN, BreakerState.HALF_OPEN),
        (BreakerState.HALF_OPEN, BreakerState.CLOSED),
    ]


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"failure_threshold": 0}, "failure_threshold"),
        ({"reset_timeout_s": 0}, "reset_timeout_s"),
        ({"reset_timeout_s": -1.0}, "reset_timeout_s"),
        ({"half_open_max_calls": 0}, "half_open_max_calls"),
    ],
)
def test_breaker_rejects_bad_config(kwargs: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        CircuitBreaker(**kwargs)


# -- polling backoff -------------------------------------------------------------------


def test_poll_backoff_is_jittered_growing_capped_and_resettable() -> None:
    backoff = PollBackoff(initial_s=0.1, max_s=1.0, factor=2.0, rng=random.Random(7))
    bases = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    delays = [backoff.next_s() for _ in bases]
    for delay, base in zip(delays, bases, strict=True):
        assert base / 2 <= delay <= base
    assert len(set(delays)) == len(delays), "jittered, not a fixed ladder"
    backoff.reset()
    assert 0.05 <= backoff.next_s() <= 0.1


# -- progress and ETA --------------------------------------------------------------------


def test_a_retry_after_date_is_read_against_the_servers_clock() -> None:
    from aiogovernor.dispatch._client import _LaneAttempts

    lane = _LaneAttempts(JobClient("ep", api_key="k"))
    # The server's clock is years behind this one: only the distance between its two dates counts.
    headers = {"Retry-After": "Wed, 21 Oct 2015 07:28:30 GMT", "Date": "Wed, 21 Oct 2015 07:28:00 GMT"}
    assert lane.retry_after_s(httpx.Response(429, headers=headers)) == 30.0
    assert lane.retry_after_s(httpx.Response(429, headers={"Retry-After": "2"})) == 2.0
    assert lane.retry_after_s(httpx.Response(429)) is None


def test_eta_comes_from_observed_durations_and_current_concurrency() -> None:
    clock = ManualClock()
    seen: list[str] = []
    progress = ProgressTracker(total=10, clock=clock, on_change=lambda p: seen.append(p.describe()))
    for _ in range(3):
        progress.queued()
    a, b = progress.started(), progress.started()
    assert progress.snapshot().eta_s is None, "no duration observed yet"
    clock.advance(4)
    progress.finished(a, ok=True)
    progress.observe(3.0)
    snap = progress.snapshot()
    # 8 not started × 4 s, plus nothing left of the running one, over 1 running.
    assert (snap.running, snap.queued, snap.completed, snap.eta_s) == (1, 1, 1, 32.0)
    progress.started()
    # (7 not started × 4 s + 0 s left of the old one + 4 s of the new one) over 2 running.
    assert progress.snapshot().eta_s == 16.0
    clock.advance(1)
    progress.finished(b, ok=False)
    progress.observe(5.0)
    progress.observe(1.5)
    snap = progress.snapshot()
    assert (snap.completed, snap.failed, snap.best_value, snap.elapsed_s) == (1, 1, 1.5, 5.0)
    assert snap.mean_duration_s == 4.5
    assert seen and "best 1.5" in seen[-1]


def test_progress_maximize_keeps_the_largest_value() -> None:
    progress = ProgressTracker(direction="maximize", clock=ManualClock())
    for v in (1.0, 3.0, 2.0):
        progress.observe(v)
    assert progress.snapshot().best_value == 3.0
    with pytest.raises(ValueError, match="direction"):
        ProgressTracker(direction="up")


# -- protocol and states -------------------------------------------------------------------


def test_runpod_protocol_paths_and_parsing() -> None:
    p = RunPodProtocol()
    assert p.run_path("ep1", sync=False) == "/v2/ep1/run"
    assert p.run_path("ep1", sync=True) == "/v2/ep1/runsync"
    assert p.status_path("ep1", "j") == "/v2/ep1/status/j"
    assert p.cancel_path("ep1", "j") == "/v2/ep1/cancel/j"
    assert p.health_path("ep1") == "/v2/ep1/health"
    status = p.parse_status(
        {"id": "j", "status": "COMPLETED", "output": {"v": 1}, "delayTime": 1500, "executionTime": 250}
    )
    assert (status.state, status.output, status.queue_time_s, status.execution_time_s) == (
        JobState.COMPLETED,
        {"v": 1},
        1.5,
        0.25,
    )
    with pytest.raises(ValueError, match="unknown job status"):
        p.parse_status({"id": "j", "status": "EXPLODED"})
    health = p.parse_health({"workers": {"idle": 2, "running": 3}, "jobs": {"inQueue": 4}})
    assert (health.workers, health.jobs_in_queue, health.jobs_in_progress) == (5, 4, 0)


def test_terminal_states() -> None:
    assert {s for s in JobState if not s.terminal} == {JobState.IN_QUEUE, JobState.IN_PROGRESS}


# -- validation and secrets ---------------------------------------------------------------


def test_missing_api_key_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RUNPOD_API_KEY", raising=False)
    with pytest.raises(ValueError, match=r"api_key is required.*RUNPOD_API_KEY"):
        JobClient("ep1")
    with pytest.raises(ValueError, match="api_key"):
        JobClient("ep1", api_key="  ")
    monkeypatch.setenv("RUNPOD_API_KEY", KEY)
    assert JobClient("ep1").endpoint_id == "ep1"
    assert JobClient("ep1", protocol=RunPodProtocol(requires_api_key=False, api_key_env=None))


@pytest.mark.parametrize(
    "name",
    [
        "queue_timeout_s",
        "execution_timeout_s",
        "request_timeout_s",
        "cancel_timeout_s",
        "poll_interval_s",
        "max_per_second",
    ],
)
@pytest.mark.parametrize("value", [0, -1.0, float("nan")])
def test_non_positive_timeouts_are_rejected(name: str, value: float) -> None:
    with pytest.raises(ValueError, match=name):
        kwargs: dict[str, Any] = {name: value}
        JobClient("ep1", api_key=KEY, **kwargs)


def test_empty_pool_and_bad_pool_config_are_rejected() -> None:
    with pytest.raises(ValueError, match="empty"):
        EndpointPool([])
    client = JobClient("ep1", api_key=KEY)
    with pytest.raises(ValueError, match="distinct"):
        EndpointPool([client, client])
    with pytest.raises(ValueError, match="max_attempts"):
        EndpointPool([client], max_attempts=0)
    with pytest.raises(ValueError, match="local_limit"):
        EndpointPool([client], local_limit=0)
    with pytest.raises(TypeError, match="JobClient"):
        EndpointPool(["ep1"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="endpoint_id"):
        JobClient("a/b", api_key=KEY)


def test_the_key_is_in_no_repr() -> None:
    client = JobClient("ep1", api_key=KEY)
    pool = EndpointPool([client])
    for text in (repr(client), str(client), repr(pool), repr(vars(client))):
        assert KEY not in text


# -- the client's deadlines in virtual time (a mock transport, no network) -------------------


def _mock(states: list[str], calls: list[str]) -> httpx.AsyncClient:
    """An endpoint whose status answers walk through ``states`` (the last one repeats)."""

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        calls.append(path.split("/")[3])
        assert request.headers["Authorization"] == f"Bearer {KEY}"
        if path.endswith("/run"):
            return httpx.Response(200, json={"id": "j1", "status": "IN_QUEUE"})
        if "/cancel/" in path:
            return httpx.Response(200, json={"id": "j1", "status": "CANCELLED"})
        polls = calls.count("status")
        state = states[min(polls, len(states)) - 1]
        return httpx.Response(200, json={"id": "j1", "status": state})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def test_queue_wait_deadline_cancels_the_job_after_simulated_minutes() -> None:
    calls: list[str] = []

    async def main() -> tuple[JobTimeout, float]:
        client = JobClient("ep1", api_key=KEY, http=_mock(["IN_QUEUE"], calls), queue_timeout_s=600, seed=1)
        loop = __import__("asyncio").get_running_loop()
        with pytest.raises(JobTimeout) as info:
            await client.run({"x": 1})
        return info.value, loop.time()

    error, elapsed = run_virtual(main())
    assert error.phase == "queue" and error.job_id == "j1"
    assert 600 <= elapsed < 611
    assert calls[-1] == "cancel" and calls.count("cancel") == 1
    # Backoff from 0.5 s up to 10 s: about 600/7.5 polls, not one every 0.5 s.
    assert 50 < calls.count("status") < 120


def test_execution_deadline_counts_from_the_start_of_execution() -> None:
    calls: list[str] = []

    async def main() -> tuple[JobTimeout, float]:
        states = ["IN_QUEUE"] * 20 + ["IN_PROGRESS"]
        client = JobClient(
            "ep1",
            api_key=KEY,
            http=_mock(states, calls),
            queue_timeout_s=1000,
            execution_timeout_s=60,
            seed=2,
        )
        loop = __import__("asyncio").get_running_loop()
        with pytest.raises(JobTimeout) as info:
            await client.run({"x": 1})
        return info.value, loop.time()

    error, elapsed = run_virtual(main())
    assert error.phase == "execution" and error.state is JobState.IN_PROGRESS
    assert elapsed > 60 + 20 * 0.25, "queue time does not count against execution"
    assert calls[-1] == "cancel"


@pytest.mark.parametrize("terminal", ["CANCELLED", "TIMED_OUT", "FAILED"])
def test_remote_terminal_states_end_polling_at_once(terminal: str) -> None:
    calls: list[str] = []

    async def main() -> JobState | None:
        client = JobClient("ep1", api_key=KEY, http=_mock(["IN_PROGRESS", terminal], calls), seed=3)
        from aiogovernor.dispatch import JobFailed

        with pytest.raises(JobFailed) as info:
            await client.run({"x": 1})
        return info.value.state

    assert run_virtual(main()) == JobState(terminal)
    assert calls == ["run", "status", "status"], "terminal means no more polls and no cancel"


def test_a_trial_cancelled_while_queued_on_a_half_open_endpoint_frees_its_probe() -> None:
    import asyncio

    from aiogovernor import Fixed, Governor
    from aiogovernor.testing import wait_until

    async def main() -> None:
        gov = Governor("ep1", Fixed(1))
        client = JobClient("ep1", api_key=KEY, http=_mock(["COMPLETED"], []), governor=gov)
        pool = EndpointPool([client], failure_threshold=1, reset_timeout_s=1.0)
        breaker = pool.breaker("ep1")
        breaker.record_failure()
        await asyncio.sleep(1.5)
        assert breaker.state is BreakerState.HALF_OPEN
        held = await gov.acquire()  # the endpoint is busy: the trial queues for a permit
        trial = asyncio.ensure_future(pool.run({"x": 1}))
        await wait_until(lambda: gov.waiting == 1)
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        held.release()
        assert breaker.available(), "the cancelled trial's probe slot must be given back"
        result = await pool.run({"x": 2})
        assert result.endpoint == "ep1" and state_of(breaker) is BreakerState.CLOSED

    run_virtual(main())
