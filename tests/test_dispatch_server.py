"""Dispatch against a real local serverless server (uvicorn in a thread), in real time.

Jobs last 10-50 ms. Each test runs its own ``asyncio.run``: the virtual-time
loop of the other tests would jump its clock past real network waits. After
every test, no job is left queued or running on the server.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from aiogovernor.dispatch import (
    AuthError,
    BreakerState,
    ConcurrentTPEWarning,
    EndpointPool,
    Fault,
    JobClient,
    JobExpired,
    JobFailed,
    JobState,
    JobTimeout,
    TrialFailed,
    optimize_remote,
)
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless

T = TypeVar("T")

FAST: dict[str, Any] = {"poll_interval_s": 0.005, "max_poll_interval_s": 0.02, "seed": 11}


def _objective(payload: Any) -> Any:
    return {"value": (payload["x"] - 2.0) ** 2}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServerless]:
    endpoints = {
        "ok": FakeEndpoint(workers=3, job_duration_s=0.02),
        "ok2": FakeEndpoint(workers=3, job_duration_s=0.02),
        "bad": FakeEndpoint(workers=2, failure_rate=1.0),
        "timeout": FakeEndpoint(workers=1, job_duration_s=0.05, job_timeout_s=0.01),
        "ttl": FakeEndpoint(workers=1, job_duration_s=0.01, result_ttl_s=0.0),
        "full": FakeEndpoint(workers=1, job_duration_s=0.02, queue_limit=1, retry_after_s=0.01),
        "cold": FakeEndpoint(workers=1, job_duration_s=0.01, cold_start_s=0.05),
        "dead": FakeEndpoint(dead=True),
        "sync": FakeEndpoint(workers=1, job_duration_s=0.01, runsync_wait_s=0.3),
        "math": FakeEndpoint(workers=3, job_duration_s=0.01, compute=_objective),
        "flaky": FakeEndpoint(workers=2, job_duration_s=0.01, failure_rate=0.3, seed=5, compute=_objective),
    }
    with LocalServerless(endpoints) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_orphans(server: LocalServerless) -> Iterator[None]:
    yield
    assert server.live_jobs() == 0, "a remote job was left running"


def client(server: LocalServerless, endpoint: str, **kwargs: Any) -> JobClient:
    return JobClient(endpoint, api_key=server.api_key, base_url=server.base_url, **{**FAST, **kwargs})


def run(factory: Callable[[], Awaitable[T]]) -> T:
    async def main() -> T:
        return await factory()

    return asyncio.run(main())


# -- every job state --------------------------------------------------------------------


def test_completed(server: LocalServerless) -> None:
    async def main() -> Any:
        async with client(server, "ok") as c:
            status = await c.run({"n": 1})
            assert c.governor.inflight == 0 and c.request_governor.inflight == 0
            return status

    status = run(main)
    assert status.state is JobState.COMPLETED and status.output == {"echo": {"n": 1}}
    assert status.execution_time_s is not None


def test_failed(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "bad") as c:
            with pytest.raises(JobFailed, match="ended FAILED") as info:
                await c.run({})
            assert info.value.state is JobState.FAILED and info.value.fault is Fault.ENDPOINT
            assert c.governor.stats().counts["error"] == 1, "a failed job is an error, not overload"

    run(main)


def test_remote_timed_out(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "timeout") as c:
            with pytest.raises(JobFailed) as info:
                await c.run({})
            assert info.value.state is JobState.TIMED_OUT

    run(main)


def test_cancelled_elsewhere_is_terminal(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "ok") as c, client(server, "ok") as other:
            task = asyncio.create_task(c.run({"duration_s": 5}))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("ok").running > 0)
            job_id = next(j for j, state in server.jobs("ok").items() if state == "IN_PROGRESS")
            await other.cancel(job_id)
            with pytest.raises(JobFailed) as info:
                await task
            assert info.value.state is JobState.CANCELLED

    run(main)


def test_expired_result_is_404(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "ttl") as c:
            with pytest.raises(JobExpired):
                await c.run({})

    run(main)


def test_cold_start_keeps_the_job_in_queue_then_completes(server: LocalServerless) -> None:
    async def main() -> Any:
        async with client(server, "cold") as c:
            return await c.run({})

    status = run(main)
    assert status.state is JobState.COMPLETED
    assert status.queue_time_s is not None and status.queue_time_s >= 0.04


def test_runsync_returns_the_result_in_one_call(server: LocalServerless) -> None:
    before = server.counters("sync").requests

    async def main() -> Any:
        async with client(server, "sync") as c:
            return await c.run({"a": 1}, sync=True)

    assert run(main).output == {"echo": {"a": 1}}
    assert server.counters("sync").requests - before == 1


def test_429_is_overload_and_retried_never_the_end_of_a_job(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "full", overload_debounce_s=10.0) as c:
            results = await asyncio.gather(*(c.run({"i": i}) for i in range(4)))
            assert [r.state for r in results] == [JobState.COMPLETED] * 4
            assert c.stats().overloaded > 0
            # Debounced: one congestion event, however many 429s it took, in the submits' lane only.
            assert c.submit_governor.stats().counts["overload"] == 1
            assert c.request_governor.stats().counts["overload"] == 0

    run(main)
    assert server.counters("full").rejected > 0


# -- cancellation safety ------------------------------------------------------------------


def test_caller_timeout_cancels_the_remote_job(server: LocalServerless) -> None:
    before = server.counters("ok").cancelled

    async def main() -> None:
        async with client(server, "ok") as c:
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await c.run({"duration_s": 5})
            assert c.stats().cancels_sent == 1 and c.governor.inflight == 0

    run(main)
    assert server.counters("ok").cancelled == before + 1


def test_cancel_while_the_submit_is_out_cancels_the_job_it_created(server: LocalServerless) -> None:
    before = server.counters("sync").cancelled

    async def main() -> None:
        async with client(server, "sync") as c:
            task = asyncio.create_task(c.run({"duration_s": 5}, sync=True))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("sync").running > 0)
            task.cancel()  # the /runsync POST is still waiting for its answer
            with pytest.raises(asyncio.CancelledError):
                await task

    run(main)
    assert server.counters("sync").cancelled == before + 1


def test_a_job_stops_counting_as_live_when_its_cancel_answers(server: LocalServerless) -> None:
    # The worker running a job notices the cancel only on its next turn of the server's loop;
    # the counters must not wait for it (a check for orphans right after a cancel would fail).
    async def main() -> None:
        async with client(server, "ok") as c:
            for _ in range(10):
                job = await c.submit({"duration_s": 30})
                await asyncio.to_thread(server.wait_for, lambda: server.counters("ok").running == 1)
                status = await c.cancel(job.job_id)
                assert status is not None and status.state is JobState.CANCELLED
                counters = server.counters("ok")
                assert (counters.live, counters.running) == (0, 0)

    run(main)


def test_queue_deadline_cancels_a_job_stuck_behind_others(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "cold") as patient, client(server, "cold", queue_timeout_s=0.02) as c:
            blocker = asyncio.create_task(patient.run({"duration_s": 0.2}))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("cold").running > 0)
            with pytest.raises(JobTimeout) as info:
                await c.run({})
            assert info.value.phase == "queue" and c.stats().cancels_sent == 1
            assert (await blocker).state is JobState.COMPLETED

    run(main)


def _client_sockets(server: LocalServerless) -> int:
    """This process's open TCP connections to the server, counted from the client's side."""
    psutil = pytest.importorskip("psutil")
    port = int(server.base_url.rsplit(":", 1)[1])
    return sum(
        1
        for conn in psutil.Process().net_connections(kind="tcp")
        if conn.raddr and conn.raddr.port == port and conn.status != psutil.CONN_CLOSE_WAIT
    )


def test_closing_a_client_with_runs_in_flight_cancels_them_and_leaves_no_socket(
    server: LocalServerless,
) -> None:
    before = server.counters("ok").cancelled

    async def main() -> None:
        c = client(server, "ok")
        runs = [asyncio.create_task(c.run({"duration_s": 30})) for _ in range(2)]
        await asyncio.to_thread(server.wait_for, lambda: server.counters("ok").running == 2)
        assert _client_sockets(server) >= 1  # the count sees the client's connections
        await c.aclose()
        for task in runs:  # each run ended when the close returned: its remote job cancelled
            assert task.done()
            with pytest.raises(RuntimeError, match="closed while the job ran"):
                await task
        assert c.governor.inflight == 0 and c.governor.stats().counts["error"] == 0
        assert c.stats().cancels_sent == 2 and c.stats().cancel_failures == 0
        with pytest.raises(RuntimeError, match="is closed"):
            await c.run({})
        with pytest.raises(RuntimeError, match="is closed"):
            await c.status("any")
        await c.aclose()  # closing twice is fine
        assert _client_sockets(server) == 0, "a connection outlived the client"

    run(main)
    assert server.counters("ok").cancelled == before + 2


def test_closing_a_pool_with_trials_in_flight_fails_them_over_nowhere(server: LocalServerless) -> None:
    names = ("ok", "ok2")
    submitted = sum(server.counters(n).submitted for n in names)
    cancelled = sum(server.counters(n).cancelled for n in names)

    async def main() -> None:
        pool = EndpointPool([client(server, n) for n in names])
        await pool.start()
        trials = [asyncio.create_task(pool.run({"duration_s": 30})) for _ in range(2)]
        await asyncio.to_thread(server.wait_for, lambda: sum(server.counters(n).running for n in names) == 2)
        await pool.aclose()
        for task in trials:
            with pytest.raises(RuntimeError, match="closed while the job ran"):
                await task
        for n in names:  # closing is no failure of an endpoint
            assert pool.breaker(n).consecutive_failures == 0

    run(main)
    # Each trial's job was cancelled, and none was submitted again elsewhere.
    assert sum(server.counters(n).submitted for n in names) == submitted + 2
    assert sum(server.counters(n).cancelled for n in names) == cancelled + 2


# -- auth and secrets ---------------------------------------------------------------------


def test_wrong_key_is_an_auth_error_and_the_key_leaks_nowhere(
    server: LocalServerless, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-WRONG-very-secret-key"
    caplog.set_level(logging.DEBUG)

    async def main() -> AuthError:
        async with JobClient("ok", api_key=secret, base_url=server.base_url, **FAST) as c:
            with pytest.raises(AuthError) as info:
                await c.run({})
            for text in (repr(c), str(info.value), repr(info.value)):
                assert secret not in text
            return info.value

    error = run(main)
    assert error.status_code == 401
    assert secret not in caplog.text
    assert "sk-WRONG" not in caplog.text


# -- the pool ---------------------------------------------------------------------------------


def test_pool_seeds_limits_from_health_and_spreads_by_free_capacity(server: LocalServerless) -> None:
    async def main() -> list[str]:
        async with EndpointPool([client(server, "ok"), client(server, "ok2")]) as pool:
            assert [c.governor.limit for c in pool.clients] == [6, 6]  # 3 workers × health_limit_factor
            results = await asyncio.gather(*(pool.run({"i": i}) for i in range(6)))
            return [r.endpoint for r in results]

    endpoints = run(main)
    assert sorted(endpoints) == ["ok"] * 3 + ["ok2"] * 3


def test_failover_and_breaker_on_a_dead_endpoint(server: LocalServerless) -> None:
    async def main() -> None:
        pool = EndpointPool(
            [client(server, "dead"), client(server, "ok")], failure_threshold=2, reset_timeout_s=60
        )
        async with pool:
            # The failed health check counted: one more failure opens the breaker.
            assert pool.breaker("dead").consecutive_failures == 1
            results = await asyncio.gather(*(pool.run({"i": i}) for i in range(8)))
            assert {r.endpoint for r in results} == {"ok"}
            assert pool.breaker("dead").state is BreakerState.OPEN
            failed_over = [r for r in results if r.attempts > 1]
            assert failed_over and all(r.errors for r in failed_over)
            assert pool.progress.snapshot().completed == 8

    run(main)


def test_trial_failing_everywhere_raises_with_every_reason(server: LocalServerless) -> None:
    async def main() -> None:
        async with EndpointPool([client(server, "bad"), client(server, "dead")], max_attempts=2) as pool:
            with pytest.raises(TrialFailed) as info:
                await pool.run({})
            assert len(info.value.errors) == 2
            assert pool.progress.snapshot().failed == 1

    run(main)


def test_local_fallback_is_bounded_to_k(server: LocalServerless) -> None:
    inside = 0
    peak = 0

    async def main() -> list[str]:
        gate = asyncio.Event()

        async def local(payload: Any) -> Any:
            nonlocal inside, peak
            inside += 1
            peak = max(peak, inside)
            if inside == 2:
                gate.set()
            await gate.wait()
            inside -= 1
            return {"local": payload}

        pool = EndpointPool(
            [client(server, "dead")],
            failure_threshold=1,
            max_attempts=1,
            local_fallback=local,
            local_limit=2,
        )
        async with pool:
            results = await asyncio.gather(*(pool.run(i) for i in range(6)))
        return [r.endpoint for r in results]

    assert run(main) == ["local"] * 6
    assert peak == 2


# -- Optuna --------------------------------------------------------------------------------


def test_optimize_remote_tells_every_trial(server: LocalServerless) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, constant_liar=True))

    async def main() -> Any:
        async with EndpointPool(
            [client(server, "math"), client(server, "flaky")], max_attempts=2, reset_timeout_s=0.05
        ) as pool:
            with warnings.catch_warnings():
                warnings.simplefilter("error", ConcurrentTPEWarning)
                return await optimize_remote(
                    study,
                    24,
                    lambda t: {"x": t.suggest_float("x", -10, 10)},
                    lambda out: float(out["value"]),
                    pool=pool,
                )

    result = run(main)
    states = [t.state for t in study.trials]
    assert len(states) == 24 and all(s.is_finished() for s in states)
    assert result.completed + result.failed == 24
    for trial in study.trials:
        if trial.state == optuna.trial.TrialState.FAIL:
            assert trial.user_attrs["fail_reason"]
    assert result.progress.best_value == study.best_value


def test_tpe_without_constant_liar_warns(server: LocalServerless) -> None:
    import optuna

    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, constant_liar=False))

    async def main() -> Any:
        async with EndpointPool([client(server, "math")]) as pool:
            with pytest.warns(ConcurrentTPEWarning, match="constant_liar"):
                return await optimize_remote(
                    study, 3, lambda t: {"x": t.suggest_float("x", 0, 1)}, lambda o: o["value"], pool=pool
                )

    assert run(main).completed == 3
