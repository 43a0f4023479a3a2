"""The default policy at hard walls: refusals with no latency warning, found by touching them.

Each probe past a remembered ceiling that the wall refuses costs refusals, so the wait
before the next probe at the same ceiling doubles (up to ``max_probe_backoff`` times
``probe_interval_windows``), and the cut after it goes back just below the wall. A probe
that runs clean, or a refusal at another limit (the wall moved), brings the first pace back.
Scripted windows first (no event loop), then closed loops in virtual time.
"""

from __future__ import annotations

import functools
import itertools

import pytest

from aiogovernor.limits import LatencyAIMD, LatencyBaseline
from aiogovernor.sim import (
    Client,
    Scenario,
    ScenarioResult,
    WallUpstream,
    noisy_scenarios,
    run_scenario,
    standard_scenarios,
)
from aiogovernor.testing import window


def _policy(initial_limit: int = 16, **kwargs: object) -> LatencyAIMD:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    return LatencyAIMD(initial_limit=initial_limit, baseline=baseline, **kwargs)  # type: ignore[arg-type]


def _against(policy: LatencyAIMD, walls: list[int]) -> list[int]:
    """The gate's limit in each window against a sharp wall: any limit past ``walls[i]`` is refused."""
    limits = []
    for wall in walls:
        limit = max(1, int(policy.limit))
        policy.update(window(ok=30, overload=1 if limit > wall else 0, latency_s=0.05, limit=limit))
        limits.append(limit)
    return limits


def _probes(limits: list[int], wall: int) -> list[int]:
    return [i for i, limit in enumerate(limits) if limit > wall]


def test_probes_at_the_same_wall_grow_further_apart() -> None:
    limits = _against(_policy(probe_interval_windows=5, max_probe_backoff=4), [16] * 200)
    probes = _probes(limits, 16)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    # From the first touch of the wall, every failed probe doubles the wait before the next
    # (5, 10, then 20 windows at most: probe_interval_windows x max_probe_backoff), plus the
    # probe's own window.
    assert gaps[:5] == [6, 11, 21, 21, 21], gaps


def test_the_default_pace_halves_the_probes_of_earlier_versions() -> None:
    now = _probes(_against(_policy(), [16] * 200), 16)
    before = _probes(_against(_policy(max_probe_backoff=1), [16] * 200), 16)
    # 10 windows between failed probes instead of 5: each probe costs a refusal.
    assert len(now) <= 0.6 * len(before), (now, before)
    # Every cut stays multiplicative (x backoff_ratio), and the limit goes back to just
    # below the wall: no window under 15 once the wall is known.
    assert min(_against(_policy(), [16] * 200)[now[1] :]) == 15


def test_a_wall_that_moves_up_is_found_after_one_longest_wait() -> None:
    p = _policy(max_probe_backoff=4)
    _against(p, [16] * 120)  # the wait has grown to its longest
    limits = _against(p, [24] * 80)
    # The next probe comes within the longest wait and runs clean: the ceiling is
    # forgotten, and the limit grows to the new wall.
    assert limits.index(24) <= 20 + 12, limits
    # The new wall is a new ceiling: probed at the first pace again, not after 20 windows.
    probes = _probes(limits, 24)
    assert probes[1] - probes[0] <= 5 + 2, limits


def test_a_wall_that_moves_down_resets_the_pace() -> None:
    p = _policy(max_probe_backoff=4)
    _against(p, [16] * 120)
    limits = _against(p, [12] * 60)
    assert max(limits[5:]) <= 13, limits  # followed at once: a refusal at any limit cuts
    probes = _probes(limits, 12)
    assert probes[2] - probes[1] <= 5 + 2, limits


def test_a_step_into_the_wall_is_undone_in_one_cut() -> None:
    limits = _against(_policy(initial_limit=4), [16] * 40)
    touches = _probes(limits, 16)
    # Growth steps double after a run of clean windows, so the first touch overshoots the
    # wall by several permits; x0.9 would still be above it (one more round of refusals).
    assert limits[touches[0]] >= 18, limits
    assert limits[touches[0] + 1] <= 16, limits
    # From there additive growth finds the wall itself: the next touch is one past it.
    assert limits[touches[1]] == 17, limits


@pytest.mark.parametrize("value", [0, -1, 1.5, "8"])
def test_max_probe_backoff_is_validated(value: object) -> None:
    with pytest.raises((ValueError, TypeError), match="max_probe_backoff"):
        LatencyAIMD(max_probe_backoff=value)  # type: ignore[arg-type]


# -- closed loops in virtual time --------------------------------------------------------------

SCENARIOS = {
    "wall": standard_scenarios(capacity=16)["wall"],
    "proxy-wall": noisy_scenarios()["proxy-wall"],
}
# A 429 wall at 16 that moves to 32, then down to 8: a grown capacity must still be found.
MOVING = Scenario(
    name="moving-wall",
    upstream=lambda: WallUpstream(capacity=16, service_time_s=0.05, seed=21),
    duration_s=45.0,
    settle_s=8.0,
    clients=(Client(callers=200),),
    capacity_schedule=((15.0, 32), (30.0, 8)),
    initial_limit=1,
)


@functools.cache
def result(name: str, policy: int | None = None) -> ScenarioResult:
    scenario = MOVING if name == "moving-wall" else SCENARIOS[name]
    return run_scenario(scenario, LatencyAIMD if policy is None else policy)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_a_hard_wall_costs_little_overload_and_no_goodput(name: str) -> None:
    r, best = result(name), result(name, 16)  # the wall is at 16: Fixed(16) is the oracle
    assert r.overload_rate <= 0.005, r.summary()
    assert r.goodput >= 0.97 * best.goodput, (r.summary(), best.goodput)


def test_a_moving_wall_is_followed() -> None:
    r = result("moving-wall")
    for start, end, capacity in r.phases:
        settled = r.convergence_s(capacity, band=0.1, start_s=start, end_s=end)
        assert settled is not None, (capacity, r.limits())
        # Up: within the longest probe wait (40 windows) and the climb; down: at once.
        assert r.windows_between(start, start + settled) <= 60, (capacity, settled)
    assert r.overload_rate <= 0.005, r.summary()
