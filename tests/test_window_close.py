"""Closing a window: the hot path's figures are the plain formulas', bit for bit, in a real Window."""

from __future__ import annotations

import dataclasses
import math
import operator
import random

import pytest

from aiogovernor import Decision, Outcome, WindowConfig
from aiogovernor._feedback import Feedback
from aiogovernor._frozen import blank_of
from aiogovernor._samples import SizeBand
from aiogovernor.limits import AIMD, Sample, Window, WindowAggregator


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def plain_figures(ok: list[float], other: list[float]) -> tuple[float, float, float, float, float, float]:
    """The window's latency figures as first written: a sort, then sums over the sorted list.

    Returns min, mean, p50, p90, p99 and the coefficient of variation.
    """
    latencies = sorted(ok or other)
    if not latencies:
        return 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
    n = len(latencies)
    sub = latencies[:: max(1, n // 256)]
    sub_mean = sum(sub) / len(sub)
    var = max(0.0, sum(map(operator.mul, sub, sub)) / len(sub) - sub_mean * sub_mean)
    cv = math.sqrt(var) / sub_mean if sub_mean > 0 else 0.0
    p50, p90, p99 = (_percentile(latencies, q) for q in (0.5, 0.9, 0.99))
    return latencies[0], sum(latencies) / n, p50, p90, p99, cv


@pytest.mark.parametrize("n", [0, 1, 2, 10, 255, 256, 511, 512, 513, 1000, 2600])
@pytest.mark.parametrize("failures", [0.0, 0.2, 1.0])
def test_close_reports_the_plain_formulas_exactly(n: int, failures: float) -> None:
    rnd = random.Random(n * 7 + int(failures * 10))
    agg = WindowAggregator(WindowConfig(min_samples=1, max_samples=5000))
    ok: list[float] = []
    other: list[float] = []
    counts = dict.fromkeys(Outcome, 0)
    for _ in range(n):
        latency = rnd.choice([rnd.expovariate(40.0), 0.02 + rnd.random() * 1e-3, 0.0])
        outcome = (
            rnd.choice([Outcome.OVERLOAD, Outcome.ERROR, Outcome.IGNORED])
            if rnd.random() < failures
            else Outcome.OK
        )
        counts[outcome] += 1
        if outcome is Outcome.OK:
            ok.append(latency)
        elif outcome is not Outcome.IGNORED:
            other.append(latency)
        agg.add(Sample(0.0, latency, 1, outcome, fresh=False), now=1.0, limit=10)
    window = agg.close(2.0, 10, peak_inflight=9)
    assert type(window) is Window
    low, mean, p50, p90, p99, cv = plain_figures(ok, other)
    expected = Window(
        start=0.0,
        end=2.0,
        count=len(ok) + len(other),
        ok=len(ok),
        overload=0,
        error=counts[Outcome.ERROR],
        ignored=counts[Outcome.IGNORED],
        stale_overload=counts[Outcome.OVERLOAD],
        peak_inflight=9,
        limit=10,
        limit_bound=True,
        latency_min_s=low,
        latency_mean_s=mean,
        latency_p50_s=p50,
        latency_p90_s=p90,
        latency_p99_s=p99,
        latency_cv=cv,
    )
    # Floats compared by their exact bits (== would take -0.0 for 0.0).
    for field in dataclasses.fields(Window):
        got, want = getattr(window, field.name), getattr(expected, field.name)
        assert type(got) is type(want), field.name
        assert (got.hex() if isinstance(got, float) else got) == (
            want.hex() if isinstance(want, float) else want
        ), field.name
    assert window == expected
    assert hash(window) == hash(expected)
    assert repr(window) == repr(expected)


def test_a_closed_window_is_frozen_and_complete() -> None:
    agg = WindowAggregator(WindowConfig(min_samples=1))
    agg.add(Sample(0.0, 0.01, 1, Outcome.OK, size=4.0), now=0.5, limit=4)
    agg.record_lag(0.001, 0.01)
    window = agg.close(1.0, 4, peak_inflight=1)
    for field in dataclasses.fields(Window):
        getattr(window, field.name)  # every field was set
    assert window.bands and type(window.bands[0]) is SizeBand
    assert window.loop_lag_s == 0.001
    with pytest.raises(dataclasses.FrozenInstanceError):
        window.limit = 5  # type: ignore[misc]
    assert dataclasses.replace(window, limit=5).limit == 5


def test_a_decision_is_a_real_decision() -> None:
    decisions: list[Decision] = []
    feedback = Feedback(
        AIMD(initial_limit=4),
        governor="g",
        environment="e",
        window=WindowConfig(min_samples=2, min_duration_s=0.0, latency_multiple=0.0),
        history_size=10,
        apply=decisions.append,
    )
    feedback.sample(0.0, 0.01, Outcome.OK, True, 4)
    feedback.sample(0.0, 0.02, Outcome.OK, True, 4)
    decision = feedback.close(0.02, 4, peak_inflight=4, saw_waiters=False)
    assert type(decision) is Decision
    assert decisions == [decision]
    assert decision == dataclasses.replace(decision)
    assert decision.window is feedback.last_window
    assert decision.window is not None
    assert decision.confidence == decision.window.confidence
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.reason = "x"  # type: ignore[misc]


def test_only_a_plain_slotted_class_has_a_blank() -> None:
    class Plain:
        pass

    @dataclasses.dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclasses.dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int

    with pytest.raises(TypeError, match="slotted"):
        blank_of(Plain)
    with pytest.raises(TypeError, match="slotted"):
        blank_of(Derived)
    blank = blank_of(Base)
    obj = object.__new__(blank)
    obj.a = 1
    obj.__class__ = Base
    assert obj == Base(1)
