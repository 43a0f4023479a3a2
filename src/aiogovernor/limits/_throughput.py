"""`ThroughputAIMD`: throughput-driven rules as batch uploaders use them, made correct."""

from __future__ import annotations

import math
import os

from aiogovernor._samples import Window
from aiogovernor._validate import check_bounds

from ._base import Adjustment, BoundedPolicy

__all__ = ["ThroughputAIMD"]


class ThroughputAIMD(BoundedPolicy):
    """Steer by throughput between consecutive windows (a batch uploader's profile).

    Each window is compared with the previous one:

    1. failure rate (errors and fresh overloads) > 5 % → × 0.7;
    2. throughput down by more than 15 % → × 0.85;
    3. throughput up by more than 5 % → × 1.2;
    4. failure rate < 3 % and throughput stable → × 1.1;
    5. otherwise hold.

    Unlike the original, it remembers the previous window's throughput (the
    original never updated its own state, so it never learned), every move
    changes the integer limit by at least one, and growth (rules 3 and 4)
    happens only while the limit was the bottleneck.

    Args:
        min_limit: The floor.
        max_limit: The ceiling.
        initial_limit: Where to start; defaults to 2 × CPU cores, clamped.
    """

    name = "throughput-aimd"

    def __init__(
        self, *, min_limit: int = 1, max_limit: int = 200, initial_limit: float | None = None
    ) -> None:
        if initial_limit is None:
            check_bounds(min_limit, max_limit, None)
            initial_limit = min(max_limit, max(min_limit, 2 * (os.cpu_count() or 1)))
        super().__init__(min_limit=min_limit, max_limit=max_limit, initial_limit=initial_limit)
        self._previous_throughput: float | None = None

    def _step(self, factor: float, reason: str) -> Adjustment:
        limit = self._limit
        target = limit * factor
        # Guaranteed integer progress: the gate admits floor(limit) permits.
        target = max(target, math.floor(limit) + 1.0) if factor > 1 else min(target, math.floor(limit) - 1.0)
        return self._set(target, reason)

    def update(self, window: Window) -> Adjustment:
        """Apply the first rule that matches, and remember this window's throughput."""
        previous, current = self._previous_throughput, window.throughput
        self._previous_throughput = current
        failures = window.error + window.overload
        failure_rate = failures / window.count if window.count else 0.0
        if failure_rate > 0.05:
            return self._step(0.7, f"failure rate {failure_rate:.1%} > 5%: x0.7")
        if window.stale_overload:
            return self._hold("overload from before the last decrease")
        if previous is None or previous <= 0:
            return self._hold("first window: baseline throughput")
        change = current / previous - 1.0
        if change < -0.15:
            return self._step(0.85, f"throughput down {-change:.0%}: x0.85")
        if not window.limit_bound:
            return self._hold("not limit-bound")
        if change > 0.05:
            return self._step(1.2, f"throughput up {change:.0%}: x1.2")
        if failure_rate < 0.03:
            return self._step(1.1, "stable, failure rate < 3%: x1.1")
        return self._hold("stable")

    def reset(self, limit: float) -> None:
        """Start over from ``limit`` and forget the throughput baseline."""
        super().reset(limit)
        self._previous_throughput = None
