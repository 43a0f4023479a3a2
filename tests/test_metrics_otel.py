"""OpenTelemetry instruments, read through the SDK's in-memory reader."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("opentelemetry.sdk.metrics")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader, NumberDataPoint

from aiogovernor import AIMD, Governor, GovernorStats, Outcome
from aiogovernor.limits import Window
from aiogovernor.metrics.otel import GovernorInstruments
from aiogovernor.sim import run_virtual
from aiogovernor.testing import ManualClock

Points = dict[str, list[NumberDataPoint | HistogramDataPoint]]


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = GovernorInstruments(provider, latency_values_per_window=4)
    yield reader
    instruments.close()
    provider.shutdown()


def points(reader: InMemoryMetricReader, environment: str) -> Points:
    """Every data point of this environment, by instrument name."""
    data = reader.get_metrics_data()
    assert data is not None
    out: Points = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if point.attributes and point.attributes.get("environment") == environment:
                        out.setdefault(metric.name, []).append(point)  # type: ignore[arg-type]
    return out


def value(pts: Points, name: str, **attributes: Any) -> float:
    [match] = [p for p in pts[name] if all(p.attributes.get(k) == v for k, v in attributes.items())]  # type: ignore[union-attr]
    assert isinstance(match, NumberDataPoint)
    return match.value


def assert_matches(pts: Points, s: GovernorStats) -> None:
    who = {"governor": s.name, "environment": s.environment}
    assert value(pts, "aiogovernor.limit", **who) == s.limit
    assert value(pts, "aiogovernor.inflight", **who) == s.inflight
    assert value(pts, "aiogovernor.waiting", **who) == s.waiting
    assert value(pts, "aiogovernor.paused", **who) == pytest.approx(s.paused_for_s)
    for outcome, n in s.counts.items():
        assert value(pts, "aiogovernor.outcomes", outcome=outcome, **who) == n
    for direction, n in s.decisions_by_direction.items():
        assert value(pts, "aiogovernor.decisions", direction=direction, **who) == n


def test_values_equal_stats_at_the_same_moment(reader: InMemoryMetricReader) -> None:
    clock = ManualClock()
    gov = Governor("api", AIMD(initial_limit=4), environment="otel-sync", clock=clock, store=None)
    other = Governor("api", AIMD(initial_limit=2), environment="otel-other", clock=clock, store=None)
    windows: list[Window] = []  # whole windows (the history keeps their headline figures)
    gov.add_window_listener(lambda w, _: windows.append(w))
    for i in range(60):
        permit = gov.try_acquire()
        assert permit is not None
        clock.advance(0.001 * (1 + i % 7))
        permit.release(Outcome.OVERLOAD if i == 40 else Outcome.ERROR if i % 9 == 0 else Outcome.OK)
    held = [gov.try_acquire() for _ in range(2)]
    gov.pause(3.0)
    clock.advance(0.5)
    s = gov.stats()
    assert s.inflight == 2 and s.paused_for_s == pytest.approx(2.5) and s.decisions_by_direction["down"] == 1
    pts = points(reader, "otel-sync")
    assert_matches(pts, s)
    assert value(points(reader, "otel-other"), "aiogovernor.limit", governor="api") == other.limit

    # The histogram: up to 4 order statistics of every closed window.
    [hist] = pts["aiogovernor.latency"]
    assert isinstance(hist, HistogramDataPoint)
    assert len(windows) == sum(d.window is not None for d in gov.decisions)
    assert hist.count == sum(min(4, w.ok) for w in windows)
    assert hist.min >= min(w.latency_min_s for w in windows)
    assert hist.max <= 0.0071
    for p in held:
        assert p is not None
        p.release()


def test_values_equal_stats_mid_run_with_callers_queued(reader: InMemoryMetricReader) -> None:
    async def run() -> tuple[Points, GovernorStats]:
        gov = Governor("queue", AIMD(initial_limit=2, max_limit=2), environment="otel-loop", store=None)

        async def work() -> None:
            async with gov:
                await asyncio.sleep(0.05)

        tasks = [asyncio.create_task(work()) for _ in range(6)]
        await asyncio.sleep(0.01)  # two hold permits, four wait
        seen = (points(reader, "otel-loop"), gov.stats())
        await asyncio.gather(*tasks)
        return seen

    pts, s = run_virtual(run())
    assert s.inflight == 2 and s.waiting == 4
    assert_matches(pts, s)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        GovernorInstruments(MeterProvider(), latency_values_per_window=0)
    with pytest.raises(ValueError):
        GovernorInstruments(MeterProvider(), latency_buckets_s=[1.0, 0.5])


def test_latencies_waiting_for_a_collection_are_bounded() -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instruments = GovernorInstruments(provider, latency_values_per_window=1, max_pending_windows=2)
    try:
        clock = ManualClock()
        gov = Governor("bounded", AIMD(initial_limit=2), environment="otel-bounded", clock=clock, store=None)
        for _ in range(100):
            permit = gov.try_acquire()
            assert permit is not None
            clock.advance(0.01)
            permit.release()
        assert sum(d.window is not None for d in gov.decisions) > 2
        [hist] = points(reader, "otel-bounded")["aiogovernor.latency"]
        assert isinstance(hist, HistogramDataPoint)
        assert hist.count == 2  # the last two windows, one value each
    finally:
        instruments.close()
        provider.shutdown()
