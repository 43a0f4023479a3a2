"""`Vegas`: keep the estimated queue at the upstream between alpha and beta."""

from __future__ import annotations

import math

from aiogovernor._samples import Window
from aiogovernor._validate import check_bool, check_float

from ._base import Adjustment, BoundedPolicy
from ._baseline import LatencyBaseline

__all__ = ["Vegas"]


class Vegas(BoundedPolicy):
    """TCP Vegas for concurrency: queue ≈ limit × (1 − baseline / latency).

    Below ``alpha`` queued requests the limit grows (doubling during slow
    start, then by ``log10(limit)``, at least 1); above ``beta`` it shrinks
    by the same step; in between it holds. Slow start ends at the first
    queue above ``beta`` or the first overload. A fresh overload multiplies
    the limit by ``backoff_ratio``. Growth needs a limit-bound window. The
    baseline is a `LatencyBaseline` (a low quantile of recent medians).

    Args:
        min_limit: The floor, at least 1.
        max_limit: The ceiling.
        initial_limit: Where to start; defaults to ``min(max(min_limit, 4), max_limit)``.
        alpha: Queue below which the limit grows, > 0.
        beta: Queue above which it shrinks, > alpha.
        backoff_ratio: Multiplier on overload, in [0.5, 1).
        slow_start: Double per clean window until the first congestion.
    """

    name = "vegas"

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        initial_limit: float | None = None,
        alpha: float = 2.0,
        beta: float = 4.0,
        backoff_ratio: float = 0.9,
        slow_start: bool = True,
    ) -> None:
        if initial_limit is None and isinstance(min_limit, int) and isinstance(max_limit, int):
            initial_limit = min(max(min_limit, 4), max_limit)
        super().__init__(min_limit=min_limit, max_limit=max_limit, initial_limit=initial_limit)
        self._alpha = check_float("alpha", alpha, low=0.0, low_open=True)
        self._beta = check_float("beta", beta, low=self._alpha, low_open=True)
        self._backoff = check_float("backoff_ratio", backoff_ratio, low=0.5, high=1.0, high_open=True)
        self._slow_start = check_bool("slow_start", slow_start)
        self._baseline = LatencyBaseline()

    def update(self, window: Window) -> Adjustment:
        """Back off on overload; else compare the estimated queue with alpha and beta."""
        limit = self._limit
        if window.count and window.overload:
            self._slow_start = False
            return self._set(min(limit * self._backoff, limit - 1.0), f"overload: x{self._backoff:g}")
        if window.stale_overload:
            return self._hold("overload from before the last decrease")
        ratio = self._baseline.ratio(window)
        self._baseline.observe(window)
        queue = window.limit * (1.0 - 1.0 / ratio)
        step = max(1.0, math.log10(limit))
        if queue > self._beta:
            self._slow_start = False
            return self._set(limit - step, f"queue {queue:.1f} > beta {self._beta:g}: -{step:.2g}")
        if queue < self._alpha and window.limit_bound:
            if self._slow_start:
                return self._set(limit * 2.0, f"queue {queue:.1f}, slow start: x2")
            return self._set(limit + step, f"queue {queue:.1f} < alpha {self._alpha:g}: +{step:.2g}")
        return self._hold(f"queue {queue:.1f}")
