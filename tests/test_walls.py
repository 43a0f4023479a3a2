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

import anyio
import pytest

from aiogovernor import AIMD, Decision, Governor, Outcome, Permit, WindowConfig
from aiogovernor.limits import LatencyAIMD, LatencyBaseline
from aiogovernor.sim import (
    Client,
    Scenario,
    ScenarioResult,
    WallUpstream,
    noisy_scenarios,
    run_scenario,
    shared_wall_scenario,
    standard_scenarios,
)
from aiogovernor.testing import wait_until, window

ONE_SAMPLE_WINDOWS = WindowConfig(min_samples=1, min_duration_s=0.0, latency_multiple=0.0)


def _policy(initial_limit: int = 16, **kwargs: object) -> LatencyAIMD:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    # Past slow start, growing by one a window, as a policy that has run a while.
    kwargs.setdefault("slow_start", False)
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
    # 15 windows between failed probes at a wall of 16 instead of 5: each probe costs a refusal.
    assert len(now) <= 0.6 * len(before), (now, before)
    # Every cut stays multiplicative (x backoff_ratio), and the limit goes back to just
    # below the wall: no window under 15 once the wall is known.
    assert min(_against(_policy(), [16] * 200)[now[1] :]) == 15


@pytest.mark.parametrize(("wall", "gap"), [(2, 5), (4, 8), (7, 13), (16, 15), (40, 15)])
def test_the_longest_wait_grows_with_the_wall(wall: int, gap: int) -> None:
    # A refused probe costs a refusal to learn one permit, worth more to a small limit: the
    # wait grows by one probe interval (5 windows) per three permits of the refused limit,
    # from one interval up to max_probe_backoff (3) of them.
    limits = _against(_policy(initial_limit=wall), [wall] * 300)
    probes = _probes(limits, wall)
    gaps = [b - a for a, b in itertools.pairwise(probes)]
    assert gaps[-3:] == [gap + 1] * 3, gaps  # plus the probe's own window


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


@pytest.mark.parametrize("wall", [15, 16])
def test_a_step_into_the_wall_probed_every_limit_it_went_past(wall: int) -> None:
    # From 4, growth doubles after five clean windows: 9, 11, 15, then 20, past the wall.
    limits = _against(_policy(initial_limit=4), [wall] * 40)
    touches = _probes(limits, wall)
    assert limits[touches[0]] == 20, limits
    # Back to 15, the limit climbs by one and touches the wall again within two windows:
    # a limit that the step to 20 went past already, so that is the same wall refusing a
    # second time, and the next probe waits the doubled interval (5 windows, then 10),
    # as a refused probe's would; before, it was taken for a new wall, probed at the first pace.
    assert touches[1] - touches[0] <= 3, limits
    assert limits[touches[1]] == wall + 1, limits
    assert touches[2] - touches[1] == 2 * 5 + 1, limits


def test_a_clean_window_above_the_refused_step_forgets_it() -> None:
    p = _policy(initial_limit=4)
    _against(p, [15] * 9)  # the step to 20 refused: back to 15
    # The wall moved to 22: 16 ... 20 run clean, past the whole refused step, and the
    # refusal at 23 is a new wall, probed at the first pace (not after the doubled wait).
    limits = _against(p, [22] * 30)
    touches = _probes(limits, 22)
    assert limits[: touches[0]] == list(range(15, 22)), limits
    assert touches[1] - touches[0] <= 5 + 2, limits


