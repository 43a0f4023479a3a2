"""Trial dispatch: 200 Optuna trials over 3 local serverless endpoints, one 30 % failing, one dead.

Side by side, in one run, against the same local server (uvicorn in a thread):

- ``pool``: `optimize_remote` over an `EndpointPool` (governors seeded from
  /health, breakers, failover);
- ``naive``: the seed's shape: trials sent round-robin at a fixed concurrency
  equal to the live workers, no failover, a failure ends the trial.

Reported: trials COMPLETE / FAIL (each FAIL must carry a reason), jobs left
running on the server (orphans), and wall time over the ideal for the healthy
capacity: trials × job time ÷ (healthy workers + 70 % of the flaky ones).
Medians over ``--repeat`` runs.

    .venv/bin/python benchmarks/dispatch.py            # about 45 s
    .venv/bin/python benchmarks/dispatch.py --trials 1000 --repeat 5
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import time
from typing import Any

import optuna

from aiogovernor.dispatch import EndpointPool, JobClient, optimize_remote
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless


def objective(payload: Any) -> Any:
    return {"value": (payload["x"] - 2.0) ** 2 + (payload["y"] + 1.0) ** 2}


def build(trial: optuna.Trial) -> Any:
    return {"x": trial.suggest_float("x", -10, 10), "y": trial.suggest_float("y", -10, 10)}


def clients(server: LocalServerless, seed: int) -> list[JobClient]:
    return [
        JobClient(
            name,
            api_key=server.api_key,
            base_url=server.base_url,
            poll_interval_s=0.01,
            max_poll_interval_s=0.05,
            seed=seed + i,
        )
        for i, name in enumerate(("healthy", "flaky", "dead"))
    ]


async def run_pool(server: LocalServerless, trials: int, seed: int) -> dict[str, Any]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    start = time.perf_counter()
    async with EndpointPool(clients(server, seed), failure_threshold=3, reset_timeout_s=1.0) as pool:
        await optimize_remote(study, trials, build, lambda out: float(out["value"]), pool=pool)
    wall = time.perf_counter() - start
    return summarise(study, wall)


async def run_naive(server: LocalServerless, trials: int, seed: int, concurrency: int) -> dict[str, Any]:
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, constant_liar=True))
    cs = clients(server, seed)
    rr = itertools.cycle(cs)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            trial = study.ask()
            try:
                status = await next(rr).run(build(trial))
            except Exception as exc:
                trial.set_user_attr("fail_reason", str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, float(status.output["value"]))

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(trials)))
    wall = time.perf_counter() - start
    for c in cs:
        await c.aclose()
    return summarise(study, wall)


def summarise(study: optuna.Study, wall: float) -> dict[str, Any]:
    states = [t.state for t in study.trials]
    fails = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    return {
        "wall": wall,
        "complete": states.count(optuna.trial.TrialState.COMPLETE),
        "fail": len(fails),
        "fail_without_reason": sum(1 for t in fails if not t.user_attrs.get("fail_reason")),
        "unfinished": sum(1 for s in states if not s.is_finished()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--workers", type=int, default=4, help="workers per live endpoint")
    parser.add_argument("--job-s", type=float, default=0.2, help="job duration")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    endpoints = {
        "healthy": FakeEndpoint(workers=args.workers, job_duration_s=args.job_s, compute=objective),
        "flaky": FakeEndpoint(
            workers=args.workers, job_duration_s=args.job_s, failure_rate=0.3, seed=1, compute=objective
        ),
        "dead": FakeEndpoint(dead=True),
    }
    ideal = args.trials * args.job_s / (args.workers + 0.7 * args.workers)
    rows: dict[str, list[dict[str, Any]]] = {"pool": [], "naive": []}
    orphans = 0
    with LocalServerless(endpoints) as server:
        for rep in range(args.repeat):
            rows["pool"].append(asyncio.run(run_pool(server, args.trials, seed=rep)))
            orphans = max(orphans, server.live_jobs())
            rows["naive"].append(asyncio.run(run_naive(server, args.trials, rep, 2 * args.workers)))
            orphans = max(orphans, server.live_jobs())

    print(f"{args.trials} trials, {args.workers} workers per live endpoint, jobs of {args.job_s:g}s, ")
    print(
        f"3 endpoints (healthy, 30% failing, dead); ideal wall time {ideal:.2f}s; medians of {args.repeat}\n"
    )
    print("| driver | COMPLETE | FAIL | FAIL without reason | unfinished | wall / ideal |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, runs in rows.items():

        def med(key: str, runs: list[dict[str, Any]] = runs) -> float:
            return statistics.median(r[key] for r in runs)

        print(
            f"| {name} | {med('complete'):g} | {med('fail'):g} | {med('fail_without_reason'):g} "
            f"| {med('unfinished'):g} | {med('wall') / ideal:.2f}x |"
        )
    print(f"\njobs left running on the server after every run (orphans): {orphans}")


if __name__ == "__main__":
    main()
