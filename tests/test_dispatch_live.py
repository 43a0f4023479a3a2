"""The rich live view of a pool: rendering a scripted snapshot, starting and stopping around runs, no rich.

Runs use a mocked transport on the virtual-time loop: no server, no real waits.
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

import httpx
import pytest
from rich.console import Console

from aiogovernor import Fixed, Governor, Progress, ProgressCallback
from aiogovernor.dispatch import (
    BreakerState,
    EndpointPool,
    EndpointSnapshot,
    JobClient,
    LiveView,
    PoolSnapshot,
    StudyProgress,
    optimize_remote,
    render_pool,
)
from aiogovernor.sim import run_virtual

KEY = "sk-test-live"


def console() -> Console:
    return Console(file=io.StringIO(), record=True, width=120, color_system=None)


def active(view: LiveView) -> bool:
    """Read through a call: mypy would otherwise keep a narrowed property."""
    return view.active


def rows(text: str) -> dict[str, list[str]]:
    """The table's rows by endpoint name, split into cells."""
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


SNAPSHOT = PoolSnapshot(
    progress=StudyProgress(
        total=60,
        queued=4,
        inflight=3,
        limit=9,
        done=17,
        failed=2,
        best_value=0.012345678,
        mean_duration_s=2.0,
        elapsed_s=12.0,
        throughput_per_s=19 / 12.0,
        eta_s=65.0,
    ),
    endpoints=(
        EndpointSnapshot(
            name="gpu-a",
            breaker=BreakerState.CLOSED,
            limit=6,
            inflight=3,
            waiting=1,
            completed=15,
            failed=0,
            success_rate=0.95,
        ),
        EndpointSnapshot(
            name="gpu-b",
            breaker=BreakerState.OPEN,
            limit=2,
            inflight=0,
            waiting=0,
            completed=1,
            failed=5,
            success_rate=0.25,
        ),
        EndpointSnapshot(
            name="gpu-c",
            breaker=BreakerState.HALF_OPEN,
            limit=1,
            inflight=0,
            waiting=0,
            completed=0,
            failed=1,
            refused=True,
        ),
        EndpointSnapshot(name="local", breaker=None, limit=1, inflight=0, waiting=0, completed=1, failed=0),
    ),
)


def test_render_pool_draws_the_summary_and_one_row_per_endpoint() -> None:
    out = console()
    out.print(render_pool(SNAPSHOT))
    text = out.export_text()
    summary = text.splitlines()[0]
    assert summary == (
        "trials 19/60: 3 running, 4 queued, 17 completed, 2 failed | "
        "best 0.0123457 | ETA 1m05s | elapsed 12.0s"
    )
    table = rows(text)
    assert table["endpoint"] == ["breaker", "limit", "inflight", "waiting", "completed", "failed", "success"]
    assert table["gpu-a"] == ["closed", "6", "3", "1", "15", "0", "95%"]
    assert table["gpu-b"] == ["open", "2", "0", "0", "1", "5", "25%"]
    assert table["gpu-c"] == ["refused", "1", "0", "0", "0", "1", "-"]
    assert table["local"] == ["-", "1", "0", "0", "1", "0", "-"]


def test_render_pool_before_anything_is_known() -> None:
    progress = StudyProgress(
        total=None,
        queued=0,
        inflight=0,
        limit=0,
        done=0,
        failed=0,
        best_value=None,
        mean_duration_s=None,
        elapsed_s=3725.0,
        throughput_per_s=0.0,
        eta_s=None,
    )
    out = console()
    out.print(render_pool(PoolSnapshot(progress=progress, endpoints=())))
    assert out.export_text().splitlines()[0] == (
        "trials 0/?: 0 running, 0 queued, 0 completed, 0 failed | best - | ETA ? | elapsed 1h02m"
    )


# -- a pool over a mocked transport -------------------------------------------------------------


def _transport(final: str, calls: list[str]) -> httpx.AsyncClient:
    """Every job is accepted, polled once, then ends in ``final``; its output is ``x`` squared."""
    jobs: dict[str, Any] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        calls.append(path.split("/")[3])
        if path.endswith("/run"):
            job = f"j{len(jobs)}"
            jobs[job] = __import__("json").loads(request.content)["input"]
            return httpx.Response(200, json={"id": job, "status": "IN_QUEUE"})
        job = path.rsplit("/", 1)[1]
        if "/cancel/" in path:
            return httpx.Response(200, json={"id": job, "status": "CANCELLED"})
        if "/health" in path:
            return httpx.Response(200, json={"workers": {"idle": 1, "running": 0}})
        if calls.count("status") % 2:
            return httpx.Response(200, json={"id": job, "status": "IN_PROGRESS"})
        return httpx.Response(200, json={"id": job, "status": final, "output": {"v": jobs[job]["x"] ** 2}})

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def pool_of(final: str = "COMPLETED", **kwargs: Any) -> EndpointPool:
    gov = Governor("ep1", Fixed(2))
    client = JobClient(
        "ep1", api_key=KEY, http=_transport(final, []), governor=gov, poll_interval_s=0.1, seed=1
    )
    return EndpointPool([client], **kwargs)


