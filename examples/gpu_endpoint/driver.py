"""Run an Optuna study against the GPU worker through `optimize_remote`; trials/s against a fixed sweep.

For each fixed number of jobs in flight in ``--sweep``, then for a governor with the
library's default policy (it adapts to the jobs' latency), runs
``--trials`` trials of a study tuning the MLP's learning rate and weight decay, and
reports trials/s, the mean and p95 job latency, and where the governor's limit
settled. On an H100 with small MLPs the best fixed value is about 4-8 jobs at once;
the governor should get within a few percent of it.

Start the worker first (``worker.py``), then:

    python examples/gpu_endpoint/driver.py --url http://127.0.0.1:8100 --trials 64

Without a GPU, ``--simulate 0.1`` runs the same study against a local endpoint
timed by the H100 measurement (`GpuWorkerModel.h100_mlp1024`, ten times faster
than the GPU): the governor's figures against that model, not a GPU's.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from typing import Any

import optuna

from aiogovernor import Fixed, Governor
from aiogovernor.dispatch import EndpointPool, JobClient, RunPodProtocol, optimize_remote


def build_input(trial: optuna.Trial) -> Any:
    return {
        "lr": trial.suggest_float("lr", 1e-4, 3e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 1e-1, log=True),
    }


async def one_run(args: argparse.Namespace, fixed: int | None) -> dict[str, Any]:
    protocol = RunPodProtocol(api_key_env="GPU_WORKER_API_KEY")
    # The governor row: the library's default policy, which reads the jobs' latency
    # (a GPU's knee shows there, not in refusals). store=None: each row starts afresh.
    policy = Fixed(fixed) if fixed is not None else None
    governor = Governor(f"dispatch-gpu-{fixed or 'governor'}", policy, store=None)
    client = JobClient(
        "gpu",
        api_key=args.api_key,
        base_url=args.url,
        protocol=protocol,
        governor=governor,
        max_jobs=64,
        # Trials of a second or less: poll often, or the polling delay hides the GPU's timing.
        poll_interval_s=0.02,
        max_poll_interval_s=0.1,
    )
    limits: list[int] = []
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    # Not started (no /health seeding): a worker's /health may count its concurrency slots
    # as workers, and the governor is to find how many jobs the GPU should run at once.
    pool = EndpointPool([client])

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.5)
            limits.append(client.governor.limit)

    watcher = asyncio.create_task(watch())
    start = time.perf_counter()
    try:
        result = await optimize_remote(study, args.trials, build_input, lambda out: out["loss"], pool=pool)
    finally:
        watcher.cancel()
        await pool.aclose()
    wall = time.perf_counter() - start
    durations = [t.duration.total_seconds() for t in study.trials if t.duration is not None]
    return {
        "name": "governor" if fixed is None else f"fixed {fixed}",
        "trials_per_s": result.completed / wall,
        "completed": result.completed,
        "failed": result.failed,
        "p50_s": statistics.median(durations) if durations else float("nan"),
        "p95_s": statistics.quantiles(durations, n=20)[-1] if len(durations) > 1 else float("nan"),
        "limit": statistics.mean(limits[len(limits) // 2 :]) if limits else float(fixed or 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8100")
    parser.add_argument("--api-key", default=os.environ.get("GPU_WORKER_API_KEY", "local-gpu-key"))
    parser.add_argument("--trials", type=int, default=64)
    parser.add_argument("--sweep", default="1,2,4,8,16", help="fixed jobs in flight to compare")
    parser.add_argument(
        "--simulate",
        type=float,
        metavar="TIME_SCALE",
        help="no GPU: a local endpoint timed by the H100 table",
    )
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.simulate is None:
        rows = sweep(args)
    else:
        from aiogovernor.dispatch.testing import FakeEndpoint, GpuWorkerModel, LocalServerless

        model = GpuWorkerModel.h100_mlp1024()
        endpoint = FakeEndpoint(
            workers=64, gpu=model, time_scale=args.simulate, compute=lambda p: {"loss": p["lr"] * 100}
        )
        with LocalServerless({"gpu": endpoint}, api_key=args.api_key) as server:
            args.url = server.base_url
            rows = sweep(args)
    report(rows)


def sweep(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = [asyncio.run(one_run(args, int(n))) for n in args.sweep.split(",") if n]
    rows.append(asyncio.run(one_run(args, None)))
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    best = max(r["trials_per_s"] for r in rows[:-1])
    print("| in flight | trials/s | of best fixed | p50 trial s | p95 trial s | completed | failed | limit |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['name']} | {r['trials_per_s']:.2f} | {r['trials_per_s'] / best:.0%} | {r['p50_s']:.2f} "
            f"| {r['p95_s']:.2f} | {r['completed']} | {r['failed']} | {r['limit']:.1f} |"
        )


if __name__ == "__main__":
    main()
