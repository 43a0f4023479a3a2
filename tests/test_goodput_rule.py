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
    seen = _drive(_policy(), _cliff, 200)
    reasons = [adj.reason for _, adj in seen]
    assert any("goodput falls" in r for r in reasons), reasons
    # Growth doubles on clean windows and overshoots (nothing but goodput says where to
    # stop); each cut halves at most. The overshoot skipped 12, so the best seen is 11: the
    # limit waits there, then finds 12. Once there it stays at the best, probing one past
    # it now and then; no step past the fall is ever larger than one permit.
    later = seen[20:]
    assert all(adj.limit - limit <= 1.0 for limit, adj in later), later
    settled = [limit for limit, _ in seen[80:]]
    assert sum(settled) / len(settled) == pytest.approx(12, abs=0.2), settled
    assert sum(1 for limit in settled if limit > 12) <= 0.1 * len(settled), settled


def test_growth_waits_where_goodput_fell() -> None:
    seen = _drive(_policy(fall_wait_windows=8), _cliff, 120)
    reasons = [adj.reason for _, adj in seen]
    # Once the fit no longer shows the fall (every window since at the best limit seen, 11),
    # growth waits 8 limit-bound windows there before one permit past it.
    first = next(i for i, r in enumerate(reasons) if r.endswith("one permit past it)"))
    assert seen[first][0] == 11 and reasons[first - 1].endswith("wait 8/8"), reasons
    assert [r for r in reasons[:first] if "lately: wait" in r][-7:] == [
        f"goodput fell past 11 lately: wait {k}/8" for k in range(2, 9)
    ], reasons
    with pytest.raises(ValueError, match="fall_wait_windows"):
        LatencyAIMD(fall_wait_windows=-1)


def test_goodput_that_grows_past_the_fall_forgets_it() -> None:
    # Goodput fell past 12 (a cliff), then the upstream grew (goodput rises with the limit
    # up to 40): past the fall point goodput grows in proportion to the limit, so the fall
    # is forgotten and growth is no longer paced.
    def grown(limit: int, i: int) -> float:
        return _cliff(limit, i) if i < 40 else 50.0 * min(limit, 40)

    seen = _drive(_policy(), grown, 120)
    reasons = [adj.reason for _, adj in seen]
    last_wait = max(i for i, r in enumerate(reasons) if "lately" in r)
    assert last_wait < 40 + 16 + 5, reasons[40:]
    assert seen[-1][0] >= 38, seen[-1]


def test_a_fall_long_ago_is_forgotten() -> None:
    # Goodput fell past 12, then stays flat past it (no fall, no rise to forget it by): four
    # times goodput_memory_windows windows after the fall was last seen, growth is free again.
    def flattened(limit: int, i: int) -> float:
        return _cliff(limit, i) if i < 40 else 600.0

    seen = _drive(_policy(goodput_memory_windows=10), flattened, 160)
    reasons = [adj.reason for _, adj in seen]
    assert any("lately: wait" in r for r in reasons), reasons
    assert not any("lately" in r for r in reasons[100:]), reasons[100:]
    assert seen[-1][0] > 20, seen[-1]


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
