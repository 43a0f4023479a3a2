"""Trial dispatch: Optuna studies over local serverless endpoints, this code against a baseline.

Four cases, each a study driven by `optimize_remote` over an `EndpointPool`
against the local serverless server (`LocalServerless`, uvicorn in a thread):

- ``mixed``: 200 trials over ``healthy`` (4 workers), ``flaky`` (4 workers, 30 %
  of jobs fail) and ``dead`` (503 to everything); jobs of 0.2 s. Wall time over
  the ideal for the live capacity: trials × job time ÷ (4 + 0.7 × 4) workers.
  Also ``naive`` (this code only): trials sent round-robin at a fixed
  concurrency of 8, no failover, a failure ends the trial.
- ``queue6``: 200 trials over two endpoints of 4 workers whose queues hold 6
  jobs (then 429 with Retry-After: 1); jobs of 0.2 s. Wall time over the
  ideal, trials × job time ÷ 8 workers. Target: ≤ 1.2×.
- ``flaky40``: 100 trials over ``healthy`` and ``flaky`` (both 4 workers, 40 % of
  flaky's jobs fail: lost with their worker where the server can say so);
  trials completed on each endpoint.
- ``wrong_key``: a 200-trial study whose key the endpoints refuse: time until
  the study ends (stopped after ``--cap-s``). Target: ≤ 5 s.

Each case runs in a fresh process, alternating between the baseline and
this code, ``--repeat`` times; the tables give the median and the worst run.
Without ``--baseline`` only this code runs.

    .venv/bin/python benchmarks/dispatch.py                       # about a minute
    .venv/bin/python benchmarks/dispatch.py --baseline OLD/src    # OLD: a checkout of the code before
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

JOB_S = 0.2
WORKERS = 4


def objective(payload: Any) -> Any:
    return {"value": (payload["x"] - 2.0) ** 2 + (payload["y"] + 1.0) ** 2}


def build(trial: Any) -> Any:
    return {"x": trial.suggest_float("x", -10, 10), "y": trial.suggest_float("y", -10, 10)}


def endpoint(**kwargs: Any) -> Any:
    """A `FakeEndpoint`, passing only the fields this version of it has (the baseline's may lack some)."""
    from aiogovernor.dispatch.testing import FakeEndpoint

    known = {f.name for f in dataclasses.fields(FakeEndpoint)}
    return FakeEndpoint(**{k: v for k, v in kwargs.items() if k in known})


def clients(server: Any, names: list[str], seed: int, **kwargs: Any) -> list[Any]:
    from aiogovernor.dispatch import JobClient

    return [
        JobClient(
            name,
            api_key=kwargs.get("api_key", server.api_key),
            base_url=server.base_url,
            poll_interval_s=0.01,
            max_poll_interval_s=0.05,
            seed=seed + i,
        )
        for i, name in enumerate(names)
    ]


def new_study(seed: int) -> Any:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    # Random sampling: TPE's CPU time per ask (it grows with the trials) would weigh on the
    # loop that also polls, and this measures dispatch, not the sampler.
    return optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))


def summarise(study: Any, wall: float) -> dict[str, Any]:
    import optuna

    trials = study.trials
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    fails = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    per_endpoint: dict[str, int] = {}
    for t in done:
        name = t.user_attrs.get("endpoint", "?")
        per_endpoint[name] = per_endpoint.get(name, 0) + 1
    return {
        "wall": wall,
        "complete": len(done),
        "fail": len(fails),
        "fail_without_reason": sum(1 for t in fails if not t.user_attrs.get("fail_reason")),
        "unfinished": sum(1 for t in trials if not t.state.is_finished()),
        "per_endpoint": per_endpoint,
    }


async def drive(server: Any, names: list[str], trials: int, seed: int, **pool_kwargs: Any) -> dict[str, Any]:
    from aiogovernor.dispatch import EndpointPool, optimize_remote

    study = new_study(seed)
    start = time.perf_counter()
    async with EndpointPool(clients(server, names, seed), **pool_kwargs) as pool:
        await optimize_remote(study, trials, build, lambda out: float(out["value"]), pool=pool)
    return summarise(study, time.perf_counter() - start)


async def naive(server: Any, trials: int, seed: int) -> dict[str, Any]:
    import optuna

    study = new_study(seed)
    cs = clients(server, ["healthy", "flaky", "dead"], seed)
    rr = itertools.cycle(cs)
    gate = asyncio.Semaphore(2 * WORKERS)

    async def one() -> None:
        async with gate:
            trial = study.ask()
            client = next(rr)
            try:
                status = await client.run(build(trial))
            except Exception as exc:
                trial.set_user_attr("fail_reason", str(exc))
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                trial.set_user_attr("endpoint", client.endpoint_id)
                study.tell(trial, float(status.output["value"]))

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(trials)))
    wall = time.perf_counter() - start
    for c in cs:
        await c.aclose()
    return summarise(study, wall)


async def wrong_key(server: Any, trials: int, seed: int, cap_s: float) -> dict[str, Any]:
    from aiogovernor.dispatch import EndpointPool, optimize_remote

    study = new_study(seed)
    start = time.perf_counter()
    ended = "stopped"
    pool = EndpointPool(clients(server, ["healthy", "flaky"], seed, api_key="sk-mistyped"))
    try:
        async with asyncio.timeout(cap_s):
            async with pool:
                await optimize_remote(study, trials, build, lambda out: float(out["value"]), pool=pool)
            ended = "returned"
    except TimeoutError:
        ended = "stopped"
    except Exception as exc:
        ended = type(exc).__name__
    wall = time.perf_counter() - start
    return {**summarise(study, wall), "ended": ended}


