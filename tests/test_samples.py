"""Windows: when they close and what they report."""

from __future__ import annotations

import pytest

from aiogovernor import Outcome, WindowConfig
from aiogovernor.limits import Sample, WindowAggregator


def fill(agg: WindowAggregator, latencies: list[float], *, now: float, limit: int = 100) -> bool:
    closing = False
    for latency in latencies:
        closing = agg.add(Sample(0.0, latency, 1, Outcome.OK), now=now, limit=limit)
    return closing


def test_a_window_needs_its_duration_and_its_count() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=5, min_duration_s=1.0))
    assert not fill(agg, [0.01] * 10, now=0.5)  # count reached, duration not
    assert agg.should_close(1.0, 100)
    agg2 = WindowAggregator(WindowConfig(min_samples=5, min_duration_s=1.0))
    assert not fill(agg2, [0.01] * 3, now=5.0)  # too thin: carries over
    assert fill(agg2, [0.01] * 2, now=5.0)


def test_a_small_limit_needs_fewer_samples() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=10, min_duration_s=0.0))
    assert fill(agg, [0.1, 0.1], now=1.0, limit=2)


def test_count_bound_closes_early() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=2, max_samples=4, min_duration_s=10.0))
    assert not fill(agg, [0.01] * 3, now=0.0)
    assert fill(agg, [0.01], now=0.0)


def test_fresh_overload_closes_at_once() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=3, min_duration_s=10.0))
    assert agg.add(Sample(0.0, 0.0, 1, Outcome.OVERLOAD), now=0.0, limit=10)
    agg2 = WindowAggregator(WindowConfig(min_samples=3, min_duration_s=10.0))
    fill(agg2, [0.01, 0.01], now=0.0)
    assert not agg2.add(Sample(0.0, 0.0, 1, Outcome.OVERLOAD, fresh=False), now=0.0, limit=10)


def test_window_figures() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0), start=10.0)
    for latency in [0.1, 0.2, 0.3, 0.4]:
        agg.add(Sample(10.0, latency, 2, Outcome.OK), now=12.0, limit=4)
    agg.add(Sample(10.0, 5.0, 3, Outcome.ERROR), now=12.0, limit=4)
    agg.add(Sample(10.0, 0.0, 3, Outcome.OVERLOAD), now=12.0, limit=4)
    agg.add(Sample(10.0, 0.0, 3, Outcome.IGNORED), now=12.0, limit=4)
    w = agg.close(12.0, 4, peak_inflight=4)
    assert (w.count, w.ok, w.error, w.overload, w.ignored) == (6, 4, 1, 1, 1)
    assert w.duration_s == pytest.approx(2.0)
    assert w.throughput == pytest.approx(2.0)
    assert w.latency_min_s == pytest.approx(0.1)  # over successes only
    assert w.latency_p50_s == pytest.approx(0.2)
    assert w.latency_p99_s == pytest.approx(0.4)
    assert w.latency_mean_s == pytest.approx(0.25)
    assert w.error_rate == pytest.approx(1 / 6)
    assert w.overload_rate == pytest.approx(1 / 6)
    assert w.limit_bound
    assert 0 < w.confidence < 1


def test_limit_bound_needs_inflight_near_the_limit_or_queueing() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
    fill(agg, [0.1], now=1.0)
    assert not agg.close(1.0, 10, peak_inflight=5).limit_bound
    fill(agg, [0.1], now=2.0)
    assert agg.close(2.0, 10, peak_inflight=9).limit_bound
    fill(agg, [0.1], now=3.0)
    assert agg.close(3.0, 10, peak_inflight=2, saw_waiters=True).limit_bound


def test_duration_follows_the_recent_minimum_latency() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.1, latency_multiple=2.0))
    fill(agg, [0.5, 0.7], now=1.0)
    agg.close(1.0, 10, peak_inflight=1)
    assert agg.recent_min_latency_s == pytest.approx(0.5)
    assert not fill(agg, [0.5], now=1.9)  # needs 2 x 0.5 s
    assert agg.should_close(2.0, 10)


def test_confidence_grows_with_samples_and_falls_with_spread() -> None:
    def window_of(latencies: list[float]) -> float:
        agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0))
        fill(agg, latencies, now=1.0)
        return agg.close(1.0, 10, peak_inflight=1).confidence

    assert window_of([0.1] * 100) > window_of([0.1] * 5)
    assert window_of([0.1] * 20) > window_of([0.01, 0.5] * 10)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"min_samples": 0}, "min_samples"),
        ({"min_samples": 10, "max_samples": 5}, "max_samples"),
        ({"min_duration_s": -1.0}, "min_duration_s"),
        ({"latency_multiple": float("inf")}, "latency_multiple"),
        ({"limit_bound_utilization": 0.0}, "limit_bound_utilization"),
    ],
)
def test_bad_window_config(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        WindowConfig(**kwargs)  # type: ignore[arg-type]


def test_the_recent_minimum_is_over_the_last_few_windows_only() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, min_duration_s=0.0, min_latency_memory=3))
    minima = []
    for i, low in enumerate([0.5, 0.9, 0.8, 0.7, 0.95, 0.99, 0.6, 0.85, 0.9, 0.97]):
        fill(agg, [low, low + 0.1], now=float(i))
        agg.close(float(i), 10, peak_inflight=1)
        minima.append(low)
        assert agg.recent_min_latency_s == min(minima[-3:])
