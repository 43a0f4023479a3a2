"""The decision history: compact records, the same decisions read back, memory bounded."""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from aiogovernor import AIMD, Decision, Governor, Outcome, WindowConfig, WindowSummary
from aiogovernor._history import DecisionHistory
from aiogovernor.limits import Window
from aiogovernor.testing import ManualClock, window


def decision(i: int, *, window: Window | None, old: int = 4, new: int = 5) -> Decision:
    return Decision(
        governor="api",
        environment="prod",
        at=window.end if window is not None else 10.0 + i,  # a window closes with its decision
        old_limit=old,
        new_limit=new,
        policy_limit=new + 0.25,
        reason=f"step {i % 3}",
        window=window,
        confidence=window.confidence if window is not None else 1.0,
    )


def test_kept_decisions_read_back_with_their_figures_the_latest_whole() -> None:
    history = DecisionHistory(3, governor="api", environment="prod")
    assert history.decisions() == () and len(history) == 0
    made = []
    for i in range(5):
        w = window(
            ok=7 + i,
            overload=1,
            error=2,
            stale_overload=3,
            ignored=4,
            latency_s=0.02 * (i + 1),
            start=9.9 + i - 0.1 * i,
            duration_s=0.1 * (i + 1),
        )
        made.append(decision(i, window=w))
        history.append(made[-1])
    kept = history.decisions()
    assert len(kept) == len(history) == 3  # bounded, oldest first
    assert kept[-1] is made[-1] is history.last  # the latest is the very object listeners got
    for got, want in zip(kept[:-1], made[2:4], strict=True):
        assert isinstance(got.window, WindowSummary) and isinstance(want.window, Window)
        assert (got.at, got.old_limit, got.new_limit, got.policy_limit, got.reason) == (
            want.at,
            want.old_limit,
            want.new_limit,
            want.policy_limit,
            want.reason,
        )
        # The confidence and the window's duration are kept in single precision.
        assert got.confidence == pytest.approx(want.confidence, rel=1e-6)
        for name in ("start", "duration_s", "throughput"):
            assert getattr(got.window, name) == pytest.approx(getattr(want.window, name), rel=1e-6), name
        for name in WindowSummary.__slots__:
            if name == "sized":
                assert got.window.sized is bool(want.window.bands)
            elif name != "start":
                assert getattr(got.window, name) == getattr(want.window, name), name
        for name in ("count", "overload_rate", "error_rate"):
            assert getattr(got.window, name) == getattr(want.window, name), name
        assert got.describe() == want.describe()


def test_decisions_without_a_window_and_big_numbers() -> None:
    history = DecisionHistory(4, governor="api", environment="prod")
    history.append(decision(0, window=None, old=3, new=70_000))  # past two bytes
    history.append(decision(1, window=None, old=70_000, new=2**70))  # past eight bytes
    history.append(decision(2, window=None))
    first, second, _ = history.decisions()
    assert first.window is None and (first.old_limit, first.new_limit) == (3, 70_000)
    assert (second.old_limit, second.new_limit) == (70_000, 2**70)


def test_a_governor_with_a_full_history_stays_small() -> None:
    """A full history of 100 decisions costs a few KB (whole ones cost ~50 KB), and no more after 400."""
    clock = ManualClock()
    config = WindowConfig(min_samples=1, min_duration_s=0.0, latency_multiple=0.0)

    def run(gov: Governor, n: int) -> None:
        for i in range(n):
            permit = gov.try_acquire()
            assert permit is not None
            clock.advance(0.01 + 0.001 * (i % 3))
            permit.release(Outcome.OVERLOAD if i % 50 == 0 else Outcome.OK)

    def weigh(n: int) -> float:
        gc.collect()
        tracemalloc.start()
        try:
            govs = [
                Governor(f"g{i}", AIMD(max_limit=8), clock=clock, window=config, store=None) for i in range(5)
            ]
            before = tracemalloc.get_traced_memory()[0]
            for gov in govs:
                run(gov, n)
            assert all(gov.stats().decision_count == n for gov in govs)
            gc.collect()
            return (tracemalloc.get_traced_memory()[0] - before) / len(govs)
        finally:
            tracemalloc.stop()

    hundred, more = weigh(100), weigh(400)
    assert hundred < 12_000  # ~9 KB; was ~50 KB with whole decisions and windows
    assert more < hundred + 500  # bounded: the rows are reused
