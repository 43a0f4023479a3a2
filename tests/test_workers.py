"""WorkerPool against real worker processes: spawn on backlog, reaping, recycling, deaths, close.

Real processes run in real time, so nothing here asserts on speed: waits are
for a state ("no worker left"), bounded generously, and the timers under test
are set short.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

import workers_jobs as jobs
from aiogovernor import AIMD, Governor, Retry, WindowConfig
from aiogovernor.workers import (
    JobCancelled,
    JobFailed,
    JobState,
    JobTimeout,
    WorkerDied,
    WorkerEvent,
    WorkerPool,
    WorkerStartError,
    WorkerType,
)

ROOT = Path(__file__).resolve().parent.parent
BOUND_S = 20.0  # the longest any wait for a state may take before the test fails

# A JSON-lines command worker: the protocol a non-Python worker speaks.
JSON_WORKER = textwrap.dedent(
    """
    import json, os, sys
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        p = job["payload"]
        if p == "fail":
            out = {"id": job["id"], "error": "no such thing"}
        else:
            out = {"id": job["id"], "result": [p, os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()]}
        print("not json: skipped by the pool", flush=True)
        print(json.dumps(out), flush=True)
    """
)


def run(main: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(main())  # type: ignore[arg-type]


async def until(predicate: Callable[[], bool], what: str) -> None:
    """Wait for a state, checking every 10 ms, for at most BOUND_S."""
    with anyio.move_on_after(BOUND_S):
        while not predicate():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    assert predicate(), what


def alive(pid: int) -> bool:
    """Whether a process with this pid exists, zombies included (a zombie is a leak too)."""
    return Path(f"/proc/{pid}").exists() if sys.platform == "linux" else _signal_zero(pid)


def _signal_zero(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def running(pid: int) -> bool:
    """Whether a process runs (a zombie whose new parent has not reaped it yet has exited)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return _signal_zero(pid)
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children() -> set[int]:
    """This process's child processes, from the process table."""
    psutil = pytest.importorskip("psutil")
    return {p.pid for p in psutil.Process().children(recursive=True)}


def kinds(events: tuple[WorkerEvent, ...], kind: str) -> list[WorkerEvent]:
    return [e for e in events if e.kind == kind]


# -- bad input ---------------------------------------------------------------


def test_bad_input_gets_clear_errors() -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        WorkerType("x", fn=lambda p: p)

    def nested(p: Any) -> Any:
        return p

    with pytest.raises(TypeError, match="cannot be pickled"):
        WorkerType("x", fn=nested)
    with pytest.raises(ValueError, match="exactly one of fn"):
        WorkerType("x")
    with pytest.raises(ValueError, match="exactly one of fn"):
        WorkerType("x", fn=jobs.square, command=["true"])
    with pytest.raises(TypeError, match="sequence of strings"):
        WorkerType("x", command="python worker.py")
    with pytest.raises(ValueError, match="startup_timeout_s"):
        WorkerType("x", fn=jobs.square, startup_timeout_s=-1)
    with pytest.raises(ValueError, match="idle_timeout_s"):
        WorkerType("x", fn=jobs.square, idle_timeout_s=-0.5)
    with pytest.raises(ValueError, match="max_worker_age_s"):
        WorkerType("x", fn=jobs.square, max_worker_age_s=0)
    with pytest.raises(ValueError, match="max_jobs_per_worker"):
        WorkerType("x", fn=jobs.square, max_jobs_per_worker=0)
    with pytest.raises(ValueError, match="min_idle"):
        WorkerType("x", fn=jobs.square, min_idle=-1)
    with pytest.raises(ValueError, match="not both"):
        WorkerType("x", fn=jobs.square, max_workers=2, governor=Governor("g", store=None))
    with pytest.raises(ValueError, match="distinct"):
        WorkerType("x", fn=jobs.square, resources=["0", "0"])
    with pytest.raises(TypeError, match="env must map"):
        WorkerType("x", fn=jobs.square, env={"A": 1})  # type: ignore[dict-item]
    with pytest.raises(ValueError, match="distinct"):
        WorkerPool([WorkerType("x", fn=jobs.square), WorkerType("x", fn=jobs.square)])
    with pytest.raises(ValueError, match="grace_s"):
        WorkerPool(WorkerType("x", fn=jobs.square), grace_s=-1)

    async def main() -> None:
        pool = WorkerPool(WorkerType("x", fn=jobs.square))
        with pytest.raises(RuntimeError, match="async with"):
            await pool.run("x", 1)
        async with pool:
            with pytest.raises(ValueError, match=r"unknown worker type 'y'.*\['x'\]"):
                await pool.run("y", 1)
            with pytest.raises(ValueError, match="unknown worker type"):
                await pool.submit("y", 1)
        with pytest.raises(RuntimeError, match="closed"):
            await pool.run("x", 1)

    run(main)


