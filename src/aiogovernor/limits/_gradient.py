"""`Gradient`: latency against the no-load latency, in the spirit of Netflix Gradient2 and Envoy."""

from __future__ import annotations

import math
import random

from aiogovernor._samples import Window
from aiogovernor._validate import check_float, check_int

from ._base import Adjustment, BoundedPolicy
from ._baseline import LatencyBaseline

__all__ = ["Gradient"]


class Gradient(BoundedPolicy):
    """Steer by the latency gradient: ``(1 + tolerance) × baseline / latency``, with √limit headroom.

    Each window: ``new = limit × gradient + √limit`` (the gradient clamped
    to [0.5, 1]), smoothed: ``limit += smoothing × (new − limit)``. Growth
    needs a limit-bound window. Unlike Netflix's Gradient2 it honours
    overload: a fresh overload multiplies the limit by ``backoff_ratio``
    (Netflix ignores drops, their issue #176), and since timeouts are
    overloads, steady timeouts cannot make it drift upward (#137), nor can
    modest overload (#134). The no-load latency is re-measured every
    ``remeasure_windows`` windows (jittered by a quarter, seeded) by pinning
    the limit at ``probe_limit`` for one window, as Envoy does.

    Args:
        min_limit: The floor, at least 1.
        max_limit: The ceiling.
        initial_limit: Where to start; defaults to ``min(max(min_limit, 4), max_limit)``.
        tolerance: Latency above the baseline that is not yet queueing, > 0.
        smoothing: How far one window moves the limit toward its target, in (0, 1].
        backoff_ratio: Multiplier on overload, in [0.5, 1).
        remeasure_windows: Windows between re-measurements of the baseline, >= 2.
        probe_limit: The limit pinned while re-measuring.
        seed: Seeds the jitter of the re-measurement interval.
    """

    name = "gradient"

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        initial_limit: float | None = None,
        tolerance: float = 0.1,
        smoothing: float = 0.2,
        backoff_ratio: float = 0.9,
        remeasure_windows: int = 200,
        probe_limit: int = 3,
        seed: int = 0,
    ) -> None:
        if initial_limit is None and isinstance(min_limit, int) and isinstance(max_limit, int):
            initial_limit = min(max(min_limit, 4), max_limit)
        super().__init__(min_limit=min_limit, max_limit=max_limit, initial_limit=initial_limit)
        self._tolerance = check_float("tolerance", tolerance, low=0.0, low_open=True)
        self._smoothing = check_float("smoothing", smoothing, low=0.0, high=1.0, low_open=True)
        self._backoff = check_float("backoff_ratio", backoff_ratio, low=0.5, high=1.0, high_open=True)
        self._remeasure = check_int("remeasure_windows", remeasure_windows, low=2)
        self._probe_limit = check_int("probe_limit", probe_limit, low=1)
        self._random = random.Random(seed)
        self._baseline = LatencyBaseline()
        self._countdown = self._next_interval()
        self._resume: float | None = None

    def _next_interval(self) -> int:
        return max(2, round(self._remeasure * (0.75 + 0.5 * self._random.random())))

    @property
    def baseline_s(self) -> float | None:
        """The estimated no-load latency, once measured."""
        return self._baseline.value

    def update(self, window: Window) -> Adjustment:
        """Back off on overload; else move toward ``limit × gradient + √limit``."""
        if self._resume is not None:
            if window.peak_inflight > self._probe_limit or window.ok == 0:
                return self._hold("re-measuring the baseline: draining")
            self._baseline.seed(window.latency_p50_s)
            resume, self._resume = self._resume, None
            return self._set(resume, f"baseline re-measured: {window.latency_p50_s * 1000:.1f} ms")
        limit = self._limit
        if window.count and window.overload:
            return self._set(min(limit * self._backoff, limit - 1.0), f"overload: x{self._backoff:g}")
        if window.stale_overload:
            return self._hold("overload from before the last decrease")
        self._countdown -= 1
        if self._countdown <= 0 and limit > self._probe_limit:
            self._countdown = self._next_interval()
            self._resume = limit
            self._limit = self._clamp(self._probe_limit)
            return Adjustment(self._limit, "re-measure the baseline at the probe limit")
        ratio = self._baseline.ratio(window)
        self._baseline.observe(window)
        gradient = max(0.5, min(1.0, (1.0 + self._tolerance) / ratio))
        target = limit * gradient + math.sqrt(limit)
        if not window.limit_bound:
            target = min(target, limit)
        new = limit + self._smoothing * (target - limit)
        return self._set(new, f"latency {ratio:.2f}x baseline: gradient {gradient:.2f}")
