"""The default policy against models of real servers' noise, in virtual time.

Each model (`aiogovernor.sim.noisy_scenarios`) is shaped after a real server on loopback:
a sync worker pool's FIFO backlog, CPU-bound workers, a proxy's connection wall, a token
bucket that delays then refuses, correlated stalls, a client whose own loop lags. The
oracle is the best fixed limit of a short sweep around each model's knee (a fixed limit
past the knee of a FIFO or CPU-bound server only adds latency, so the sweep stops there).

Each summary is kept as a golden file under tests/golden/noisy-*.json; regenerate them
deliberately with ``AIOGOVERNOR_UPDATE_GOLDEN=1`` and explain the change in the commit.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import pathlib

import pytest

from aiogovernor.limits import Adjustment, BoundedPolicy, LatencyAIMD, Window
from aiogovernor.sim import (
    Oracle,
    ScenarioResult,
    noisy_scenarios,
    run_scenario,
    standard_scenarios,
    sweep_fixed,
)

GOLDEN = pathlib.Path(__file__).parent / "golden"
SCENARIOS = noisy_scenarios()
SWEEPS = {
    "backlog": [8, 12],
    "cpu-bound": [2, 3, 6],
    "cpu-saturates": [24, 28, 32],
    "proxy-wall": [15, 16],
    "token-bucket": [8, 10, 16],
    "stalls": [14, 16, 20],
    "busy-client": [14, 16, 20],
    "flaky-5xx": [14, 16, 20],
    "shared-host": [6, 8, 10, 16, 24],
    "shared-host-cpu": [1, 3, 4, 8],
    "client-collapse": [24, 30, 32, 40],
}
# Where the default misses the 0.97 target, the bound is what it reaches today, so that it
# cannot slip further unnoticed (docs/control.md says why, with the figures).
GOODPUT_BOUNDS = {
    # Measured 0.961 (0.967 before slow start): the best fixed limit runs at about 1.4 x the
    # no-load latency (throughput still grows while latency rises), which a policy that reads
    # a latency rise as queueing only approaches. Over six other draws
    # (benchmarks/control.py --draws 6) the median is 0.920, 0.935 without slow start.
    "cpu-saturates": 0.95,
    # Measured 0.88 on this draw (0.81 before growth waited where goodput fell, 0.86 before a
    # rising window stopped taking the step chosen the window before; 0.73 before the goodput
    # rule): the client's own CPU is the bottleneck and its loop lag explains the latency
    # rise, so only goodput falling as the limit grows holds it back, and the fit's best
    # limit sits at 9-11 where the best fixed limit is 8. Over six other draws
    # (benchmarks/control.py --draws 6) the median is 0.921, the worst 0.875.
    "shared-host": 0.85,
    # Measured 0.91 on this draw (0.82 before growth waited where goodput fell; the real
    # default got 0.67-0.82 of the best fixed limit on the rows it stands for, before
    # ShardedTransport): slow start steps into the collapse, and each probe past the best
    # limit can start one that outlasts it. Over six other draws the median is 0.845
    # (0.794 without the wait), the worst 0.776 (docs/control.md, "Waiting where goodput fell").
    "client-collapse": 0.88,
}


@functools.cache
def result(name: str) -> ScenarioResult:
    return run_scenario(SCENARIOS[name], LatencyAIMD)


@functools.cache
def oracle(name: str) -> Oracle:
    return sweep_fixed(SCENARIOS[name], SWEEPS[name])


def test_every_noisy_scenario_is_swept() -> None:
    assert set(SWEEPS) == set(SCENARIOS)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_default_keeps_the_goodput_of_the_best_fixed_limit(name: str) -> None:
    r, best = result(name), oracle(name)
    bound = GOODPUT_BOUNDS.get(name, 0.97)
    assert r.goodput >= bound * best.goodput, (r.summary(), best)
    # A wall gives no warning: it is found by touching it, at most about once per probe.
    assert r.overload_rate <= (0.01 if name == "proxy-wall" else 0.005), r.summary()


def test_models_have_the_shapes_of_the_servers_they_stand_for() -> None:
    # FIFO backlog and CPU-bound workers: throughput flat past the knee (only latency grows).
    for name in ("backlog", "cpu-bound"):
        goodputs = oracle(name).goodputs
        assert goodputs[max(goodputs)] >= 0.99 * oracle(name).goodput, (name, goodputs)
    # The CPU saturates before the workers do: from 24 to 32 busy workers, +5 % at most.
    saturates = oracle("cpu-saturates").goodputs
    assert saturates[32] <= 1.06 * saturates[24], saturates
    # Past the token bucket's rate more concurrency buys nothing.
    assert oracle("token-bucket").goodputs[16] == pytest.approx(150, rel=0.02)
    # A client and a server sharing a loaded host: the client's CPU per response grows with
    # its connections, so goodput peaks well below the server's 32 workers and falls past it
    # (real: 103/s at 8, 70/s at 16, 50/s at 24).
    shared = oracle("shared-host").goodputs
    assert max(shared, key=lambda k: shared[k]) == 8, shared
    assert shared[16] <= 0.75 * shared[8] and shared[24] <= 0.55 * shared[8], shared
    # CPU-bound workers beside their client: flat past 3 at what 1.9 cores give (real: 63/s),
    # and half of it at 1, where each request's CPU and the client's run one after the other.
    cpu = oracle("shared-host-cpu").goodputs
    assert cpu[8] == pytest.approx(cpu[3], rel=0.02) and cpu[8] == pytest.approx(62, rel=0.05), cpu
    assert cpu[1] == pytest.approx(cpu[8] / 1.9, rel=0.05), cpu


def test_waiting_where_goodput_fell_keeps_the_client_out_of_its_collapse() -> None:
    # Without the wait, once the goodput fit had forgotten the fall (every window since at or
    # below the best), steps that doubled after a few clean windows ran past the collapse
    # again within a second: 380/s on this draw, against 438/s with it (best fixed 463/s).
    without = run_scenario(SCENARIOS["client-collapse"], functools.partial(LatencyAIMD, fall_wait_windows=0))
    assert result("client-collapse").goodput >= 1.1 * without.goodput, (result("client-collapse"), without)


class _Then(BoundedPolicy):
    """``first`` until ``at_s``, then ``then``: a load that comes and goes."""

    name = "then"

    def __init__(self, first: int, then: int, at_s: float) -> None:
        super().__init__(min_limit=1, max_limit=max(first, then), initial_limit=first)
        self._then, self._at_s = then, at_s

    def reset(self, limit: float) -> None:
        """Keep ``first``: the scenario's own start does not apply."""

    def update(self, window: Window) -> Adjustment:
        return self._set(self._then, "then") if window.end >= self._at_s else self._hold("first")