# -- spawning ----------------------------------------------------------------


def test_spawn_on_backlog_and_not_before_up_to_the_limit() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=2)) as pool:
            await anyio.sleep(0.05)
            assert pool.status()["sq"].spawned == 0, "nothing starts before work arrives"
            assert pool.events == ()
            submitted = [await pool.submit("sq", 0.2) for _ in range(6)]
            pids = [await job.result() for job in submitted]
            status = pool.status()["sq"]
            assert status.spawned <= 2, "never more workers than the governor's limit"
            assert len(set(pids)) <= 2
            assert status.jobs_done == 6
            assert all(job.state is JobState.DONE and job.attempts == 1 for job in submitted)
            assert [await pool.run("sq", 0)] and pool.status()["sq"].spawned == status.spawned, (
                "an idle worker takes the next job: no new spawn"
            )
            spawns = kinds(pool.events, "spawn")
            assert spawns and "waiting" in spawns[0].reason

    run(main)


def test_results_failures_async_callables_and_map() -> None:
    async def main() -> None:
        types = [
            WorkerType("sq", fn=jobs.square, max_workers=1),
            WorkerType("fail", fn=jobs.fail, max_workers=1),
            WorkerType("double", fn=jobs.async_double, max_workers=1),
            WorkerType("noisy", fn=jobs.noisy, max_workers=1),
        ]
        async with WorkerPool(types) as pool:
            assert await pool.map("sq", range(8)) == [i * i for i in range(8)]
            with pytest.raises(JobFailed, match="ValueError: bad payload 3") as caught:
                await pool.run("fail", 3)
            assert isinstance(caught.value.__cause__, ValueError)
            assert "Traceback" in caught.value.remote_traceback
            out = await pool.map("fail", [1, 2], return_exceptions=True)
            assert all(isinstance(e, JobFailed) for e in out)
            with pytest.raises(TypeError, match="cannot be pickled"):
                await pool.run("sq", threading.Lock())
            assert await pool.run("double", 21) == 42
            assert await pool.run("noisy", 5) == 5  # a print does not break the protocol
            sq = pool.status()["sq"]
            assert sq.jobs_done == 8 and sq.spawned == 1
            assert pool.status()["fail"].jobs_failed == 3

    run(main)


def test_a_command_worker_speaks_json_lines_and_gets_its_resource() -> None:
    async def main() -> None:
        spec = WorkerType(
            "cmd", command=[sys.executable, "-c", JSON_WORKER], resources=["0", "1"], max_workers=8
        )
        async with WorkerPool(spec) as pool:
            assert pool.governor("cmd").limit == 2, "no more workers than resources"
            results = await asyncio.gather(*(pool.run("cmd", i) for i in range(6)))
            assert [r[0] for r in results] == list(range(6))
            by_pid = {r[2]: r[1] for r in results}
            assert len(by_pid) <= 2
            assert len(set(by_pid.values())) == len(by_pid), "one worker per resource"
            assert set(by_pid.values()) <= {"0", "1"}
            with pytest.raises(JobFailed, match="no such thing"):
                await pool.run("cmd", "fail")

    run(main)


