"""The noise models beside the real servers they stand for: fixed limits, side by side.

Reads what ``benchmarks/real_upstreams.py --json FILE`` wrote and runs the matching model of
`aiogovernor.sim.noisy_scenarios` at the same fixed limits (plus a few around them), then
prints, per limit, the real goodput (median and worst repetition) and p99 (median) beside
the model's, and each one's goodput as a fraction of its own best fixed limit.

    .venv/bin/python benchmarks/real_upstreams.py --rows knee32,gunicorn-cpu --policies default \
        --json real.json
    .venv/bin/python benchmarks/calibrate_models.py real.json

Virtual time: the model's figures are deterministic; the real ones are whatever the host gave.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
from typing import Any

from aiogovernor.sim import noisy_scenarios, run_scenario

# Real row -> the model shaped after it, and extra limits to run the model at.
MODEL_OF = {
    "knee32": ("shared-host", [6, 10]),
    "gunicorn-cpu": ("shared-host-cpu", [6]),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("real", type=pathlib.Path, help="a JSON file written by real_upstreams.py --json")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = json.loads(args.real.read_text())
    scenarios = noisy_scenarios()
    for row in rows:
        if row["row"] not in MODEL_OF:
            continue
        model, extra = MODEL_OF[row["row"]]
        real = {int(limit): runs for limit, runs in row["fixed"].items()}
        limits = sorted(set(real) | set(extra))
        modelled = {limit: run_scenario(scenarios[model], limit) for limit in limits}
        real_median = {limit: statistics.median(r["goodput"] for r in runs) for limit, runs in real.items()}
        real_best = max(real_median.values())
        model_best = max(r.goodput for r in modelled.values())
        print(
            f"\n**{row['title']}** (real, {len(next(iter(real.values())))} repetitions)"
            f" beside `{model}` (model)\n"
        )
        print(
            "| fixed limit | real goodput/s: median (worst) | model goodput/s | real / best | model / best |",
            end="",
        )
        print(" real p99 ms | model p99 ms |")
        print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
        for limit in limits:
            m = modelled[limit]
            if limit in real:
                runs = real[limit]
                goodput = f"{real_median[limit]:.0f} ({min(r['goodput'] for r in runs):.0f})"
                share = f"{real_median[limit] / real_best:.2f}"
                p99 = f"{statistics.median(r['p99_ms'] for r in runs):.0f}"
            else:
                goodput = share = p99 = "-"
            print(
                f"| {limit} | {goodput} | {m.goodput:.0f} | {share} | {m.goodput / model_best:.2f} | "
                f"{p99} | {m.latency_p99_s * 1000:.0f} |"
            )


if __name__ == "__main__":
    main()
