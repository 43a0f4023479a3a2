"""LatencyAIMD, Gradient, Vegas, profiles and ResourceCeiling, fed scripted windows (no event loop)."""

from __future__ import annotations

import dataclasses

import pytest

from aiogovernor.limits import (
    AIMD,
    PROFILES,
    Gradient,
    LatencyAIMD,
    LatencyBaseline,
    ResourceCeiling,
    SizeBand,
    Vegas,
    default_policy,
    profile,
)
from aiogovernor.limits._baseline import pooled_median
from aiogovernor.sim import run_scenario, standard_scenarios
from aiogovernor.testing import window


def test_latency_aimd_cuts_to_littles_law_estimate_on_queueing() -> None:
    # No good floor here (see test_noise_models for it): the cut is Little's law's alone.
    p = LatencyAIMD(initial_limit=4, good_memory_windows=0)
    for _ in range(5):
        p.update(window(ok=40, latency_s=0.05, limit=int(p.limit)))
    limit = p.limit
    adj = p.update(window(ok=40, latency_s=0.1, limit=int(limit)))
    assert adj.limit == pytest.approx(limit / 2)
    assert "latency" in adj.reason
    # The next window's samples started before the cut: one congestion event, one decrease.
    assert p.update(window(ok=40, latency_s=0.1, limit=int(adj.limit))).limit == adj.limit


def test_latency_aimd_backs_off_on_overload_and_waits_below_the_ceiling() -> None:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    p = LatencyAIMD(initial_limit=20, probe_interval_windows=3, baseline=baseline)
    p.update(window(ok=40, latency_s=0.05, limit=20))
    adj = p.update(window(ok=30, overload=1, limit=21))
    assert adj.limit < 21 and "overload" in adj.reason
    limits = [p.update(window(ok=40, latency_s=0.05, limit=int(p.limit))).limit for _ in range(6)]
    assert max(limits[:2]) <= 20, limits
    assert max(limits) >= 21, "probes past the ceiling after the wait"


def test_latency_aimd_ignores_plain_errors_and_idle_windows() -> None:
    p = LatencyAIMD(initial_limit=5)
    assert p.update(window(ok=5, error=5, latency_s=0.05, limit=5, peak_inflight=2)).limit == 5


def test_latency_aimd_measures_the_baseline_when_started_high() -> None:
    p = LatencyAIMD(initial_limit=100, probe_limit=3, probe_samples=10)
    assert p.update(window(ok=40, latency_s=1.0, limit=100)).limit == 3
    assert p.update(window(ok=10, latency_s=0.05, limit=3, peak_inflight=3)).limit == 100
    assert p.baseline_s == pytest.approx(0.05)
    assert p.update(window(ok=40, latency_s=1.0, limit=100)).limit == 50  # max_decrease


def test_gradient_honours_overload_and_remeasures() -> None:
    g = Gradient(initial_limit=20, remeasure_windows=2, seed=1)
    assert g.update(window(ok=10, overload=2, limit=20)).limit == 18
    limits = [g.update(window(ok=30, latency_s=0.05, limit=int(g.limit))).limit for _ in range(4)]
    assert 3 in limits, "pins the probe limit to re-measure the minimum"


def test_gradient_shrinks_when_latency_rises() -> None:
    g = Gradient(initial_limit=20, smoothing=1.0)
    g.update(window(ok=30, latency_s=0.05, limit=20))
    assert g.update(window(ok=30, latency_s=0.2, limit=20)).limit < 20


def test_vegas_keeps_the_queue_between_alpha_and_beta() -> None:
    v = Vegas(initial_limit=10, slow_start=False)
    v.update(window(ok=30, latency_s=0.05, limit=10))
    assert v.update(window(ok=30, latency_s=0.05, limit=10)).limit > 10
    before = v.limit
    assert v.update(window(ok=30, latency_s=0.1, limit=int(before))).limit < before


def test_profiles_by_name_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert set(PROFILES) == {"conservative", "balanced", "aggressive"}
    assert profile("conservative").backoff_ratio < profile("aggressive").backoff_ratio
    monkeypatch.setenv("AIOGOVERNOR_PROFILE", "aggressive")
    assert profile().name == "aggressive"
    assert isinstance(default_policy(), LatencyAIMD)
    monkeypatch.setenv("AIOGOVERNOR_PROFILE", "reckless")
    with pytest.raises(ValueError, match="aggressive, balanced, conservative"):
        default_policy()