def test_env_reaches_the_worker() -> None:
    async def main() -> None:
        spec = WorkerType("env", fn=jobs.env, env={"AIOGOVERNOR_TEST_VALUE": "forty-two"})
        async with WorkerPool(spec) as pool:
            assert await pool.run("env", "AIOGOVERNOR_TEST_VALUE") == "forty-two"

    run(main)


# -- reaping, recycling, shrinking -------------------------------------------


def test_idle_workers_beyond_min_idle_are_reaped_on_a_timer() -> None:
    async def main() -> None:
        spec = WorkerType("sq", fn=jobs.pid_after, max_workers=2, min_idle=1, idle_timeout_s=0.2)
        async with WorkerPool(spec) as pool:
            status = pool.status
            await until(lambda: status()["sq"].idle == 1, "min_idle starts one worker")
            await asyncio.gather(pool.run("sq", 0.3), pool.run("sq", 0.3))
            assert status()["sq"].idle + status()["sq"].starting >= 1
            # Nobody calls the pool: the reaper's timer alone brings it back to min_idle.
            await until(
                lambda: len(status()["sq"].workers) == 1 and status()["sq"].idle == 1,
                "reaped down to min_idle",
            )
            assert kinds(pool.events, "reap")

    run(main)


def test_recycling_never_strands_a_queued_job() -> None:
    """cpython gh-115634's shape: a worker that retires after each job, with jobs queued behind it."""

    async def main() -> None:
        spec = WorkerType("sq", fn=jobs.pid_after, max_workers=1, max_jobs_per_worker=1)
        async with WorkerPool(spec) as pool:
            submitted = [await pool.submit("sq", 0) for _ in range(5)]
            with anyio.fail_after(BOUND_S):
                pids = [await job.result() for job in submitted]
            assert len(set(pids)) == 5, "each worker ran exactly one job"
            assert len(kinds(pool.events, "recycle")) >= 4
            # Each replacement was started while its predecessor ran its last job.
            spawn_order = [e.kind for e in pool.events if e.kind in ("spawn", "recycle")]
            assert spawn_order[:2] == ["spawn", "spawn"]

    run(main)


def test_recycling_under_load_loses_and_duplicates_nothing() -> None:
    async def main() -> None:
        spec = WorkerType("sq", fn=jobs.pid_after, max_workers=2, max_jobs_per_worker=3)
        async with WorkerPool(spec) as pool:
            pids = await pool.map("sq", [0.0] * 15)
            assert len(pids) == 15
            assert max(pids.count(p) for p in set(pids)) <= 3
            assert pool.status()["sq"].jobs_done == 15

    run(main)


def test_shrink_never_preempts_busy_workers() -> None:
    async def main() -> None:
        # No window closes here (100 samples needed): the limit moves only by hand.
        quiet = WindowConfig(min_samples=100, min_duration_s=3600)
        gov = Governor("shrink", AIMD(min_limit=1, max_limit=3, initial_limit=3), window=quiet, store=None)
        spec = WorkerType("sq", fn=jobs.pid_after, governor=gov, min_idle=3)
        async with WorkerPool(spec) as pool:
            await until(lambda: pool.status()["sq"].idle == 3, "three warm workers")
            running = [await pool.submit("sq", 0.5) for _ in range(3)]
            await until(lambda: pool.status()["sq"].busy == 3, "three busy workers")
            gov.reset_limit(1)
            pids = [await job.result() for job in running]  # none pre-empted: each finished
            assert len(set(pids)) == 3
            await until(lambda: len(pool.status()["sq"].workers) <= 1, "workers follow the lower limit")
            assert len(kinds(pool.events, "shrink")) == 2
            assert not kinds(pool.events, "died")
            assert all(job.state is JobState.DONE for job in running)

    run(main)


