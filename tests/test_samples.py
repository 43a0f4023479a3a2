"""Windows: when they close and what they report."""

from __future__ import annotations

import math

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


def test_a_window_past_max_samples_stays_open_counts_all_and_keeps_a_uniform_subsample() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=2, max_samples=4, min_duration_s=10.0))
    assert not fill(agg, [0.01] * 4, now=0.0)  # the cap is reached: folded, not closed
    assert not fill(agg, [0.01] * 20, now=9.0)
    assert agg.count == 24
    assert agg.should_close(10.0, 100)  # its duration closes it


@pytest.mark.parametrize("cap", [1, 2, 3, 8, 100])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 99, 1000, 1001, 4099])
def test_a_thinned_window_holds_every_kth_latency_and_exact_counts(cap: int, n: int) -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, max_samples=cap, min_duration_s=10.0))
    latencies = [float(i) for i in range(n)]  # arrival order is value order: the kept ones say which
    kept_most = 0
    for i, latency in enumerate(latencies):
        if i % 3 == 0:
            # Other outcomes between them: counted exactly, never mixed into the successes.
            assert not agg.add(Sample(0.0, 1e6, 1, Outcome.ERROR), now=1.0, limit=100)
            assert not agg.add(Sample(0.0, 0.0, 1, Outcome.IGNORED), now=1.0, limit=100)
        assert not agg.add(Sample(0.0, latency, 1, Outcome.OK), now=1.0, limit=100)
        kept_most = max(kept_most, len(agg.ok_latencies))
    errors = (n + 2) // 3
    assert agg.open_counts() == (n, 0, errors, errors)
    assert kept_most <= cap  # the pending list never outgrows the cap
    kept = list(agg.settled_ok_latencies())
    assert len(kept) <= cap
    stride = 1  # the smallest power of two that brings the window within the cap
    while -(-n // stride) > cap:
        stride *= 2
    assert kept == latencies[::stride]  # every stride-th, from the first: a uniform subsample
    w = agg.close(10.0, 100, peak_inflight=1)
    assert (w.ok, w.error, w.ignored, w.count) == (n, errors, errors, n + errors)
    assert w.throughput == pytest.approx(n / 10.0)
    assert w.latency_p50_s == kept[math.ceil(0.5 * len(kept)) - 1]
    assert w.latency_p99_s == kept[math.ceil(0.99 * len(kept)) - 1]
    assert w.latency_min_s == 0.0
    assert agg.count == 0 and agg.settled_ok_latencies() == []  # the next window starts afresh


def test_a_window_with_sized_calls_still_closes_at_max_samples() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=2, max_samples=4, min_duration_s=10.0))
    assert not agg.add(Sample(0.0, 0.02, 1, Outcome.OK, size=2.0), now=0.0, limit=100)
    assert not fill(agg, [0.01] * 2, now=0.0)
    assert fill(agg, [0.01], now=0.0)  # its size bands need every sized call
    w = agg.close(0.0, 100, peak_inflight=1)
    assert w.ok == 4 and w.bands[0].count == 3


def test_a_window_thinned_before_its_first_sized_call_estimates_band_zero() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1, max_samples=4, min_duration_s=10.0))
    assert not fill(agg, [0.01, 0.02, 0.03, 0.04, 0.05, 0.06], now=0.0)  # folded once
    assert not agg.add(Sample(0.0, 0.5, 1, Outcome.OK, size=4.0), now=0.0, limit=100)
    assert agg.add(Sample(0.0, 0.07, 1, Outcome.OK), now=0.0, limit=100)  # now sized: closes at the cap
    w = agg.close(0.0, 100, peak_inflight=1)
    assert w.ok == 8
    assert w.size_mean == pytest.approx((7 + 4.0) / 8)
    assert [b.band for b in w.bands] == [0, 2]


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


def test_a_window_of_sized_calls_lasts_as_long_as_calls_of_its_size() -> None:
    # A chunker growing its batches: the recent minimum remembers the short calls of small
    # batches, but a window must outlast the calls it judges, or it judges only work that
    # started before the last decision. Per unit of size, the large calls are the quickest.
    config = WindowConfig(min_samples=1, min_duration_s=0.1, latency_multiple=2.0, min_latency_memory=10)
    agg = WindowAggregator(config)
    fill(agg, [0.021], now=1.0)  # a plain call (size 1)
    agg.close(1.0, 10, peak_inflight=1)
    now = 1.0
    for size, latency in ((10.0, 0.03), (80.0, 0.1), (160.0, 0.18)):
        agg.add(Sample(0.0, latency, 1, Outcome.OK, size=size), now=now, limit=10)
        w = agg.close(now, 10, peak_inflight=1)
        assert w.size_mean == size
        now += 1.0
    assert agg.recent_min_latency_s == pytest.approx(0.021)  # the plain rule alone: 0.1 s
    # 2 x (0.18 / 160) per unit x 160 units: 0.36 s, as long as two calls of that size.
    start = now - 1.0
    assert not agg.add(Sample(0.0, 0.18, 1, Outcome.OK, size=160.0), now=start + 0.35, limit=10)
    assert agg.should_close(start + 0.36, 10)


def test_a_window_of_sized_calls_is_never_shorter_than_the_plain_rule() -> None:
    config = WindowConfig(min_samples=1, min_duration_s=0.0, latency_multiple=2.0)
    agg = WindowAggregator(config)
    agg.add(Sample(0.0, 0.2, 1, Outcome.OK, size=100.0), now=0.0, limit=10)
    agg.close(0.0, 10, peak_inflight=1)
    # Smaller batches that take as long (a cost per call, none per item): per unit of size
    # the window would last 2 x 0.002 x 10 = 0.04 s; it lasts 2 x the recent minimum.
    agg.add(Sample(0.0, 0.2, 1, Outcome.OK, size=10.0), now=0.0, limit=10)
    agg.close(0.0, 10, peak_inflight=1)
    assert not fill(agg, [0.2], now=0.39)
    assert agg.should_close(0.4, 10)
    agg.close(0.4, 10, peak_inflight=1)  # a plain window (mean size 1): the plain rule
    assert not fill(agg, [0.2], now=0.79)
    assert agg.should_close(0.8, 10)


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