def test_a_client_collapse_outlasts_its_cause() -> None:
    # The client's CPU per response grows with its idle connections times its pool: goodput
    # rises with the limit to about 32 and collapses past it (real, quiet host: 365/s at 24,
    # ~430/s at 32 with collapses of 0.25-1.5 s, 106-209/s at 40).
    goodputs = oracle("client-collapse").goodputs
    best = oracle("client-collapse").goodput
    assert oracle("client-collapse").limit in (30, 32), goodputs
    assert goodputs[24] >= 0.75 * best and goodputs[40] <= 0.45 * best, goodputs
    # Metastable: after 2 s at 40, a limit of 32 stays collapsed (a fresh 32 does not), while
    # 28 recovers at once (real: cuts to 30-43 stayed collapsed, cuts to 15-21 recovered).
    late = dataclasses.replace(noisy_scenarios(duration_s=5.0)["client-collapse"], settle_s=3.0)
    fresh = {limit: run_scenario(late, limit).goodput for limit in (28, 32)}
    after = {
        limit: run_scenario(late, functools.partial(_Then, 40, limit, 2.0)).goodput for limit in (28, 32)
    }
    assert after[32] <= 0.6 * fresh[32], (after, fresh)
    assert after[28] >= 0.95 * fresh[28], (after, fresh)
    with pytest.raises(ValueError, match="client_cost_per_idle_pair_s"):
        dataclasses.replace(late, client_cost_per_idle_pair_s=-1.0)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_golden_summary(name: str) -> None:
    summary = result(name).summary()
    path = GOLDEN / f"noisy-{name}.json"
    if os.environ.get("AIOGOVERNOR_UPDATE_GOLDEN") == "1":
        path.write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    assert path.exists(), f"no golden file {path}: run with AIOGOVERNOR_UPDATE_GOLDEN=1"
    assert json.loads(path.read_text()) == summary, "summary changed: regenerate deliberately"


def test_a_seed_draws_every_model_again() -> None:
    # seed=0 is the standard draw (golden files, bounds); another seed is another draw of the
    # same models, the same each time it is asked for.
    def requests(seed: int, name: str) -> int:
        standard = standard_scenarios(duration_s=2.0, seed=seed)
        everything = {**standard, **noisy_scenarios(duration_s=2.0, seed=seed)}
        return run_scenario(everything[name], 16).requests

    for name in ("flaky", "stalls"):
        assert requests(0, name) == requests(0, name)
        assert requests(1, name) == requests(1, name)
        assert requests(1, name) != requests(0, name)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="seed"):
            standard_scenarios(seed=bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="seed"):
            noisy_scenarios(seed=bad)  # type: ignore[arg-type]
