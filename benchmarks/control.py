"""Control quality side by side: every policy on the standard scenarios, as fractions of the oracle.

Beside aiogovernor's policies it runs the other installable Python adaptive limiters
(gentlify, ace-concurrency, adaptive-concurrency, aimd-limiter: ``pip install --group bench``)
through the adapters in ``_adapters.py``, on the same scenarios.

    .venv/bin/python benchmarks/control.py            # ~2 min, writes docs/img/control-*.png
    .venv/bin/python benchmarks/control.py --no-plot
    .venv/bin/python benchmarks/control.py --no-outside   # aiogovernor's policies only
    .venv/bin/python benchmarks/control.py --only noisy   # the models of real servers' noise only
    .venv/bin/python benchmarks/control.py --walls        # the default's probe pace at hard walls
    .venv/bin/python benchmarks/control.py --draws 6      # the default over 6 draws, cold and steady
                                                          # (beside itself without slow start, and
                                                          # without the pause rule)
    .venv/bin/python benchmarks/control.py --draws 6 --policy mine=path/to/mine.py:make
                                                          # and a policy under development beside them
    .venv/bin/python benchmarks/control.py --late-joiner 10   # two governors, the second 0.3 s later

The noisy scenarios (`noisy_scenarios()`: worker pools with a FIFO backlog, CPU-bound
servers, a proxy wall, a token bucket, correlated stalls, a client whose loop lags) are
swept for their own oracle, over the fixed limits in ``NOISY_SWEEPS``.

Virtual time: the figures are deterministic, not timings.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import statistics
from collections.abc import Callable

from _policy_arg import load_factory

from aiogovernor.limits import AIMD, Gradient, LatencyAIMD, LimitPolicy, Profile, ThroughputAIMD, Vegas
from aiogovernor.sim import (
    Client,
    Gate,
    KneeUpstream,
    Scenario,
    ScenarioResult,
    WallUpstream,
    noisy_scenarios,
    run_scenario,
    shared_wall_scenario,
    standard_scenarios,
    sweep_fixed,
)

POLICIES: dict[str, Callable[[], LimitPolicy]] = {
    "LatencyAIMD (default)": LatencyAIMD,
    "Gradient": Gradient,
    "Vegas": Vegas,
    "AIMD": AIMD,
    "ThroughputAIMD (throughput)": ThroughputAIMD,
}
ORACLE_OF = {"knee-high-start": "knee", "low-demand": None, "shift": None, "shared": None}
# Fixed limits swept for each noisy scenario's oracle: around its knee, and past it.
NOISY_SWEEPS = {
    "backlog": [4, 6, 8, 10, 12, 16],
    "cpu-bound": [1, 2, 3, 4, 6, 8],
    "cpu-saturates": [16, 18, 20, 22, 24, 28, 32],
    "proxy-wall": [12, 14, 15, 16],
    "token-bucket": [6, 8, 10, 12, 16, 20, 24],
    "stalls": [12, 14, 16, 18, 20, 24],
    "busy-client": [10, 12, 14, 16, 18, 20, 24],
    "flaky-5xx": [10, 12, 14, 16, 18, 20, 24],
    "shared-host": [4, 6, 7, 8, 9, 10, 12, 16, 24],
    "shared-host-cpu": [1, 2, 3, 4, 6, 8],
    "client-collapse": [24, 28, 30, 32, 34, 36, 40],
}
Entry = Callable[[], LimitPolicy | Gate] | int


def outside_limiters(scenario: Scenario) -> dict[str, tuple[Entry, contextlib.AbstractContextManager[None]]]:
    """The other libraries' adapters for ``scenario``, each with the context it must run in."""
    try:
        from _adapters import ADAPTERS, gate_factory, virtual_clock
    except ImportError as exc:  # the bench group is not installed
        print(f"(skipping the other libraries: {exc}; pip install --group bench)")
        return {}
    return {name: (gate_factory(name, scenario), virtual_clock()) for name in ADAPTERS}


