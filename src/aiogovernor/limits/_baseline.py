"""`LatencyBaseline`: the upstream's latency with no queue, estimated from windows."""

from __future__ import annotations

import math
import statistics
from collections import deque

from aiogovernor._samples import Window
from aiogovernor._validate import check_float, check_int

__all__ = ["LatencyBaseline", "median_noise"]


class LatencyBaseline:
    """The no-load latency of an upstream: a low quantile of recent window medians.

    A minimum over windows is biased low by noise (the minimum of many noisy
    medians sits several standard errors below the truth), which makes any
    controller built on it see queueing that is not there. A low quantile of
    the recent medians is robust to that noise, and to a minority of
    congested windows; the memory lets it follow an upstream whose base
    latency moves. Each median is first raised by its own expected shortfall
    at that quantile (its standard error times the normal quantile), so a
    noisy upstream (a heavy tail, small windows) does not drag the
    baseline down.

    Args:
        memory_windows: How many recent window medians it keeps, >= 1.
        quantile: Which quantile of them is the baseline, in (0, 1).
        min_samples: Windows with fewer successful samples are not used.
    """

    __slots__ = ("_medians", "_min_samples", "_quantile", "_shortfall", "_value")

    def __init__(self, *, memory_windows: int = 50, quantile: float = 0.1, min_samples: int = 10) -> None:
        self._medians: deque[float] = deque(maxlen=check_int("memory_windows", memory_windows, low=1))
        self._quantile = check_float("quantile", quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        self._shortfall = -statistics.NormalDist().inv_cdf(self._quantile)
        self._min_samples = check_int("min_samples", min_samples, low=1)
        self._value: float | None = None

    @property
    def value(self) -> float | None:
        """The baseline latency in seconds; None before the first usable window."""
        return self._value

    def observe(self, window: Window) -> None:
        """Fold in one window's median latency (successful samples only)."""
        if window.ok < self._min_samples or window.latency_p50_s <= 0:
            return
        noise = median_noise(window)
        self._medians.append(window.latency_p50_s * (1.0 + self._shortfall * noise))
        ordered = sorted(self._medians)
        self._value = ordered[max(0, math.ceil(self._quantile * len(ordered)) - 1)]

    def seed(self, latency_s: float) -> None:
        """Forget the memory and start from ``latency_s`` (a fresh minimum measurement)."""
        check_float("latency_s", latency_s, low=0.0, low_open=True)
        self._medians.clear()
        self._medians.append(latency_s)
        self._value = latency_s

    def ratio(self, window: Window) -> float:
        """The window's median latency over the baseline (1.0 when either is unknown)."""
        if self._value is None or window.ok == 0 or window.latency_p50_s <= 0:
            return 1.0
        return window.latency_p50_s / self._value


def median_noise(window: Window) -> float:
    """The relative standard error of a window's median latency.

    For a median of n samples, about 1.25 × (stdev / mean) / √n.
    """
    if window.ok < 2:
        return math.inf
    return 1.25 * window.latency_cv / math.sqrt(window.ok)