# -- deaths and failed starts --------------------------------------------------


def test_kill_9_of_a_busy_worker_fails_its_job_and_the_pool_replaces_it() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=1)) as pool:
            job = await pool.submit("sq", 60)
            await until(lambda: pool.status()["sq"].busy == 1, "the job runs")
            worker = pool.status()["sq"].workers[0]
            assert worker.current_job == job.id and worker.pid is not None
            os.kill(worker.pid, signal.SIGKILL)
            with pytest.raises(WorkerDied, match="SIGKILL") as caught:
                await job.result()
            assert caught.value.pid == worker.pid
            assert job.state is JobState.FAILED and "SIGKILL" in (job.reason or "")
            assert kinds(pool.events, "died")
            assert await pool.run("sq", 0) != worker.pid  # a new worker

    run(main)


def test_a_dead_workers_job_is_retried_per_the_retry_policy(tmp_path: Path) -> None:
    async def main() -> None:
        spec = WorkerType("die", fn=jobs.die_once, retry=Retry(attempts=2, base_delay_s=0.0))
        async with WorkerPool(spec) as pool:
            job = await pool.submit("die", str(tmp_path / "marker"))
            pid = await job.result()
            assert job.attempts == 2
            assert pid not in {e.pid for e in kinds(pool.events, "died")}

    run(main)


# A backoff so long that a permit held through it would keep another job from starting
# within BOUND_S: it is the pool's first draw (from its seed), checked here.
LONG_RETRY = Retry(attempts=2, base_delay_s=600.0, max_delay_s=600.0)
LONG_RETRY_SEED = 0
assert LONG_RETRY.delay_s(1, rng=random.Random(LONG_RETRY_SEED)) > 2 * BOUND_S


def test_a_job_to_run_again_waits_out_its_backoff_holding_no_permit(tmp_path: Path) -> None:
    async def main() -> None:
        spec = WorkerType("die", fn=jobs.die_once, max_workers=1, retry=LONG_RETRY)
        async with WorkerPool(spec, seed=LONG_RETRY_SEED, grace_s=0.5) as pool:
            gov = pool.governor("die")
            job = await pool.submit("die", str(tmp_path / "dies"))
            await until(lambda: job.attempts == 1 and job.state is JobState.QUEUED, "it waits to run again")
            assert gov.inflight == 0
            (tmp_path / "answers").write_text("")  # die_once answers at once
            with anyio.fail_after(BOUND_S):  # the only permit is free: this job runs meanwhile
                await pool.run("die", str(tmp_path / "answers"))
            assert job.attempts == 1 and not job.done()
            job.cancel("seen enough")
            with pytest.raises(JobCancelled, match="seen enough"):
                await job.result()
            assert gov.inflight == 0

    run(main)


def test_a_mapped_job_to_run_again_gives_the_maps_permit_back_while_it_waits(tmp_path: Path) -> None:
    async def main() -> None:
        spec = WorkerType("die", fn=jobs.die_once, max_workers=1, retry=LONG_RETRY)
        async with WorkerPool(spec, seed=LONG_RETRY_SEED, grace_s=0.5) as pool:
            gov = pool.governor("die")
            (tmp_path / "answers").write_text("")
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.map, "die", [str(tmp_path / "dies")])
                await until(
                    lambda: bool(kinds(pool.events, "died")) and gov.inflight == 0,
                    "the map's permit is given back while its job waits to run again",
                )
                with anyio.fail_after(BOUND_S):
                    await pool.run("die", str(tmp_path / "answers"))
                tg.cancel_scope.cancel()
            assert gov.inflight == 0

    run(main)