def child(case: str, seed: int, trials: int, cap_s: float) -> dict[str, Any]:
    from aiogovernor.dispatch.testing import LocalServerless

    base = {"workers": WORKERS, "job_duration_s": JOB_S, "compute": objective}
    if case in ("mixed", "naive"):
        endpoints = {
            "healthy": endpoint(**base),
            "flaky": endpoint(**base, failure_rate=0.3, seed=1),
            "dead": endpoint(dead=True),
        }
    elif case == "queue6":
        endpoints = {n: endpoint(**base, queue_limit=6, retry_after_s=1.0) for n in ("q1", "q2")}
    else:
        endpoints = {
            "healthy": endpoint(**base),
            "flaky": endpoint(**base, failure_rate=0.4, failure_mode="lost", seed=1),
        }
    with LocalServerless(endpoints) as server:
        if case == "mixed":
            row = asyncio.run(
                drive(
                    server,
                    ["healthy", "flaky", "dead"],
                    trials,
                    seed,
                    failure_threshold=3,
                    reset_timeout_s=1.0,
                )
            )
        elif case == "naive":
            row = asyncio.run(naive(server, trials, seed))
        elif case == "queue6":
            row = asyncio.run(drive(server, ["q1", "q2"], trials, seed))
        elif case == "flaky40":
            row = asyncio.run(drive(server, ["flaky", "healthy"], trials // 2, seed))
        else:
            row = asyncio.run(wrong_key(server, trials, seed, cap_s))
        row["orphans"] = server.live_jobs()
        row["rejected"] = sum(server.counters(name).rejected for name in endpoints)
    return row


CASES = ("mixed", "naive", "queue6", "flaky40", "wrong_key")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cap-s", type=float, default=30.0, help="stop a wrong-key study after this long")
    parser.add_argument("--baseline", help="the src folder of the code to compare against")
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.seed, args.trials, args.cap_s)))
        return

    cases = [c for c in args.cases.split(",") if c]
    impls = {"this": None} if not args.baseline else {"baseline": args.baseline, "this": None}
    rows: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for rep in range(args.repeat):
        for case in cases:
            for impl, src in impls.items():
                if case == "naive" and impl != "this":
                    continue
                env = dict(os.environ)
                if src is not None:
                    env["PYTHONPATH"] = os.path.abspath(src)
                command = [sys.executable, __file__, "--child", case, "--seed", str(rep)]
                command += ["--trials", str(args.trials), "--cap-s", str(args.cap_s)]
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
                rows.setdefault((case, impl), []).append(json.loads(out.strip().splitlines()[-1]))
                print(f"rep {rep} {case} {impl}: done", file=sys.stderr)
    report(rows, args)


def report(rows: dict[tuple[str, str], list[dict[str, Any]]], args: argparse.Namespace) -> None:
    def med_worst(runs: list[dict[str, Any]], key: str, worst: Any = max) -> str:
        values = [r[key] for r in runs]
        return f"{statistics.median(values):.3g} / {worst(values):.3g}"

    flaky_trials = args.trials // 2
    print(
        f"\n{args.trials} trials (flaky40: {flaky_trials}); jobs of {JOB_S:g}s; "
        f"median / worst of {args.repeat}\n"
    )
    ideal = {
        "mixed": args.trials * JOB_S / (WORKERS + 0.7 * WORKERS),
        "queue6": args.trials * JOB_S / (2 * WORKERS),
    }
    print("| case | code | COMPLETE | FAIL | FAIL without reason | unfinished | orphans | wall / ideal |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for (case, impl), runs in rows.items():
        if case not in ideal and case != "naive":
            continue
        wall = [r["wall"] / ideal["mixed" if case == "naive" else case] for r in runs]
        print(
            f"| {case} | {impl} | {med_worst(runs, 'complete', min)} | {med_worst(runs, 'fail')} "
            f"| {med_worst(runs, 'fail_without_reason')} | {med_worst(runs, 'unfinished')} "
            f"| {med_worst(runs, 'orphans')} | {statistics.median(wall):.2f}x / {max(wall):.2f}x |"
        )
    for (case, impl), runs in rows.items():
        if case == "flaky40":
            healthy = [r["per_endpoint"].get("healthy", 0) for r in runs]
            flaky = [r["per_endpoint"].get("flaky", 0) for r in runs]
            complete = [r["complete"] for r in runs]
            print(
                f"\nflaky40 {impl}: completed on healthy {statistics.median(healthy):g} "
                f"(worst {min(healthy)}), "
                f"on flaky {statistics.median(flaky):g} (worst {max(flaky)}); "
                f"COMPLETE {statistics.median(complete):g} (worst {min(complete)}) of {args.trials // 2}"
            )
    for (case, impl), runs in rows.items():
        if case == "wrong_key":
            walls = [r["wall"] for r in runs]
            ends = sorted({r["ended"] for r in runs})
            asked = [r["complete"] + r["fail"] + r["unfinished"] for r in runs]
            print(
                f"\nwrong_key {impl}: ended after {statistics.median(walls):.2f}s (worst {max(walls):.2f}s), "
                f"how: {', '.join(ends)}; trials asked {statistics.median(asked):g}, "
                f"unfinished {max(r['unfinished'] for r in runs)}, orphans {max(r['orphans'] for r in runs)}"
            )


if __name__ == "__main__":
    main()
