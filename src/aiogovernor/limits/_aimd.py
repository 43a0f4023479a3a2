"""`AIMD`: additive increase while the limit is the bottleneck, multiplicative decrease on overload."""

from __future__ import annotations

from aiogovernor._samples import Window
from aiogovernor._validate import check_bool, check_float, check_int

from ._base import Adjustment, BoundedPolicy

__all__ = ["AIMD"]


class AIMD(BoundedPolicy):
    """Additive increase, multiplicative decrease: TCP's rule, per window.

    - A window with fresh overload above ``overload_threshold`` multiplies the
      limit by ``backoff_ratio`` (always at least −1), and ends slow start.
      Overloads from work started before the previous decrease are not a new
      congestion event: such a window holds (neither cuts again nor grows).
    - A window in which the limit was the bottleneck (inflight reached it, or
      callers queued) adds ``increase`` — or, during slow start, doubles it.
      An idle or lightly used governor does not grow.
    - Anti-stuck: after ``floor_probe_windows`` windows at the floor with no
      overload, the next window probes one step up even if it was not
      limit-bound, so a limit driven to the floor by a passing storm comes back.

    Overload is the only congestion signal AIMD reads: plain errors never move
    it. Against an upstream whose latency climbs long before it refuses work,
    prefer a latency-aware policy.

    Args:
        min_limit: The floor, at least 1.
        max_limit: The ceiling.
        initial_limit: Where to start; defaults to ``min(max(min_limit, 4), max_limit)``.
        increase: Added per limit-bound window, > 0.
        backoff_ratio: Multiplier on overload, in [0.5, 1).
        overload_threshold: Fraction of a window's samples that must be fresh
            overloads to back off, in [0, 1); 0 means any overload.
        slow_start: Double per limit-bound window until the first overload.
        floor_probe_windows: Windows at the floor before an upward probe, >= 1.
    """

    name = "aimd"

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 200,
        initial_limit: float | None = None,
        increase: float = 1.0,
        backoff_ratio: float = 0.9,
        overload_threshold: float = 0.0,
        slow_start: bool = True,
        floor_probe_windows: int = 5,
    ) -> None:
        if initial_limit is None and isinstance(min_limit, int) and isinstance(max_limit, int):
            initial_limit = min(max(min_limit, 4), max_limit)
        super().__init__(min_limit=min_limit, max_limit=max_limit, initial_limit=initial_limit)
        self._increase = check_float("increase", increase, low=0.0, low_open=True)
        self._backoff = check_float("backoff_ratio", backoff_ratio, low=0.5, high=1.0, high_open=True)
        self._threshold = check_float(
            "overload_threshold", overload_threshold, low=0.0, high=1.0, high_open=True
        )
        self._slow_start = check_bool("slow_start", slow_start)
        self._floor_probe = check_int("floor_probe_windows", floor_probe_windows, low=1)
        self._windows_at_floor = 0

    @property
    def in_slow_start(self) -> bool:
        """Whether the policy still doubles per window (no overload seen yet)."""
        return self._slow_start

    def update(self, window: Window) -> Adjustment:
        """Back off on fresh overload, grow while limit-bound, else hold."""
        limit = self._limit
        if window.count and window.overload / window.count > self._threshold:
            self._slow_start = False
            self._windows_at_floor = 0
            new = min(limit * self._backoff, limit - 1.0)
            return self._set(new, f"overload {window.overload}/{window.count}: x{self._backoff:g}")

        if window.stale_overload:
            # The tail of the congestion event already answered: neither cut again nor grow.
            return self._hold("overload from before the last decrease")

        at_floor = limit <= self._min_limit
        self._windows_at_floor = self._windows_at_floor + 1 if at_floor else 0
        if window.limit_bound:
            if self._slow_start:
                return self._set(limit * 2.0, "limit-bound, slow start: x2")
            return self._set(limit + self._increase, f"limit-bound: +{self._increase:g}")
        if at_floor and self._windows_at_floor >= self._floor_probe:
            self._windows_at_floor = 0
            return self._set(limit + self._increase, "probe up from the floor")
        return self._hold("not limit-bound")

    def reset(self, limit: float) -> None:
        """Start over from ``limit``; slow start stays off for a learned value."""
        super().reset(limit)
        self._slow_start = False
        self._windows_at_floor = 0
