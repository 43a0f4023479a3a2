"""On-demand workers: a WorkerPool against a ProcessPoolExecutor kept alive, and recycling at scale.

Side by side, in one run, interleaved and repeated:

- **bursty load**: ``--bursts`` bursts of ``--burst-jobs`` jobs of 50 ms of
  CPU each, ``--quiet-s`` of quiet after each. ``fixed`` is a
  ``ProcessPoolExecutor(max_workers=cores)`` started (and warmed) before the
  run and kept alive; ``pool`` is a `WorkerPool` with ``max_workers=cores``
  and ``idle_timeout_s=--idle-timeout-s``, cold at the start of each burst
  once its workers have been reaped. Reported: busy time (the sum of each
  burst's first-submit-to-last-result time, the quiet left out) and idle
  worker-seconds, as ratios pool / fixed: for the fixed pool, its workers'
  alive time minus the jobs' own run time; for the pool, the sampled time
  of its ready workers with no job, and also everything alive but not in a
  job (starting workers included), counted as for the fixed pool; the pool's spawn latency (spawn to
  ready); and the time from a burst's last result to the exit of its last
  idle worker (about ``idle_timeout_s``).
- where the pool's job functions live (``--jobs-from``): in a small module
  (the default; the fixed pool always uses it), or in this script, which
  each worker then runs again (importing asyncio and aiogovernor), as
  `multiprocessing`'s spawn would.
- **recycling**: ``--recycle-jobs`` trivial jobs through ``pool.map`` with
  ``max_jobs_per_worker=10`` and without: jobs lost, jobs duplicated,
  throughput ratio.

    .venv/bin/python benchmarks/workers.py                  # 10 000 jobs recycled: long on 2 busy cores
    .venv/bin/python benchmarks/workers.py --bursts 2 --repeat 2 --recycle-jobs 2000
    .venv/bin/python benchmarks/workers.py --bursts 2 --repeat 2 --recycle-jobs 2000 --jobs-from main
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import _worker_jobs

from aiogovernor.workers import WorkerEvent, WorkerPool, WorkerType

JOB_CPU_S = 0.05


def cpu_job(seconds: float) -> float:
    """`_worker_jobs.cpu_job`, defined in the main script: a worker must run this script to find it."""
    start_wall = time.perf_counter()
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return time.perf_counter() - start_wall


def echo(n: int) -> int:
    return n


def job_functions(where: str) -> tuple[Any, Any]:
    """The jobs, from this script (a worker re-runs it, importing aiogovernor) or from a small module."""
    if where == "main":
        return cpu_job, echo
    return _worker_jobs.cpu_job, _worker_jobs.echo


class StateMeter:
    """Integrates worker-seconds per state (idle, starting, alive) by sampling the pool every ``every_s``."""

    def __init__(self, pool: WorkerPool, every_s: float = 0.01) -> None:
        self._pool = pool
        self._every_s = every_s
        self.idle_s = self.starting_s = self.alive_s = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(self._every_s)
            now = time.perf_counter()
            status = self._pool.status()["cpu"]
            self.idle_s += status.idle * (now - last)
            self.starting_s += status.starting * (now - last)
            self.alive_s += len(status.workers) * (now - last)
            last = now

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def bursty_pool(args: argparse.Namespace, cores: int) -> dict[str, Any]:
    fn = job_functions(args.jobs_from)[0]
    spec = WorkerType("cpu", fn=fn, max_workers=cores, idle_timeout_s=args.idle_timeout_s)
    events: list[tuple[float, WorkerEvent]] = []
    busy_s = job_s = 0.0
    to_last_exit: list[float] = []
    async with WorkerPool(spec) as pool:
        pool.add_listener(lambda e: events.append((time.perf_counter(), e)))
        meter = StateMeter(pool)
        meter.start()
        for _ in range(args.bursts):
            start = time.perf_counter()
            walls = await asyncio.gather(*(pool.run("cpu", JOB_CPU_S) for _ in range(args.burst_jobs)))
            end = time.perf_counter()
            busy_s += end - start
            job_s += sum(walls)
            await asyncio.sleep(args.quiet_s)
            exits = [t for t, e in events if e.kind == "exit" and t > end]
            if exits and not pool.status()["cpu"].workers:
                to_last_exit.append(max(exits) - end)
        await meter.stop()
    spawn = [float(m.group(1)) for _, e in events if (m := re.match(r"started in ([\d.]+)s", e.reason))]
    return {
        "busy_s": busy_s,
        # Ready and jobless, as sampled; and everything alive but not in a job (starting included),
        # counted the way the fixed pool's idle time is.
        "idle_worker_s": meter.idle_s,
        "not_in_job_s": meter.alive_s - job_s,
        "starting_s": meter.starting_s,
        "spawn_s": spawn,
        "to_last_exit_s": to_last_exit,
        "spawned": len(spawn),
    }


async def bursty_fixed(args: argparse.Namespace, cores: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    with ProcessPoolExecutor(max_workers=cores) as ppe:
        # Kept alive: started and warm before the run, as a long-lived service's pool is.
        await asyncio.gather(
            *(loop.run_in_executor(ppe, _worker_jobs.cpu_job, 0.0) for _ in range(cores * 4))
        )
        busy_s = job_s = 0.0
        start_all = time.perf_counter()
        for _ in range(args.bursts):
            start = time.perf_counter()
            walls = await asyncio.gather(
                *(loop.run_in_executor(ppe, _worker_jobs.cpu_job, JOB_CPU_S) for _ in range(args.burst_jobs))
            )
            busy_s += time.perf_counter() - start
            job_s += sum(walls)
            await asyncio.sleep(args.quiet_s)
        alive_worker_s = cores * (time.perf_counter() - start_all)
    # Every worker-second not spent in a job: the fixed pool's workers are never starting.
    return {"busy_s": busy_s, "idle_worker_s": alive_worker_s - job_s, "not_in_job_s": alive_worker_s - job_s}


async def recycling(n: int, max_jobs: int | None, cores: int, where: str) -> dict[str, Any]:
    spec = WorkerType(
        "echo",
        fn=job_functions(where)[1],
        max_workers=cores,
        max_jobs_per_worker=max_jobs,
        idle_timeout_s=5.0,
    )
    async with WorkerPool(spec) as pool:
        start = time.perf_counter()
        out = await pool.map("echo", range(n))
        elapsed = time.perf_counter() - start
        spawned = pool.status()["echo"].spawned
        spawn_failures = pool.status()["echo"].spawn_failures
    lost = sum(1 for i, v in enumerate(out) if v != i)
    duplicated = len(out) - len(set(out))
    lost += max(0, n - len(out))
    return {
        "per_s": n / elapsed,
        "lost": lost,
        "duplicated": duplicated,
        "spawned": spawned,
        "spawn_failures": spawn_failures,
    }


def spread(values: list[float]) -> str:
    if not values:
        return "n/a"
    return f"median {statistics.median(values):.3f}, worst {max(values):.3f} (n={len(values)})"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--burst-jobs", type=int, default=200)
    parser.add_argument("--quiet-s", type=float, default=5.0)
    parser.add_argument("--idle-timeout-s", type=float, default=1.0)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--recycle-jobs", type=int, default=10_000)
    parser.add_argument(
        "--jobs-from",
        choices=("main", "module"),
        default="module",
        help="where the pool's job functions live: this script (each worker re-runs it) or a module",
    )
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(
        f"cores={cores} bursts={args.bursts}x{args.burst_jobs} jobs of {JOB_CPU_S * 1000:.0f} ms CPU, "
        f"quiet {args.quiet_s:g}s, pool idle_timeout_s={args.idle_timeout_s:g}, jobs from {args.jobs_from}"
    )
    time_ratios: list[float] = []
    idle_ratios: list[float] = []
    not_in_job_ratios: list[float] = []
    spawn: list[float] = []
    to_exit: list[float] = []
    for rep in range(args.repeat):
        order = ("pool", "fixed") if rep % 2 == 0 else ("fixed", "pool")
        got: dict[str, dict[str, Any]] = {}
        for name in order:
            got[name] = await (bursty_pool if name == "pool" else bursty_fixed)(args, cores)
        p, f = got["pool"], got["fixed"]
        time_ratios.append(p["busy_s"] / f["busy_s"])
        idle_ratios.append(p["idle_worker_s"] / f["idle_worker_s"])
        not_in_job_ratios.append(p["not_in_job_s"] / f["not_in_job_s"])
        spawn += p["spawn_s"]
        to_exit += p["to_last_exit_s"]
        print(
            f"rep {rep + 1}: busy time pool {p['busy_s']:.2f}s fixed {f['busy_s']:.2f}s "
            f"(x{time_ratios[-1]:.3f}); idle worker-s pool {p['idle_worker_s']:.1f} "
            f"fixed {f['idle_worker_s']:.1f} ({idle_ratios[-1] * 100:.1f} %); pool starting "
            f"{p['starting_s']:.1f} worker-s, not in a job {p['not_in_job_s']:.1f} "
            f"({not_in_job_ratios[-1] * 100:.1f} %); pool spawned {p['spawned']}"
        )
    print(f"busy time pool/fixed:           {spread(time_ratios)}   (target <= 1.15)")
    print(f"idle worker-s pool/fixed:       {spread(idle_ratios)}   (target <= 0.25)")
    print(f"  + starting (not in a job):    {spread(not_in_job_ratios)}")
    print(f"spawn latency (s):              {spread(spawn)}")
    print(f"last result -> last exit (s):   {spread(to_exit)}   (idle_timeout_s={args.idle_timeout_s:g})")
    if args.recycle_jobs:
        plain = await recycling(args.recycle_jobs, None, cores, args.jobs_from)
        recycled = await recycling(args.recycle_jobs, 10, cores, args.jobs_from)
        print(
            f"recycling every 10 jobs over {args.recycle_jobs}: lost {recycled['lost']}, duplicated "
            f"{recycled['duplicated']}, {recycled['spawned']} workers started "
            f"({recycled['spawn_failures']} failed), "
            f"{recycled['per_s']:.0f} jobs/s vs {plain['per_s']:.0f} jobs/s without recycling "
            f"(x{recycled['per_s'] / plain['per_s']:.3f}); without: lost {plain['lost']}, "
            f"duplicated {plain['duplicated']}"
        )


if __name__ == "__main__":
    asyncio.run(main())