def test_mapped_jobs_run_again_after_deaths_and_every_permit_comes_back(tmp_path: Path) -> None:
    async def main() -> None:
        spec = WorkerType("die", fn=jobs.die_once, max_workers=2, retry=Retry(attempts=2, base_delay_s=0.0))
        async with WorkerPool(spec, grace_s=0.5) as pool:
            gov = pool.governor("die")
            peak = 0

            def watch(event: WorkerEvent) -> None:
                nonlocal peak
                peak = max(peak, gov.inflight)

            pool.add_listener(watch)
            pids = await pool.map("die", [str(tmp_path / f"dies-{i}") for i in range(4)])
            assert all(isinstance(pid, int) for pid in pids)
            assert len(kinds(pool.events, "died")) == 4
            assert gov.inflight == 0 and peak <= 2
            assert gov.stats().counts["ok"] == 4

    run(main)


def test_startup_timeout_and_the_start_breaker() -> None:
    async def main() -> None:
        never_ready = WorkerType(
            "hang",
            command=[sys.executable, "-c", "import time; time.sleep(60)"],
            startup_timeout_s=0.3,
            start_failures_to_stop=2,
            start_retry_s=60,
        )
        missing = WorkerType("missing", command=["/nonexistent/aiogovernor-worker"], start_failures_to_stop=3)
        async with WorkerPool([never_ready, missing], grace_s=0.5) as pool:
            with pytest.raises(WorkerStartError, match="2 starts failed in a row") as caught:
                await pool.run("hang", 1)
            assert "startup_timeout_s=0.3" in str(caught.value)
            status = pool.status()["hang"]
            assert (status.spawned, status.spawn_failures, status.spawning_stopped) == (2, 2, True)
            # The breaker is open: the next job fails at once, with no spawn storm.
            with pytest.raises(WorkerStartError):
                await pool.run("hang", 2)
            assert pool.status()["hang"].spawned == 2
            assert kinds(pool.events, "spawning_stopped")
            with pytest.raises(WorkerStartError, match="could not start"):
                await pool.run("missing", 1)
            assert pool.status()["missing"].spawned == 3

    run(main)


def test_a_worker_still_starting_when_the_pool_closes_is_no_start_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Closing ends a starting worker's input, and a worker whose input ends exits (status 0):
    # that is the pool's own doing, not a failed start (it was counted as one, and logged).
    slow = WorkerType(
        "slow",
        command=[sys.executable, "-c", "import sys; sys.stdin.read()"],  # never ready; exits at EOF
        min_idle=1,
        start_failures_to_stop=1,
    )

    async def main() -> None:
        async with WorkerPool(slow, grace_s=5.0) as pool:
            await until(lambda: pool.status()["slow"].workers[0].pid is not None, "the worker is started")
            pid = pool.status()["slow"].workers[0].pid
        status = pool.status()["slow"]
        assert (status.spawn_failures, status.spawning_stopped, status.last_start_error) == (0, False, None)
        assert not kinds(pool.events, "start_failed")
        assert "stopped while starting" in kinds(pool.events, "exit")[0].reason
        assert pid is not None and not alive(pid)

    with caplog.at_level(logging.WARNING):
        run(main)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX child reaping")
def test_signalling_a_worker_that_just_exited_never_reaps_it(caplog: pytest.LogCaptureFixture) -> None:
    # Popen.send_signal (what asyncio's terminate() is) polls with waitpid first: a child that
    # has just exited is reaped behind the loop's child watcher, which then logs "Unknown child
    # process pid" and reports status 255. The pool signals its workers without reaping them.
    from aiogovernor.workers._process import send_signal

    async def main() -> None:
        caught = 0
        for _ in range(60):
            proc = await anyio.open_process(["true"], stdin=None, stdout=None, stderr=None)
            try:
                # Waits for the exit without reaping: the child is a zombie, not yet reported.
                # Blocking on purpose: the loop must not run the watcher's report first.
                os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222
            except ChildProcessError:
                await proc.wait()  # the watcher was first: nothing to test in this round
                continue
            send_signal(proc, signal.SIGTERM)
            send_signal(proc, getattr(signal, "SIGKILL", signal.SIGTERM))
            assert await proc.wait() == 0
            caught += 1
            if caught == 5:
                break
        assert caught, "never saw an exited child before its watcher did"

    with caplog.at_level(logging.WARNING, logger="asyncio"):
        run(main)
    assert "Unknown child process" not in caplog.text
    assert "exit status already read" not in caplog.text


