"""Whose failure is it: refused keys, a trial's own failures, flaky endpoints, 429 storms.

Against the local serverless server (uvicorn in a thread, real HTTP), in
real time with short jobs. Each test bounds itself with a timeout, so a
regression (a study that would retry a refused key for hours) fails fast.
After every test no job is left queued or running on the server.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest

from aiogovernor.dispatch import (
    AuthError,
    BreakerState,
    EndpointPool,
    Fault,
    JobClient,
    JobFailed,
    JobState,
    JobStatus,
    RunPodProtocol,
    TrialFailed,
    optimize_remote,
)
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless

T = TypeVar("T")

FAST: dict[str, Any] = {"poll_interval_s": 0.005, "max_poll_interval_s": 0.02, "seed": 5}


def _handler(payload: Any) -> Any:
    if payload.get("x", 0) < 0:
        raise ValueError("x must not be negative")
    return {"value": payload.get("x", 0) ** 2}


@pytest.fixture(scope="module")
def server() -> Iterator[LocalServerless]:
    endpoints = {
        "a": FakeEndpoint(workers=3, job_duration_s=0.01, compute=_handler),
        "b": FakeEndpoint(workers=3, job_duration_s=0.01, compute=_handler),
        "healthy": FakeEndpoint(workers=3, job_duration_s=0.02, compute=_handler),
        "flaky": FakeEndpoint(
            workers=3, job_duration_s=0.02, failure_rate=0.4, failure_mode="lost", seed=7, compute=_handler
        ),
        "full": FakeEndpoint(workers=1, job_duration_s=0.01, queue_limit=1, retry_after_s=60),
    }
    with LocalServerless(endpoints) as srv:
        yield srv


@pytest.fixture(autouse=True)
def no_orphans(server: LocalServerless) -> Iterator[None]:
    yield
    assert server.live_jobs() == 0, "a remote job was left running"


def client(server: LocalServerless, endpoint: str, **kwargs: Any) -> JobClient:
    options = {"api_key": server.api_key, "base_url": server.base_url, **FAST, **kwargs}
    return JobClient(endpoint, **options)


def run(factory: Callable[[], Awaitable[T]], *, within_s: float = 10.0) -> T:
    async def main() -> T:
        async with asyncio.timeout(within_s):
            return await factory()

    return asyncio.run(main())


async def until(condition: Callable[[], bool], *, within_s: float = 5.0) -> None:
    """Yield to the loop until ``condition()`` holds: the client handling an answer the server sent.

    The client offers no event for "an answer was read", so this polls, bounded by ``within_s``.
    """
    async with asyncio.timeout(within_s):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.001)


def study() -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(sampler=optuna.samplers.TPESampler(seed=1, constant_liar=True))


# -- a refused key ends the study at once -------------------------------------------------------------


def test_a_wrong_key_ends_the_study_at_once_with_one_auth_error(server: LocalServerless) -> None:
    import optuna

    s = study()
    before = {name: server.counters(name).requests for name in ("a", "b")}

    async def main() -> tuple[AuthError, float]:
        # Not started (no /health read): the refusal is met by the trials themselves.
        pool = EndpointPool(
            [client(server, "a", api_key="sk-wrong"), client(server, "b", api_key="sk-wrong")]
        )
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(AuthError) as info:
            await optimize_remote(
                s, 200, lambda t: {"x": t.suggest_float("x", 0, 1)}, lambda o: o["value"], pool=pool
            )
        assert set(pool.refused) == {"a", "b"}
        for name in ("a", "b"):
            assert pool.breaker(name).state is BreakerState.CLOSED
            assert pool.breaker(name).consecutive_failures == 0, "a refused key is no breaker failure"
        await pool.aclose()
        return info.value, loop.time() - start

    error, elapsed = run(main)
    assert elapsed < 5.0
    assert "API key" in str(error)
    trials = s.trials
    assert 0 < len(trials) < 200, "the study stopped asking"
    assert all(t.state == optuna.trial.TrialState.FAIL for t in trials)
    assert all("API key" in t.user_attrs["fail_reason"] for t in trials)
    # Each trial met each endpoint's refusal at most once: no job sent twice with the refused key.
    for name in ("a", "b"):
        assert server.counters(name).requests - before[name] <= len(trials)


def test_a_pool_whose_every_endpoint_refuses_the_key_fails_to_start(server: LocalServerless) -> None:
    async def main() -> None:
        pool = EndpointPool([client(server, "a", api_key="sk-wrong"), client(server, "b")])
        async with pool:  # one endpoint accepts it: the pool runs without the other
            assert set(pool.refused) == {"a"}
            result = await pool.run({"x": 1})
            assert result.endpoint == "b"
        with pytest.raises(AuthError, match="no endpoint accepts the API key"):
            async with EndpointPool([client(server, "a", api_key="sk-wrong")]):
                pass

    run(main)


def test_a_missing_key_is_an_auth_error_too(server: LocalServerless) -> None:
    keyless = RunPodProtocol(requires_api_key=False, api_key_env=None)

    async def main() -> None:
        async with client(server, "a", api_key=None, protocol=keyless) as c:
            with pytest.raises(AuthError, match="needs an API key"):
                await c.run({})

    run(main)


# -- a trial's own failure is not the endpoint's ------------------------------------------------------


def test_a_trial_whose_handler_fails_fails_once_not_retried_not_counted(server: LocalServerless) -> None:
    before = server.counters("a").submitted + server.counters("b").submitted

    async def main() -> None:
        pool = EndpointPool([client(server, "a"), client(server, "b")], failure_threshold=1, max_attempts=3)
        async with pool:
            with pytest.raises(TrialFailed, match="x must not be negative") as info:
                await pool.run({"x": -1})
            assert info.value.fault is Fault.TRIAL and len(info.value.errors) == 1
            assert all(pool.breaker(n).state is BreakerState.CLOSED for n in ("a", "b"))
            for c in pool.clients:
                assert c.governor.stats().counts["error"] == 0
            assert sum(c.stats().trial_failures for c in pool.clients) == 1

    run(main)
    assert server.counters("a").submitted + server.counters("b").submitted == before + 1


def test_a_job_classifier_decides_whose_failure_it_is(server: LocalServerless) -> None:
    def oom_is_the_endpoints(status: JobStatus) -> Fault:
        if status.state is JobState.FAILED and "negative" in (status.error or ""):
            return Fault.ENDPOINT  # say this handler error means a bad worker: retry elsewhere
        return Fault.NONE if status.state is JobState.COMPLETED else Fault.ENDPOINT

    async def main() -> None:
        pool = EndpointPool(
            [client(server, n, classify_job=oom_is_the_endpoints) for n in ("a", "b")], max_attempts=2
        )
        async with pool:
            with pytest.raises(TrialFailed) as info:
                await pool.run({"x": -1})
            assert info.value.fault is Fault.ENDPOINT
            assert [type(e) for e in info.value.errors] == [JobFailed, JobFailed]
            assert {e.endpoint for e in info.value.errors if isinstance(e, JobFailed)} == {"a", "b"}

    run(main)


def test_optimize_remote_counts_what_the_study_holds(server: LocalServerless) -> None:
    import optuna

    s = study()

    def read(output: Any) -> float:
        return math.nan if output["value"] > 25 else float(output["value"])

    async def main() -> Any:
        async with EndpointPool([client(server, "a"), client(server, "b")]) as pool:
            return await optimize_remote(
                s, 16, lambda t: {"x": t.suggest_int("x", -3, 9)}, read, pool=pool, retries=2
            )

    result = run(main)
    held = [t.state for t in s.trials]
    assert result.completed == held.count(optuna.trial.TrialState.COMPLETE)
    assert result.failed == held.count(optuna.trial.TrialState.FAIL) > 0
    for t in s.trials:
        if t.state == optuna.trial.TrialState.FAIL:
            assert t.user_attrs["fail_reason"]
            if t.params["x"] < 0:
                assert "negative" in t.user_attrs["fail_reason"]
            else:
                assert "nan" in t.user_attrs["fail_reason"]
    assert result.retried == 0, "a trial's own failure is never re-run"


# -- a flaky endpoint loses its share ---------------------------------------------------------------------


def test_an_endpoint_failing_40_percent_loses_its_share_to_the_healthy_one(server: LocalServerless) -> None:
    import optuna

    s = study()

    async def main() -> Any:
        pool = EndpointPool(
            [client(server, "flaky"), client(server, "healthy")], max_attempts=3, failure_threshold=50
        )
        async with pool:
            result = await optimize_remote(
                s, 60, lambda t: {"x": t.suggest_float("x", 0, 3)}, lambda o: o["value"], pool=pool
            )
            assert pool.success_rate("flaky") < 0.85 < pool.success_rate("healthy")
            return result

    result = run(main, within_s=30)
    assert result.completed == 60 and all(t.state == optuna.trial.TrialState.COMPLETE for t in s.trials)
    done = {t.user_attrs["endpoint"] for t in s.trials}
    assert done <= {"flaky", "healthy"}
    by = [t.user_attrs["endpoint"] for t in s.trials]
    assert by.count("healthy") >= 4 * by.count("flaky"), f"split: {by.count('healthy')} / {by.count('flaky')}"


# -- submits, polls and cancels are different budgets ---------------------------------------------------


def test_a_queue_full_429_pauses_submits_only_polls_and_cancels_keep_going(server: LocalServerless) -> None:
    # One job runs, one queues behind it; then 429 with Retry-After: 60. The running job lasts
    # until it is cancelled, so the queue stays full however slowly the steps below run.
    async def main() -> None:
        async with client(server, "full", overload_debounce_s=0.0) as c:
            running = asyncio.create_task(c.run({"duration_s": 30}))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("full").running == 1)
            queued = asyncio.create_task(c.run({"duration_s": 0.05}))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("full").queued == 1)
            refused = asyncio.create_task(c.run({"duration_s": 5}))
            await asyncio.to_thread(server.wait_for, lambda: server.counters("full").rejected >= 1)
            # The server has answered 429; the client reads that answer on its own turn.
            await until(lambda: c.stats().overloaded >= 1)
            assert c.submit_governor.paused_for_s() > 30
            assert c.request_governor.paused_for_s() == 0
            # The caller gives up on the running job during the pause: its cancel goes out at once.
            loop = asyncio.get_running_loop()
            start = loop.time()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            assert loop.time() - start < c.submit_governor.paused_for_s()  # it did not wait the pause out
            assert c.stats().cancels_sent == 1 and c.stats().cancel_failures == 0
            # Polls keep their pace: the queued job, running now, is seen to complete.
            assert (await queued).state is JobState.COMPLETED
            # The refused job's caller gives up too: no remote job, so nothing to cancel.
            refused.cancel()
            await asyncio.gather(refused, return_exceptions=True)
            assert c.stats().cancels_sent == 1 and c.stats().cancel_failures == 0

    run(main)


def test_cancels_pass_a_rate_ceiling_and_a_pause(server: LocalServerless) -> None:
    async def main() -> None:
        async with client(server, "healthy", max_per_second=2.0, cancel_timeout_s=1.0) as c:
            tasks = [asyncio.create_task(c.run({"duration_s": 30})) for _ in range(3)]
            await asyncio.to_thread(server.wait_for, lambda: server.counters("healthy").running == 3)
            c.request_governor.pause(60)  # as if a poll had met "429, Retry-After: 60"
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            assert c.stats().cancels_sent == 3 and c.stats().cancel_failures == 0

    run(main)


# -- configuration ---------------------------------------------------------------------------------------


def test_a_pool_with_only_a_local_fallback_runs_everything_here() -> None:
    async def local(payload: Any) -> Any:
        return {"local": payload}

    async def main() -> list[str]:
        async with EndpointPool([], local_fallback=local, local_limit=2) as pool:
            results = await asyncio.gather(*(pool.run(i) for i in range(4)))
            assert pool.capacity() == 2
        return [r.endpoint for r in results]

    assert run(main) == ["local"] * 4
    with pytest.raises(ValueError, match="empty"):
        EndpointPool([])


def test_requests_per_s_is_a_deprecated_spelling_of_max_per_second() -> None:
    with pytest.deprecated_call(match="max_per_second"):
        c = JobClient("ep", api_key="k", requests_per_s=5.0)
    assert c.request_governor.max_per_second == 5.0
    assert JobClient("ep", api_key="k", max_per_second=3.0).request_governor.max_per_second == 3.0
    with pytest.raises(TypeError, match="max_per_second only"), pytest.deprecated_call():
        JobClient("ep", api_key="k", requests_per_s=5.0, max_per_second=3.0)