@pytest.mark.anyio
async def test_permits_handed_over_before_a_decrease_are_of_that_congestion_event() -> None:
    """A refusal handled between a hand-off and the waiters' turn cuts the limit once, not once per waiter.

    Raising the limit hands permits to waiters at once, but their tasks run later; an
    upstream that refuses without any I/O (or a refusal handled first in the same turn of
    the loop) lowers the limit in between. The work those permits admit was admitted under
    the old limit: its refusals are stale, as the thread gate (which makes the permit at the
    hand-off) already had it. Before, each such permit read the new generation when its task
    ran, and a step of several permits into a wall cut the limit once per permit.
    """
    gov = Governor("handoff", AIMD(initial_limit=1, max_limit=10), store=None, window=ONE_SAMPLE_WINDOWS)
    decreases: list[Decision] = []
    gov.add_listener(lambda d: decreases.append(d) if d.new_limit < d.old_limit else None)
    holder = await gov.acquire()
    refused = 0

    async def waiter() -> None:
        nonlocal refused
        permit: Permit = await gov.acquire()
        permit.release(Outcome.OVERLOAD)  # the wall refuses it too
        refused += 1

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(waiter)
        await wait_until(lambda: gov.waiting == 3)
        gov.reset_limit(4)  # hands a permit to each waiter; their tasks have not run yet
        holder.release(Outcome.OVERLOAD)  # a fresh refusal first: one decrease
    assert refused == 3
    assert len(decreases) == 1, [d.reason for d in decreases]
    assert gov.inflight == 0


def test_a_step_into_a_wall_that_refuses_at_once_is_one_decrease() -> None:
    """Closed loop: the simulated wall refuses without a wait, in the same turn as the hand-off.

    Slow start's step from 13 to 19 or 20 (four or five permits past a wall at 15) is cut
    once, back to 13, the last limit not refused, and the limit stays near the wall; before, each of the
    other permits of such a step cut it again (15, 13.5, 12.2, 10.9, 9.8).
    """
    reasons: list[tuple[int, float, str]] = []

    class Logged(LatencyAIMD):
        def update(self, window):  # type: ignore[no-untyped-def]
            adjustment = super().update(window)
            reasons.append((window.limit, self.limit, adjustment.reason))
            return adjustment

    scenario = Scenario(
        name="cold-wall",
        upstream=lambda: WallUpstream(capacity=15, service_time_s=0.05, seed=3),
        duration_s=3.0,
        settle_s=0.8,
        clients=(Client(callers=200),),
        initial_limit=4,
    )
    r = run_scenario(scenario, Logged)
    first = next(i for i, (limit, _, _) in enumerate(reasons) if limit > 15)
    assert reasons[first][1] == 13.0, reasons[first : first + 6]
    assert "the last limit not refused" in reasons[first][2], reasons[first : first + 6]
    assert "from before the last decrease" in reasons[first + 1][2], reasons[first : first + 6]
    # Only work admitted past the wall is refused, so no window at 15 or under ever cuts.
    cuts_under_the_wall = [x for x in reasons if x[0] <= 15 and x[1] < x[0]]
    assert not cuts_under_the_wall, reasons[first : first + 6]
    assert r.mean_limit >= 14.5, r.summary()


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


def test_governors_sharing_a_wall_get_fair_shares_at_few_refusals() -> None:
    # Four governors on a wall of 32 hold about 8 permits each, where a cut of x0.9 is less
    # than the one permit a refusal takes: every probe past the saturated wall is refused
    # and goes back, so the shares the governors reach while joining are the shares they
    # keep. A governor with fewer permits probes sooner (its longest wait is shorter) and
    # takes the room others leave first. Measured on these seeds (benchmarks/control.py
    # --walls runs five): Jain 0.952, 0.960, 0.985 (0.943, 0.945, 0.915 before), refused
    # 0.52 %, 0.47 %, 0.45 % (0.62 %, 0.64 %, 0.65 % before).
    results = [run_scenario(shared_wall_scenario(seed=seed), LatencyAIMD) for seed in (7, 10, 11)]
    fairness = sorted(r.fairness for r in results)
    refused = sorted(r.overload_rate for r in results)
    assert fairness[1] >= 0.95 and fairness[0] >= 0.94, fairness
    assert refused[1] <= 0.005 and refused[-1] <= 0.0055, refused


def test_the_shared_wall_scenario_refuses_a_bad_seed() -> None:
    assert shared_wall_scenario(seed=3).name == "shared-wall"
    with pytest.raises(ValueError, match="seed"):
        shared_wall_scenario(seed=-1)
    with pytest.raises(ValueError, match="seed must be an integer"):
        shared_wall_scenario(seed=1.5)  # type: ignore[arg-type]
