"""LatencyAIMD, Gradient, Vegas, profiles and ResourceCeiling, fed scripted windows (no event loop)."""

from __future__ import annotations

import pytest

from aiogovernor.limits import (
    AIMD,
    PROFILES,
    Gradient,
    LatencyAIMD,
    LatencyBaseline,
    ResourceCeiling,
    Vegas,
    default_policy,
    profile,
)
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