def test_a_job_over_its_timeout_fails_and_its_worker_is_stopped_and_replaced() -> None:
    async def main() -> None:
        spec = WorkerType("sq", fn=jobs.pid_after, max_workers=1, job_timeout_s=0.5)
        async with WorkerPool(spec, grace_s=0.5) as pool:
            first = await pool.run("sq", 0, job_timeout_s=BOUND_S)  # a longer limit for this job
            with pytest.raises(JobTimeout, match=r"within job_timeout_s=0\.5; its worker") as caught:
                await pool.run("sq", 60)  # the type's limit
            assert caught.value.pid == first
            await until(lambda: not running(first), "the worker over time is stopped")
            job = await pool.submit("sq", 60, job_timeout_s=0.3)
            with pytest.raises(JobTimeout, match=r"job_timeout_s=0\.3"):
                await job.result()
            assert job.state is JobState.FAILED
            last = await pool.run("sq", 0, job_timeout_s=BOUND_S)
            assert last not in (first, job.pid)
            assert len(kinds(pool.events, "timeout")) == 2
            assert pool.status()["sq"].jobs_failed == 2

    run(main)
    with pytest.raises(ValueError, match="job_timeout_s"):
        WorkerType("x", fn=jobs.square, job_timeout_s=0)


def test_a_worker_over_its_memory_ceiling_finishes_its_job_then_is_recycled() -> None:
    async def main() -> None:
        spec = WorkerType("mem", fn=jobs.hold_memory, max_workers=1, max_worker_memory_mb=150)
        async with WorkerPool(spec) as pool:
            small = [await pool.run("mem", 0) for _ in range(2)]
            assert small[0] == small[1]  # under the ceiling: kept
            big = await pool.run("mem", 200)  # over it after this job, which still completes
            assert big == small[0]
            after = await pool.run("mem", 0)
            assert after != big
            (recycle,) = kinds(pool.events, "recycle")
            assert recycle.pid == big and "over max_worker_memory_mb=150" in recycle.reason
            assert not kinds(pool.events, "died")

    run(main)
    with pytest.raises(ValueError, match="max_worker_memory_mb"):
        WorkerType("x", fn=jobs.square, max_worker_memory_mb=-1)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc")
def test_the_memory_reader_without_psutil_reads_proc() -> None:
    from aiogovernor.workers._memory import _from_proc, memory_reader

    rss = _from_proc(os.getpid())
    assert rss is not None and rss > 1_000_000
    assert memory_reader()(os.getpid()) is not None
    assert _from_proc(2**22 + 1) is None  # above any pid: no such process


# -- close -----------------------------------------------------------------------


def test_close_without_cancel_waits_for_every_job() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=1)) as pool:
            submitted = [await pool.submit("sq", 0.05) for _ in range(4)]
        assert all(job.state is JobState.DONE for job in submitted)
        assert not children()

    run(main)


def test_close_with_cancel_records_a_reason_and_leaves_no_process() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=1), grace_s=0.5) as pool:
            submitted = [await pool.submit("sq", 60) for _ in range(3)]
            await until(lambda: pool.status()["sq"].busy == 1, "one job runs, two wait")
            pid = pool.status()["sq"].workers[0].pid
            assert pid is not None
            await pool.aclose(cancel=True)
        for job in submitted:
            assert job.state is JobState.CANCELLED
            with pytest.raises(JobCancelled, match="cancel=True"):
                await job.result()
        assert not alive(pid), "the worker was stopped and waited for (no zombie)"
        assert not children()

    run(main)


