"""`LatencyAIMD(step_paid_ratio=...)`: a step of several permits that goodput does not pay for is undone.

Scripted windows, no event loop: latency stays at the baseline throughout, so only goodput
(successful calls per second) says that a step went too far, as on a client whose own CPU
per response collapses past some number of connections.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiogovernor.limits import Adjustment, LatencyAIMD, LatencyBaseline
from aiogovernor.testing import window


def _policy(step_paid_ratio: float = 0.25) -> LatencyAIMD:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    # A cold start that knows its baseline: slow start grows x1.5 per clean window.
    return LatencyAIMD(initial_limit=4, baseline=baseline, step_paid_ratio=step_paid_ratio)


def _drive(p: LatencyAIMD, goodput: Callable[[int], float], windows: int) -> list[tuple[int, Adjustment]]:
    """Feed ``windows`` limit-bound windows of 0.2 s at the policy's limit, latency at the baseline."""
    seen = []
    for _ in range(windows):
        limit = int(p.limit)
        w = window(ok=round(goodput(limit) * 0.2), duration_s=0.2, latency_s=0.05, limit=limit)
        seen.append((limit, p.update(w)))
    return seen


def _collapse(limit: int) -> float:
    """50/s per permit up to 24; past it the client is its own bottleneck and collapses to 300/s."""
    return 50.0 * limit if limit <= 24 else 300.0


def test_a_step_into_a_collapse_goes_back_and_later_steps_stop_below_it() -> None:
    p = _policy()
    seen = _drive(p, _collapse, 60)
    held = next(i for i, (_, adj) in enumerate(seen) if "not paid for yet" in adj.reason)
    # The step, a window that did not pay for it (one window is noisy: growth by one), then
    # one that delivered less than before the step.
    stepped_from, stepped_to = seen[held - 2][1].limit, seen[held - 1][1].limit
    assert stepped_to - stepped_from >= 2  # a step of several permits
    assert seen[held][1].limit == stepped_to + 1
    first = held + 1
    assert "not paid for:" in seen[first][1].reason
    assert seen[first][1].limit == pytest.approx(stepped_from)  # back to where it was
    assert not p.in_slow_start
    # Later steps stop one below the unpaid limit; past it, growth is one permit a window
    # (what lies past it is left to the latency and goodput rules).
    unpaid = stepped_to
    limits = [adj.limit for _, adj in seen]
    for before, after in zip(limits[first:], limits[first + 1 :], strict=False):
        if after > unpaid - 1:
            assert after - before <= 1.0, (before, after)


def test_a_step_onto_a_plateau_stays() -> None:
    # Goodput flat past 20 (a saturated CPU, a FIFO backlog): a step past it buys nothing but
    # costs nothing either, so it is not undone.
    p = _policy()
    seen = _drive(p, lambda limit: 50.0 * min(limit, 20), 12)
    assert any("not paid for yet" in adj.reason for _, adj in seen)
    assert not any("not paid for:" in adj.reason for _, adj in seen)
    assert seen[-1][1].limit > 40


def test_one_window_that_does_not_pay_is_not_enough() -> None:
    # A stall or a heavy tail: the window after the step delivers less, the next one pays.
    p = _policy()
    calls = iter(range(100))

    def noisy(limit: int) -> float:
        return 50.0 * limit * (0.5 if next(calls) == 6 else 1.0)

    seen = _drive(p, noisy, 10)
    assert any("not paid for yet" in adj.reason for _, adj in seen)
    assert not any("not paid for:" in adj.reason for _, adj in seen)
    assert p.in_slow_start and seen[-1][1].limit > 60


def test_a_step_that_goodput_pays_for_is_kept() -> None:
    # Goodput grows with the limit (no knee within reach): slow start runs on, no step undone.
    seen = _drive(_policy(), lambda limit: 50.0 * limit, 8)
    assert not any("not paid for" in adj.reason for _, adj in seen)
    assert seen[-1][1].limit > 40


def test_the_step_check_is_off_by_default() -> None:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    seen = _drive(LatencyAIMD(initial_limit=4, baseline=baseline), _collapse, 20)
    assert not any("not paid for" in adj.reason for _, adj in seen)
    seen = _drive(_policy(step_paid_ratio=0.0), _collapse, 20)
    assert not any("not paid for" in adj.reason for _, adj in seen)
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="step_paid_ratio"):
            LatencyAIMD(step_paid_ratio=bad)