def test_pool_snapshot_counts_each_endpoint_and_the_local_fallback() -> None:
    async def local(payload: Any) -> Any:
        return {"v": 0}

    async def main() -> PoolSnapshot:
        pool = pool_of("FAILED", failure_threshold=1, max_attempts=1, local_fallback=local)
        for x in range(2):
            assert (await pool.run({"x": x})).endpoint == "local"
        return pool.snapshot()

    snap = run_virtual(main())
    ep1, local_row = snap.endpoints
    assert (ep1.name, ep1.breaker, ep1.completed, ep1.failed, ep1.inflight) == (
        "ep1",
        BreakerState.OPEN,
        0,
        1,
        0,
    )
    assert (local_row.name, local_row.breaker, local_row.completed, local_row.failed) == ("local", None, 2, 0)
    assert (snap.progress.completed, snap.progress.failed) == (2, 0)
    # The trials' limit is the pool's capacity: the open endpoint takes none, the local fallback one.
    assert snap.progress.limit == 1 and snap.progress.inflight == snap.progress.running == 0


def test_study_progress_is_the_core_progress_contract() -> None:
    seen: list[Progress] = []
    callback: ProgressCallback = seen.append  # the maps' and the uploader's callback type

    async def local(payload: Any) -> Any:
        return {"v": 0}

    async def main() -> None:
        pool = pool_of(
            "FAILED", failure_threshold=1, max_attempts=1, local_fallback=local, on_progress=callback
        )
        await pool.run({"x": 0})

    run_virtual(main())
    assert seen and all(isinstance(p, StudyProgress) for p in seen)
    last = seen[-1]
    assert isinstance(last, StudyProgress)
    assert (last.done, last.completed, last.failed, last.bytes_sent) == (1, 1, 0, None)
    assert last.throughput_per_s == pytest.approx(1 / last.elapsed_s)


def test_the_old_progress_name_still_works_with_a_warning() -> None:
    import aiogovernor.dispatch as dispatch

    with pytest.warns(DeprecationWarning, match="StudyProgress"):
        old = dispatch.Progress
    assert old is StudyProgress
    with pytest.raises(AttributeError):
        dispatch.NoSuchName  # noqa: B018


def test_live_view_redraws_during_a_run_and_stops_with_the_last_frame() -> None:
    out = console()
    draws = 0

    async def main() -> None:
        nonlocal draws
        pool = pool_of()
        snapshot = pool.snapshot

        def counting() -> PoolSnapshot:
            nonlocal draws
            draws += 1
            return snapshot()

        pool.snapshot = counting  # type: ignore[method-assign]
        async with LiveView(pool, console=out, refresh_s=0.05) as view:
            assert view.active
            task = view._task
            await asyncio.gather(*(pool.run({"x": x}) for x in range(3)))
        assert not active(view)
        await asyncio.sleep(0)
        assert task is not None and task.done()

    run_virtual(main())
    assert draws >= 4, "drawn at start, while running, and at the end"
    text = out.export_text()  # not a terminal: rich prints only the last frame
    assert "trials 3/?: 0 running, 0 queued, 3 completed, 0 failed" in text
    assert rows(text)["ep1"] == ["closed", "2", "0", "0", "3", "0", "100%"]


def test_live_view_stops_when_the_block_raises_or_is_cancelled() -> None:
    async def main() -> None:
        pool = pool_of("IN_PROGRESS")  # jobs that never end
        out = console()
        view = LiveView(pool, console=out)
        with pytest.raises(RuntimeError, match="boom"):
            async with view:
                raise RuntimeError("boom")
        assert not view.active and "trials 0/?" in out.export_text()

        async def watched() -> None:
            async with LiveView(pool, console=console()) as inner:
                views.append(inner)
                await pool.run({"x": 1})

        views: list[LiveView] = []
        trial = asyncio.ensure_future(watched())
        await asyncio.sleep(1.0)
        assert views[0].active
        trial.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trial
        assert not active(views[0])
        assert pool.snapshot().endpoints[0].inflight == 0

    run_virtual(main())


def test_optimize_remote_live_shows_the_pool_and_clears_up(capsys: pytest.CaptureFixture[str]) -> None:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    async def main() -> Any:
        pool = pool_of()
        result = await optimize_remote(
            study, 4, lambda t: {"x": t.suggest_int("x", 1, 3)}, lambda o: o["v"], pool=pool, live=True
        )
        await asyncio.sleep(0)  # the cancelled refresher ends on the next pass
        return result, asyncio.all_tasks()

    result, tasks = run_virtual(main())
    assert result.completed == 4 and len(tasks) == 1, "no refresher task left behind"
    out = " ".join(capsys.readouterr().out.split())
    assert "trials 4/4: 0 running, 0 queued, 4 completed, 0 failed" in out
    assert f"best {study.best_value:.6g}" in out and "ep1 closed 2 0 0 4 0" in out


def test_without_rich_the_view_shows_nothing_and_the_study_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import optuna

    monkeypatch.setitem(sys.modules, "rich.live", None)
    monkeypatch.setitem(sys.modules, "rich.table", None)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))

    async def main() -> Any:
        pool = pool_of()
        view = LiveView(pool)
        assert view.start() is False and not view.active
        view.stop()
        return await optimize_remote(
            study, 3, lambda t: {"x": t.suggest_int("x", 1, 3)}, lambda o: o["v"], pool=pool, live=True
        )

    assert run_virtual(main()).completed == 3
    assert capsys.readouterr().out == ""


def test_live_view_rejects_bad_arguments() -> None:
    with pytest.raises(TypeError, match="EndpointPool"):
        LiveView("pool")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refresh_s"):
        LiveView(pool_of(), refresh_s=0)


def test_importing_dispatch_does_not_import_rich() -> None:
    import subprocess

    code = "import sys, aiogovernor.dispatch; print('rich' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