def test_an_exception_in_the_block_cancels_and_leaves_no_orphan() -> None:
    async def main() -> None:
        pids: list[int] = []
        with pytest.raises(KeyError):
            async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=2), grace_s=0.5) as pool:
                job = await pool.submit("sq", 60)
                pool_ = pool
                await until(lambda: pool_.status()["sq"].busy == 1, "the job runs")
                pids = [w.pid for w in pool.status()["sq"].workers if w.pid is not None]
                raise KeyError("the caller's own failure")
        assert job.state is JobState.CANCELLED
        assert pids and not any(alive(p) for p in pids)
        assert not children()

    run(main)


def test_cancelling_a_running_job_stops_its_worker() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.pid_after, max_workers=1), grace_s=0.5) as pool:
            job = await pool.submit("sq", 60)
            await until(lambda: pool.status()["sq"].busy == 1, "the job runs")
            assert job.cancel("not needed any more")
            with pytest.raises(JobCancelled, match="not needed any more"):
                await job.result()
            await until(lambda: not pool.status()["sq"].workers, "the worker of the cancelled job is gone")
            assert kinds(pool.events, "stop")
            assert pool.status()["sq"].jobs_failed == 1
            # A caller that stops waiting cancels its job too.
            with anyio.move_on_after(0.5):
                await pool.run("sq", 60)
            assert pool.status()["sq"].jobs_failed == 2
            assert await pool.run("sq", 0) > 0

    run(main)


def test_a_killed_pool_process_leaves_no_orphan_worker(tmp_path: Path) -> None:
    """The pool's own process dies (kill -9): its workers see their stdin close and exit."""
    script = tmp_path / "pool.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import workers_jobs
            from aiogovernor.workers import WorkerPool, WorkerType

            async def main():
                async with WorkerPool(WorkerType("sq", fn=workers_jobs.pid_after)) as pool:
                    job = await pool.submit("sq", 60)
                    while not pool.status()["sq"].busy:
                        await asyncio.sleep(0.01)
                    print(pool.status()["sq"].workers[0].pid, flush=True)
                    await job.result()

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        worker_pid = int(proc.stdout.readline())
        proc.kill()
        proc.wait()

        async def gone() -> None:
            await until(lambda: not running(worker_pid), "the orphaned worker exits")

        run(gone)
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_trio_runs_the_pool_too() -> None:
    async def main() -> None:
        async with WorkerPool(WorkerType("sq", fn=jobs.square, max_workers=1)) as pool:
            assert await pool.run("sq", 7) == 49

    anyio.run(main, backend="trio")


def test_the_docs_first_example_runs(tmp_path: Path) -> None:
    text = (ROOT / "docs" / "workers.md").read_text()
    code = text.split("```python\n", 1)[1].split("```", 1)[0]
    script = tmp_path / "docs_example.py"
    script.write_text(code)
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert "a.png.thumb.png" in out.stdout


def test_importing_the_package_pulls_in_no_extra() -> None:
    code = (
        "import sys, aiogovernor.workers\n"
        "print(','.join(m for m in ('redis', 'rich', 'psutil') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_callables_and_payloads_from_the_main_script(tmp_path: Path) -> None:
    """As with multiprocessing's spawn: what the main script defines reaches the workers."""
    script = tmp_path / "main_script.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, dataclasses, sys
            sys.path.insert(0, {str(Path(__file__).parent)!r})
            import workers_jobs
            from aiogovernor.workers import WorkerPool, WorkerType

            @dataclasses.dataclass
            class Point:
                x: int

            def shift(p):
                return Point(p.x + 1)

            async def main():
                types = [WorkerType("shift", fn=shift), WorkerType("same", fn=workers_jobs.identity)]
                async with WorkerPool(types) as pool:
                    print(await pool.run("shift", Point(1)), await pool.run("same", Point(5)))

            if __name__ == "__main__":
                asyncio.run(main())
            """
        )
    )
    out = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=True
    )
    assert out.stdout.strip() == "Point(x=2) Point(x=5)"