def test_resource_ceiling_hysteresis() -> None:
    readings = iter([(50.0, 10.0), (85.0, 10.0), (97.0, 10.0), (85.0, 10.0), (50.0, 10.0)])
    p = ResourceCeiling(
        AIMD(initial_limit=10, slow_start=False), cpu_target_percent=80, read=lambda: next(readings)
    )
    assert p.update(window(limit=10)).limit == 11  # cool: the inner policy grows
    adj = p.update(window(limit=11))
    assert adj.limit == 11 and "cpu 85% >= 80%" in adj.reason  # warm: no growth
    assert p.update(window(limit=11)).limit == pytest.approx(9.9)  # hot: shrink
    assert p.update(window(limit=9)).limit < 9.9 and p.hot  # still above target: keeps shrinking
    assert p.update(window(limit=8)).limit > 8 and not p.hot


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: LatencyAIMD(tolerance=0), "tolerance"),
        (lambda: LatencyAIMD(max_decrease=1.0), "max_decrease"),
        (lambda: Gradient(smoothing=0), "smoothing"),
        (lambda: Vegas(alpha=3, beta=2), "beta"),
        (
            lambda: ResourceCeiling(AIMD(), cpu_target_percent=90, cpu_high_percent=80, read=lambda: (0, 0)),
            "cpu_high",
        ),
        (lambda: ResourceCeiling(AIMD(), cpu_target_percent=None, memory_target_percent=None), "cpu_target"),
    ],
)
def test_bad_parameters_are_named(make: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make()  # type: ignore[operator]


def test_the_baseline_folds_in_small_windows_only_when_asked() -> None:
    baseline = LatencyBaseline()  # min_samples=10
    small = window(ok=4, latency_s=0.05)
    baseline.observe(small)
    assert baseline.references() == ()
    baseline.observe(small, min_samples=2)
    assert len(baseline.references()) == 1 and baseline.min_samples == 10
    with pytest.raises(ValueError, match="min_samples"):
        baseline.observe(small, min_samples=0)


def test_a_median_folds_in_as_its_window_would() -> None:
    """`observe_median` from a window's three figures is `observe(window, min_samples=2)`."""
    by_window, by_median = LatencyBaseline(), LatencyBaseline()
    for ok, latency_s in ((4, 0.05), (2, 0.08), (7, 0.03)):
        w = dataclasses.replace(window(ok=ok, latency_s=latency_s), latency_cv=0.4)
        by_window.observe(w, min_samples=2)
        by_median.observe_median(w.ok, w.latency_p50_s, w.latency_cv)
    assert by_median.references() == by_window.references() and by_median.value == by_window.value
    by_median.observe_median(1, 0.001, 0.0)  # one call: no median to trust
    by_median.observe_median(5, 0.0, 0.0)  # no latency measured
    assert by_median.references() == by_window.references()
    with pytest.raises(ValueError, match="latency_cv"):
        by_median.observe_median(5, 0.05, -1.0)
    with pytest.raises(ValueError, match="ok"):
        by_median.observe_median(-1, 0.05, 0.1)


def _seeded(**kwargs: object) -> LatencyAIMD:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    return LatencyAIMD(baseline=baseline, **kwargs)  # type: ignore[arg-type]


def _starting(policy: LatencyAIMD) -> bool:
    return policy.in_slow_start  # read through a call: mypy would narrow the property


def test_slow_start_grows_by_max_step_ratio_until_the_first_decrease() -> None:
    p = _seeded(initial_limit=4)
    assert _starting(p)
    limits = [p.update(window(ok=40, latency_s=0.05, limit=int(p.limit))).limit for _ in range(3)]
    assert limits == [6, 9, 13.5]
    # x1.5, but never past 1.5 x what was in flight (13 of the gate's 13.5 permits).
    assert p.update(window(ok=40, latency_s=0.05, limit=13)).limit == 19.5
    # Latency rising (1.08x, under the 1.1 tolerance): the knee is near, one permit at a time.
    adj = p.update(window(ok=40, latency_s=0.054, limit=19))
    assert adj.limit == 20.5 and "+1" in adj.reason and _starting(p)
    assert p.update(window(ok=40, latency_s=0.05, limit=20)).limit == 30
    # A window limit-bound only before the last step (8 in flight at most): little growth.
    assert p.update(window(ok=40, latency_s=0.05, limit=30, peak_inflight=8, limit_bound=True)).limit == 31
    # The first decrease ends it: growth is one permit a window from then on.
    cut = p.update(window(ok=40, latency_s=0.1, limit=31)).limit
    assert cut < 31 and not _starting(p)
    p.update(window(ok=40, latency_s=0.1, limit=int(cut)))  # work from before the cut
    assert p.update(window(ok=40, latency_s=0.05, limit=int(cut))).limit == cut + 1


def test_slow_start_waits_for_the_baseline_and_can_be_turned_off() -> None:
    # No baseline yet: the climb from a low start measures it at one permit a window.
    p = LatencyAIMD(initial_limit=4)
    assert p.update(window(ok=4, latency_s=0.05, limit=4)).limit == 5
    off = _seeded(initial_limit=4, slow_start=False)
    assert not off.in_slow_start
    limits = [off.update(window(ok=40, latency_s=0.05, limit=int(off.limit))).limit for _ in range(3)]
    assert limits == [5, 6, 7]
    with pytest.raises(TypeError, match="slow_start"):
        LatencyAIMD(slow_start=1)  # type: ignore[arg-type]


def test_a_reset_above_the_start_skips_slow_start() -> None:
    # A learned limit already knows roughly where the knee is; a start from lower is cold.
    p = _seeded(initial_limit=4)
    p.reset(40)
    assert not _starting(p)
    assert p.update(window(ok=40, latency_s=0.05, limit=40)).limit == 41
    p.reset(2)
    assert _starting(p)
    assert p.update(window(ok=40, latency_s=0.05, limit=2)).limit == 3  # x1.5, at least +1


def test_the_first_calls_at_a_restored_limit_are_a_warm_up() -> None:
    # A second run starts at its learned limit with its learned baseline: the first call of
    # each permit opens a connection, all at once, and the windows that answer those calls
    # read high for that. Held until a window has answered a limit's worth of calls.
    def restored() -> LatencyAIMD:
        p = LatencyAIMD()
        p.restore_baseline(((1.0, 0.05),))
        p.reset(40)
        return p

    p = restored()
    first = p.update(window(ok=13, latency_s=0.075, limit=40))
    assert first.limit == 40 and "warm-up at a learned limit" in first.reason, first
    assert "warm-up" in p.update(window(ok=80, latency_s=0.075, limit=40)).reason  # 13 < 40 before it
    assert p.update(window(ok=80, latency_s=0.05, limit=40)).limit == 41  # judged: clean
    # After the warm-up the restored baseline is on trial. A first 1.5x reading is cut on
    # (a learned limit can lie past the knee); after the cut's cooldown, 1.5x again is a
    # stale baseline: measured again, the limit then goes back to the learned 40.
    p = restored()
    p.update(window(ok=40, latency_s=0.075, limit=40))
    cut = p.update(window(ok=80, latency_s=0.075, limit=40))
    assert cut.limit < 40 and "stale" not in cut.reason, cut
    p.update(window(ok=80, latency_s=0.075, limit=int(cut.limit)))  # work from before the cut
    stale = p.update(window(ok=80, latency_s=0.075, limit=int(cut.limit)))
    assert "stale, measure it again" in stale.reason and stale.limit == 3, stale
    for _ in range(4):
        back = p.update(window(ok=6, latency_s=0.05, limit=3, peak_inflight=3))
    assert back.limit == 40, back
    # A learned limit past the knee: cut once, the next window clean, the baseline kept.
    p = restored()
    p.update(window(ok=40, latency_s=0.075, limit=40))
    cut = p.update(window(ok=80, latency_s=0.075, limit=40))
    p.update(window(ok=80, latency_s=0.075, limit=int(cut.limit)))
    assert p.update(window(ok=80, latency_s=0.05, limit=int(cut.limit))).limit == cut.limit + 1
    assert p.learned_baseline() == ((1.0, 0.05),)
    # Overload is never warm-up.
    p = restored()
    assert p.update(window(ok=30, overload=5, latency_s=0.05, limit=40)).limit < 40
    # A reset without a restored baseline (a limit set by hand) judges its first window.
    p = _seeded()
    p.reset(40)
    assert p.update(window(ok=40, latency_s=0.1, limit=40)).limit < 40


def test_slow_start_reaches_a_knee_of_32_in_under_half_the_time() -> None:
    # Closed loop, virtual time: from the default start of 4 to within reach of a knee at
    # 32 workers (60 ms each), with and without slow start (measured: 0.68 s and 1.5 s).
    def first_above(policy: LatencyAIMD) -> float:
        scenario = standard_scenarios(capacity=32, service_time_s=0.06, duration_s=3.0)["knee"]
        scenario = dataclasses.replace(scenario, initial_limit=None, trace_every_s=0.02)
        r = run_scenario(scenario, lambda: policy)
        return next(t for t, limits in r.trace if limits[0] >= 28)

    fast, slow = first_above(LatencyAIMD()), first_above(LatencyAIMD(slow_start=False))
    assert fast < 0.5 * slow, (fast, slow)


def test_once_known_the_baseline_pools_small_windows() -> None:
    # A governor held to a small limit has small windows: pooled, they still move its
    # baseline, so it follows an upstream whose latency others have raised.
    baseline = LatencyBaseline(memory_windows=3)  # min_samples=10
    baseline.observe(window(ok=4, latency_s=0.05))
    assert not baseline.known  # before the first baseline: a climb measures it its own way
    baseline.seed(0.05)
    for _ in range(2):
        baseline.observe(window(ok=4, latency_s=0.08))  # 4, then 8 calls pooled: too few
    assert baseline.value == pytest.approx(0.05)
    for _ in range(7):
        baseline.observe(window(ok=4, latency_s=0.08))  # three pools of 12 calls
    assert baseline.value == pytest.approx(0.08)
    # The pool's median weighs each window by its calls.
    one = LatencyBaseline(memory_windows=1)
    one.seed(0.05)
    one.observe(window(ok=2, latency_s=0.2))
    one.observe(window(ok=9, latency_s=0.06))
    assert one.value == pytest.approx(0.06)
    # A new start forgets what was pooled.
    one.observe(window(ok=9, latency_s=0.2))
    one.seed(0.05)
    one.observe(window(ok=2, latency_s=0.2))
    assert one.value == pytest.approx(0.05)


def _climb(latencies_s: list[float], calls: list[int], cv: float) -> LatencyAIMD:
    """A fresh default policy fed a climb from 4 permits: one window per latency, one more permit each."""
    p = LatencyAIMD()
    for k, (latency_s, ok) in enumerate(zip(latencies_s, calls, strict=True)):
        w = window(ok=ok, latency_s=latency_s, limit=4 + k, duration_s=0.12)
        p.update(dataclasses.replace(w, latency_cv=cv))
    return p


def test_a_late_joiners_first_small_windows_set_its_baseline() -> None:
    # A governor joining an upstream that another one already queues at: its windows at 4 and 5
    # permits (5 and 9 calls, too few to measure alone) came before the other's queue reached
    # it; the first window large enough, at 6 permits, has that queue in it. Pooled, the
    # small windows read lower beyond their noise, so they measure the baseline.
    joined = _climb([0.060, 0.059, 0.075], [5, 9, 11], cv=0.2)
    assert joined.baseline_s is not None and joined.baseline_s < 0.066, joined.baseline_s
    # The same climb on an idle upstream (every window within noise of the others): the first
    # large window measures it alone, as it always did.
    idle = _climb([0.060, 0.059, 0.061], [5, 9, 11], cv=0.2)
    alone = LatencyAIMD()
    first = window(ok=11, latency_s=0.061, limit=6, duration_s=0.12)
    alone.update(dataclasses.replace(first, latency_cv=0.2))
    assert idle.baseline_s == alone.baseline_s


def test_a_sized_window_is_not_judged_against_the_plain_climb() -> None:
    # Calls that carry a size are measured per size band: the plain climb before them is not
    # folded in as if it were the same calls.
    baseline = LatencyBaseline()
    p = LatencyAIMD(baseline=baseline)
    for k, (latency_s, ok) in enumerate(((0.060, 5), (0.059, 9))):
        w = window(ok=ok, latency_s=latency_s, limit=4 + k, duration_s=0.12)
        p.update(dataclasses.replace(w, latency_cv=0.2))
    band = SizeBand(band=6, count=11, latency_p50_s=0.075, latency_cv=0.2, size_mean=100.0)
    sized = window(ok=11, latency_s=0.075, limit=6, duration_s=0.12)
    p.update(dataclasses.replace(sized, latency_cv=0.2, bands=(band,)))
    assert [size for size, _ in baseline.references()] == [100.0], baseline.references()


def test_small_windows_pool_to_their_calls_weighted_median() -> None:
    # 9 calls at 59 ms and 5 at 60: the 7th of 14 calls is at 59 ms.
    calls, median, cv = pooled_median([(5, 0.060, 0.1), (9, 0.059, 0.3)])
    assert (calls, median) == (14, 0.059) and cv == pytest.approx((0.5 + 2.7) / 14)
    assert pooled_median([(2, 0.070, 0.0), (1, 0.050, 0.0)]) == (3, 0.070, 0.0)
    with pytest.raises(ValueError, match="at least one call"):
        pooled_median([(0, 0.05, 0.0)])
