"""The default policy's goodput rule: a limit whose goodput is below a lower limit's is not kept.

Scripted windows, no event loop: latency stays at the baseline throughout, so only goodput
(successful calls per second) says where the best limit is.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from aiogovernor.limits import Adjustment, LatencyAIMD, LatencyBaseline
from aiogovernor.testing import window


def _policy(**kwargs: int) -> LatencyAIMD:
    baseline = LatencyBaseline()
    baseline.seed(0.05)
    # Past slow start, growing by one a window, as a policy that has run a while.
    return LatencyAIMD(initial_limit=6, baseline=baseline, slow_start=False, **kwargs)


def _drive(
    p: LatencyAIMD, goodput: Callable[[int, int], float], windows: int
) -> list[tuple[int, Adjustment]]:
    """Feed ``windows`` limit-bound windows of 0.2 s at the policy's limit; goodput(limit, i) per second."""
    seen = []
    for i in range(windows):
        limit = int(p.limit)
        w = window(ok=round(goodput(limit, i) * 0.2), duration_s=0.2, latency_s=0.05, limit=limit)
        seen.append((limit, p.update(w)))
    return seen


def _cliff(limit: int, i: int) -> float:
    """50/s per permit up to 12, then 8 % less for each permit more (a client paying per connection)."""
    wobble = 1.0 + 0.03 * ((i % 3) - 1)  # -3 %, 0, +3 %: goodput is never exact
    return wobble * (50.0 * limit if limit <= 12 else 600.0 * 0.92 ** (limit - 12))


def test_a_limit_whose_goodput_falls_is_not_kept() -> None:
    seen = _drive(_policy(), _cliff, 80)
    reasons = [adj.reason for _, adj in seen]
    assert any("goodput falls" in r for r in reasons), reasons
    # Growth doubles on clean windows and overshoots (nothing but goodput says where to
    # stop); each cut halves at most. Once back, the limit stays at the best (12), probing
    # one past it now and then.
    later = [limit for limit, _ in seen[20:]]
    assert max(later) <= 14, later
    assert sum(later) / len(later) == pytest.approx(12, abs=0.5), later


def test_a_plateau_is_not_a_fall() -> None:
    # Goodput flat past 12 (a FIFO backlog, a client busy at a fixed cost per call), with noise:
    # the rule never fires and the limit is left to the other rules (here: growth).
    def plateau(limit: int, i: int) -> float:
        return (1.0 + 0.05 * ((i % 4) - 1.5)) * 50.0 * min(limit, 12)

    seen = _drive(_policy(), plateau, 60)
    assert not any("goodput falls" in adj.reason for _, adj in seen)
    assert seen[-1][1].limit > 20


def test_the_goodput_rule_can_be_turned_off() -> None:
    seen = _drive(_policy(goodput_memory_windows=0), _cliff, 80)
    assert not any("goodput" in adj.reason for _, adj in seen)
    with pytest.raises(ValueError, match="goodput_memory_windows"):
        LatencyAIMD(goodput_memory_windows=-1)