SHARED_WALL_SEEDS = (7, 8, 9, 10, 11)


def wall_scenarios() -> dict[str, Scenario]:
    """Hard walls beyond the standard ones: several governors sharing one, and one that moves."""
    return {
        **{f"shared wall {seed}": shared_wall_scenario(seed=seed) for seed in SHARED_WALL_SEEDS},
        # A 429 wall at 16 that moves to 32, then down to 8.
        "moving wall": Scenario(
            name="moving-wall",
            upstream=lambda: WallUpstream(capacity=16, service_time_s=0.05, seed=2),
            duration_s=60.0,
            settle_s=15.0,
            clients=(Client(callers=160),),
            capacity_schedule=((20.0, 32), (40.0, 8)),
            initial_limit=1,
        ),
    }


def cold_wall(duration_s: float) -> Scenario:
    """A 429 wall at 16 measured from 0.8 s after a cold start at 4, as ``real_upstreams.py`` runs a row."""
    return Scenario(
        name="cold-wall",
        upstream=lambda: WallUpstream(capacity=16, service_time_s=0.05, seed=3),
        duration_s=duration_s,
        settle_s=0.8,
        clients=(Client(callers=200),),
        initial_limit=4,
    )


def walls() -> None:
    """The default's pace of probing at hard walls: refusals against fairness and finding a grown wall.

    The shared wall runs with five seeds (its fairness depends on who happens to be refused
    first): median and worst. The cold-start columns run the wall as the reality benchmark
    runs a row (3 s from a cold start, the first 0.8 s not counted), and twice as long:
    there the first step past the wall weighs on the figure, not the probes.
    """
    scenarios = {
        "wall": standard_scenarios()["wall"],
        "proxy-wall": noisy_scenarios()["proxy-wall"],
        **wall_scenarios(),
        "cold 3 s": cold_wall(3.0),
        "cold 6 s": cold_wall(6.0),
    }
    best = {name: run_scenario(scenarios[name], 16).goodput for name in ("wall", "proxy-wall")}
    rows = [
        "| max_probe_backoff | wall: goodput / Fixed(16) | refused | proxy-wall: goodput / Fixed(16) "
        "| refused | shared wall: refused, median (worst) | Jain, median (worst) "
        "| moving wall 16 → 32 → 8: windows to within 10 % | cold start: refused in 3 s, 6 s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for backoff in (1, 2, 3, 4):

        def policy(backoff: int = backoff) -> LimitPolicy:
            return LatencyAIMD(max_probe_backoff=backoff)

        r = {name: run_scenario(scenario, policy) for name, scenario in scenarios.items()}
        moving = r["moving wall"]
        settled = []
        for start, end, capacity in moving.phases:
            t = moving.convergence_s(capacity, band=0.1, start_s=start, end_s=end)
            settled.append("-" if t is None else str(moving.windows_between(start, start + t)))
        shared = [r[f"shared wall {seed}"] for seed in SHARED_WALL_SEEDS]
        refused = sorted(x.overload_rate for x in shared)
        jain = sorted(x.fairness for x in shared)
        rows.append(
            f"| {backoff} | {r['wall'].goodput / best['wall']:.3f} | {r['wall'].overload_rate:.2%} "
            f"| {r['proxy-wall'].goodput / best['proxy-wall']:.3f} | {r['proxy-wall'].overload_rate:.2%} "
            f"| {statistics.median(refused):.2%} ({refused[-1]:.2%}) "
            f"| {statistics.median(jain):.3f} ({jain[0]:.3f}) | {' / '.join(settled)} "
            f"| {r['cold 3 s'].overload_rate:.2%}, {r['cold 6 s'].overload_rate:.2%} |"
        )
    print("\n".join(rows))


# Fixed limits swept for the best fixed limit of each cold run (3 s from a cold start).
COLD_SWEEPS = {
    "knee16": [16, 18],
    "wall16": [16],
    "heavy-tail16": [16, 18, 20],
    "flaky16": [16, 18],
    "knee32": [32, 36],
    "wall32": [32],
    "heavy-tail32": [32, 36, 40],
    "flaky32": [32, 36],
    "cpu-saturates": [20, 22, 24, 28],
    "proxy-wall": [16],
    "busy-client": [14, 16, 18, 20],
    "stalls": [16, 18, 20],
    "shared-host": [6, 8, 10],
    "backlog": [8, 10, 12],
    "token-bucket": [8, 10, 12, 16],
    "flaky-5xx": [14, 16, 18, 20],
    "client-collapse": [28, 32, 36],
}
STEADY_DRAWN = (
    "knee",
    "heavy-tail",
    "flaky",
    "cpu-saturates",
    "busy-client",
    "flaky-5xx",
    "stalls",
    "shared-host",
    "client-collapse",
)


def cold_scenarios(seed: int) -> dict[str, Scenario]:
    """Runs shaped as ``real_upstreams.py`` runs a row: 3 s from the policy's own start, 0.8 s not counted."""
    made: dict[str, Scenario] = {}
    for c in (16, 32):
        standard = standard_scenarios(capacity=c, service_time_s=0.06, duration_s=3.0, seed=seed)
        for name in ("knee", "wall", "heavy-tail", "flaky"):
            made[f"{name}{c}"] = standard[name]
    noisy = noisy_scenarios(duration_s=3.0, seed=seed)
    made.update({name: noisy[name] for name in COLD_SWEEPS if name in noisy})
    cold = {"settle_s": 0.8, "initial_limit": None}
    return {name: dataclasses.replace(scenario, **cold) for name, scenario in made.items()}


def cell(values: list[float], digits: int = 3) -> str:
    """A table cell: the median of ``values`` and, in brackets, the worst (lowest)."""
    return f"{statistics.median(values):.{digits}f} ({min(values):.{digits}f})"


def draws(n: int, more: dict[str, Callable[[], LimitPolicy]] | None = None) -> None:
    """The default beside itself without slow start and without the pause rule, over ``n`` draws.

    A closed loop is chaotic: one draw of a model can be lucky or unlucky for a policy, so the
    figures are the median (worst) over draws 1..n of goodput over the best fixed limit of the
    same draw. Three tables: cold 3 s runs (as the reality benchmark runs a row), the steady
    state of the scenarios above, and Jain's index and goodput of the four governors of ``shared``.
    ``more`` adds contenders (``--policy``).
    """
    contenders: dict[str, Callable[[], LimitPolicy]] = {
        "default": LatencyAIMD,
        "without slow start": lambda: LatencyAIMD(slow_start=False),
        "without the pause rule": lambda: LatencyAIMD(pause_allowance=0.0),
        **(more or {}),
    }
    cold: dict[str, dict[str, list[float]]] = {}
    refused: dict[str, dict[str, list[float]]] = {}
    steady: dict[str, dict[str, list[float]]] = {}
    jain: dict[str, list[float]] = {name: [] for name in contenders}
    shared_goodput: dict[str, list[float]] = {name: [] for name in contenders}
    for seed in range(1, n + 1):
        for sname, scenario in cold_scenarios(seed).items():
            best = max(run_scenario(scenario, limit).goodput for limit in COLD_SWEEPS[sname])
            for pname, make in contenders.items():
                r = run_scenario(scenario, make)
                cold.setdefault(sname, {}).setdefault(pname, []).append(r.goodput / best)
                refused.setdefault(sname, {}).setdefault(pname, []).append(r.overload_rate)
        everything = {**standard_scenarios(seed=seed), **noisy_scenarios(seed=seed)}
        for sname in STEADY_DRAWN:
            sweep = NOISY_SWEEPS.get(sname, range(13, 20))
            best = sweep_fixed(everything[sname], sweep).goodput
            for pname, make in contenders.items():
                r = run_scenario(everything[sname], make)
                steady.setdefault(sname, {}).setdefault(pname, []).append(r.goodput / best)
        for pname, make in contenders.items():
            r = run_scenario(everything["shared"], make)
            jain[pname].append(r.fairness)
            shared_goodput[pname].append(r.goodput)

    names = list(contenders)
    header = "| scenario | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names)
    print(f"Cold 3 s runs, goodput / best fixed, median (worst) over {n} draws; refused, median")
    print(header)
    for sname, per in cold.items():
        cells = []
        for pname in names:
            worst_refused = statistics.median(refused[sname][pname])
            cells.append(cell(per[pname]) + (f", {worst_refused:.2%} refused" if worst_refused else ""))
        print(f"| {sname} | " + " | ".join(cells) + " |")
    every = {pname: [x for per in cold.values() for x in per[pname]] for pname in names}
    print("| every cold run | " + " | ".join(cell(every[p]) for p in names) + " |")
    print(f"\nSteady state, goodput / oracle, median (worst) over {n} draws")
    print(header)
    for sname, per in steady.items():
        print(f"| {sname} | " + " | ".join(cell(per[p]) for p in names) + " |")
    print(f"\nshared: Jain's index and goodput (requests/s, all four) over {n} draws, median (worst)")
    print(header)
    print("| Jain | " + " | ".join(cell(jain[p]) for p in names) + " |")
    print("| goodput | " + " | ".join(cell(shared_goodput[p], 0) for p in names) + " |")


def late_joiner_scenario(seed: int, duration_s: float) -> Scenario:
    """Two governors of 100 callers on a knee of 16 at 60 ms, the second 0.3 s later.

    The simulated twin of ``real_upstreams.py``'s row ``knee16-shared``.
    """
    return Scenario(
        name="late-joiner",
        upstream=lambda: KneeUpstream(capacity=16, service_time_s=0.06, seed=seed),
        duration_s=duration_s,
        settle_s=0.8,
        clients=(Client(callers=100), Client(callers=100, start_s=0.3)),
        initial_limit=None,
        seed=seed,
    )


def late_joiner(n: int, more: dict[str, Callable[[], LimitPolicy]] | None = None) -> None:
    """Jain's index of two governors, the second joining 0.3 s later, over draws 1..n of 3 s and 10 s runs.

    Shares are counted from 0.8 s, as the reality benchmark counts its row with two governors.
    """
    contenders: dict[str, Callable[[], LimitPolicy]] = {"default": LatencyAIMD, **(more or {})}
    names = list(contenders)
    print(
        f"Two governors on a knee of 16, the second 0.3 s later: Jain's index over {n} draws, median (worst)"
    )
    print("| run | " + " | ".join(names) + " |\n| --- |" + " ---: |" * len(names))
    for duration_s in (3.0, 10.0):
        cells = []
        for make in contenders.values():
            indices = [
                run_scenario(late_joiner_scenario(seed, duration_s), make).fairness
                for seed in range(1, n + 1)
            ]
            cells.append(cell(indices))
        print(f"| {duration_s:g} s | " + " | ".join(cells) + " |")


def policy_arg(spec: str) -> tuple[str, Callable[[], LimitPolicy]]:
    """A ``--policy`` as a contender: its callable returns a policy (or a `Profile`'s policy)."""
    name, factory = load_factory(spec)

    def make() -> LimitPolicy:
        made = factory()
        if isinstance(made, Profile):
            return made.policy()
        if not isinstance(made, LimitPolicy):
            raise TypeError(f"--policy {spec!r} returned {made!r}, not a policy or a Profile")
        return made

    make()  # fail now, not halfway through the run
    return name, make


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=16)
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--no-outside", action="store_true", help="skip the other libraries")
    parser.add_argument("--only", choices=["standard", "noisy"], help="one set of scenarios")
    parser.add_argument("--walls", action="store_true", help="only the default's probe pace at hard walls")
    parser.add_argument(
        "--draws",
        type=int,
        metavar="N",
        help="only the default, beside itself without slow start and without the pause rule",
    )
    parser.add_argument(
        "--policy",
        action="append",
        default=[],
        metavar="[NAME=]module:callable",
        help="with --draws or --late-joiner: a policy under development beside the default",
    )
    parser.add_argument(
        "--late-joiner",
        type=int,
        metavar="N",
        help="only two governors on one knee, the second 0.3 s later: Jain's index over N draws",
    )
    args = parser.parse_args()
    if args.policy and args.draws is None and args.late_joiner is None:
        parser.error("--policy runs with --draws or --late-joiner")
    if args.late_joiner is not None:
        if args.late_joiner < 1:
            parser.error("--late-joiner must be at least 1")
        late_joiner(args.late_joiner, dict(policy_arg(spec) for spec in args.policy))
        return
    if args.walls:
        walls()
        return
    if args.draws is not None:
        if args.draws < 1:
            parser.error("--draws must be at least 1")
        draws(args.draws, dict(policy_arg(spec) for spec in args.policy))
        return
    c = args.capacity
    scenarios = {} if args.only == "noisy" else standard_scenarios(capacity=c)
    oracles = {}
    for name in ("knee", "wall", "heavy-tail", "flaky"):
        if name in scenarios:
            oracles[name] = sweep_fixed(scenarios[name], range(c - 3, c + 4))
    if args.only != "standard":
        noisy = noisy_scenarios()
        scenarios.update(noisy)
        for name, sweep in NOISY_SWEEPS.items():
            oracles[name] = sweep_fixed(noisy[name], sweep)
    rows = [
        "| scenario | policy | goodput / oracle | overload | p99 ms | mean limit | converged (s) |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    results: dict[str, dict[str, ScenarioResult]] = {}
    for sname, scenario in scenarios.items():
        oracle_name = ORACLE_OF.get(sname, sname)
        entries: dict[str, tuple[Entry, contextlib.AbstractContextManager[None]]] = {
            name: (policy, contextlib.nullcontext()) for name, policy in POLICIES.items()
        }
        if not args.no_outside:
            entries.update(outside_limiters(scenario))
        if oracle_name is not None:
            entries[f"Fixed({oracles[oracle_name].limit}) = oracle"] = (
                oracles[oracle_name].limit,
                contextlib.nullcontext(),
            )
        for pname, (policy, context) in entries.items():
            with context:
                r = run_scenario(scenario, policy)
            results.setdefault(sname, {})[pname] = r
            ratio = f"{r.goodput / oracles[oracle_name].goodput:.2f}" if oracle_name else f"{r.goodput:.0f}/s"
            target = r.phases[0][2] if sname != "shared" else None
            conv = r.convergence_s(target, end_s=r.phases[0][1]) if target and sname != "low-demand" else None
            rows.append(
                f"| {sname} | {pname} | {ratio} | {r.overload_rate:.2%} | {r.latency_p99_s * 1000:.0f} | "
                f"{r.mean_limit:.1f} | {'-' if conv is None else f'{conv:.1f}'} |"
            )
    print("\n".join(rows))
    if not args.no_plot and args.only != "noisy":
        plot(results, pathlib.Path(__file__).parent.parent / "docs" / "img")


def plot(results: dict[str, dict[str, ScenarioResult]], folder: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for sname in ("knee", "wall", "shift"):
        fig, ax = plt.subplots(figsize=(10, 3.5))
        for pname, r in results[sname].items():
            style = "-" if pname in POLICIES or "oracle" in pname else "--"
            ax.plot(
                [t for t, _ in r.limits()],
                [lim for _, lim in r.limits()],
                style,
                label=pname,
                linewidth=1,
            )
        ax.set_title(f"limit over time: {sname}")
        ax.set_xlabel("simulated seconds")
        ax.set_ylabel("limit")
        ax.set_ylim(0, 4 * max(r.phases[0][2] for r in results[sname].values()))
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # off-scale lines: see the table
        fig.tight_layout()
        fig.savefig(folder / f"control-{sname}.png", dpi=90)
        plt.close(fig)
        print(f"wrote {folder / f'control-{sname}.png'}")


if __name__ == "__main__":
    main()
