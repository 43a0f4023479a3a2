"""The noise models beside the real servers they stand for: fixed limits, side by side.

Reads what ``benchmarks/real_upstreams.py --json FILE`` wrote and runs the matching models of
`aiogovernor.sim.noisy_scenarios` at the same fixed limits (plus a few around them), then
prints, per limit, the real goodput (median and worst repetition), p99 (median) and client
CPU per response (median) beside the model's, and each one's goodput as a fraction of its
own best fixed limit. The model runs once per real repetition, each another draw of its
randomness (``seed``), shaped as the real run was (its length and warm-up, from a cold start
at the fixed limit) with ``--as-run``, else over the model's own 20 s.

    .venv/bin/python benchmarks/real_upstreams.py --rows knee32,gunicorn-cpu --policies default \
        --json real.json
    .venv/bin/python benchmarks/calibrate_models.py real.json
    .venv/bin/python benchmarks/calibrate_models.py --as-run real.json

Virtual time: the model's figures are deterministic; the real ones are whatever the host gave.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import statistics
from typing import Any

from aiogovernor.sim import Scenario, noisy_scenarios, run_scenario

# Real row -> the models shaped after it, each with extra limits to run the model at.
# shared-host was fitted to knee32 on a host loaded by other work, client-collapse to
# knee32 and knee64 on a quiet one.
MODEL_OF = {
    "knee32": [("shared-host", [6, 10]), ("client-collapse", [28, 36, 40])],
    "knee64": [("client-collapse", [28, 36])],
    "gunicorn-cpu": [("shared-host-cpu", [6])],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("real", type=pathlib.Path, help="a JSON file written by real_upstreams.py --json")
    parser.add_argument(
        "--as-run", action="store_true", help="run the model as the real run was: 3 s, 0.8 s warm-up"
    )
    args = parser.parse_args()
    rows: list[dict[str, Any]] = json.loads(args.real.read_text())
    for row in rows:
        for model, extra in MODEL_OF.get(row["row"], []):
            table(row, model, extra, as_run=args.as_run)


def scenario(model: str, seed: int, *, as_run: bool) -> Scenario:
    if not as_run:
        return noisy_scenarios(seed=seed)[model]
    # real_upstreams.py: 3 s per run, the first 0.8 s not counted.
    return dataclasses.replace(noisy_scenarios(duration_s=3.0, seed=seed)[model], settle_s=0.8)


def table(row: dict[str, Any], model: str, extra: list[int], *, as_run: bool) -> None:
    real = {int(limit): runs for limit, runs in row["fixed"].items()}
    reps = len(next(iter(real.values())))
    limits = sorted(set(real) | set(extra))
    modelled = {
        limit: [run_scenario(scenario(model, seed, as_run=as_run), limit) for seed in range(reps)]
        for limit in limits
    }
    model_median = {limit: statistics.median(r.goodput for r in runs) for limit, runs in modelled.items()}
    real_median = {limit: statistics.median(r["goodput"] for r in runs) for limit, runs in real.items()}
    real_best = max(real_median.values())
    model_best = max(model_median.values())
    shape = "3 s runs" if as_run else "20 s runs"
    title = f"**{row['title']}** (real, {reps} repetitions)"
    print(f"\n{title} beside `{model}` (model, {reps} draws, {shape})\n")
    print(
        "| fixed limit | real goodput/s: median (worst) | model goodput/s: median (worst) | real / best "
        "| model / best | real p99 ms | model p99 ms | real client CPU ms per response |"
    )
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for limit in limits:
        runs = modelled[limit]
        worst = min(r.goodput for r in runs)
        m_goodput = f"{model_median[limit]:.0f} ({worst:.0f})"
        m_p99 = f"{statistics.median(r.latency_p99_s for r in runs) * 1000:.0f}"
        if limit in real:
            got = real[limit]
            goodput = f"{real_median[limit]:.0f} ({min(r['goodput'] for r in got):.0f})"
            share = f"{real_median[limit] / real_best:.2f}"
            p99 = f"{statistics.median(r['p99_ms'] for r in got):.0f}"
            cpu = statistics.median(r.get("cpu_ms_per_response", float("nan")) for r in got)
            cpu_cell = f"{cpu:.2f}"
        else:
            goodput = share = p99 = cpu_cell = "-"
        print(
            f"| {limit} | {goodput} | {m_goodput} | {share} | {model_median[limit] / model_best:.2f} | "
            f"{p99} | {m_p99} | {cpu_cell} |"
        )


if __name__ == "__main__":
    main()
