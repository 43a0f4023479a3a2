"""Cumulative latency histograms fed in bulk, once per closed window."""

from __future__ import annotations

import bisect
import math
import weakref
from collections.abc import Iterable, Sequence

from aiogovernor._events import WindowListener
from aiogovernor._registry import Governor  # either gate: the async one or the thread gate
from aiogovernor._samples import Window

from ._every import EveryGovernor

__all__ = ["DEFAULT_LATENCY_BUCKETS_S", "LatencyHistograms"]

DEFAULT_LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
"""Upper bounds (seconds) of the latency buckets: 1 ms to 30 s, plus the implicit +Inf."""


def check_buckets(buckets_s: Iterable[float]) -> tuple[float, ...]:
    """Validated, sorted, finite and positive bucket bounds."""
    bounds = tuple(buckets_s)
    if not bounds:
        raise ValueError("latency buckets must name at least one upper bound")
    for bound in bounds:
        if isinstance(bound, bool) or not isinstance(bound, int | float) or not math.isfinite(bound):
            raise ValueError(f"latency bucket bounds must be finite numbers of seconds, got {bound!r}")
        if bound <= 0:
            raise ValueError(f"latency bucket bounds must be positive, got {bound!r}")
    if list(bounds) != sorted(set(bounds)):
        raise ValueError(f"latency bucket bounds must be strictly increasing, got {bounds!r}")
    return tuple(float(b) for b in bounds)


class _Buckets:
    """One governor's histogram: cumulative counts per upper bound, the sum and the count."""

    __slots__ = ("bounds", "state")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # Replaced whole once per window, never mutated: a reader in another
        # thread (a scrape) always sees one consistent histogram.
        self.state: tuple[tuple[int, ...], float, int] = ((0,) * len(bounds), 0.0, 0)

    def fold(self, window: Window, ok_latencies_s: Sequence[float], /) -> None:
        """Add one window's sorted latencies: a bisection per bucket, not a step per sample."""
        n = len(ok_latencies_s)
        if not n:
            return
        counts, total, count = self.state
        right = bisect.bisect_right
        ok = window.ok
        if ok == n:
            self.state = (
                tuple(c + right(ok_latencies_s, b) for c, b in zip(counts, self.bounds, strict=True)),
                total + sum(ok_latencies_s),
                count + n,
            )
            return
        # A window past `max_samples` hands over a uniform subsample: each stands for ok / n calls.
        scale = ok / n
        self.state = (
            tuple(
                c + round(right(ok_latencies_s, b) * scale) for c, b in zip(counts, self.bounds, strict=True)
            ),
            total + sum(ok_latencies_s) * scale,
            count + ok,
        )


class LatencyHistograms:
    """A latency histogram for every live governor, from the moment this object exists.

    Each governor's successful latencies are folded in as each window closes
    (a `aiogovernor.WindowListener`): the cost is a few bisections of the
    window's sorted latencies per window, and nothing per unit of work.
    Windows closed before this object was made are not in it.

    Args:
        buckets_s: Upper bounds of the buckets in seconds, increasing.
    """

    def __init__(self, buckets_s: Iterable[float] = DEFAULT_LATENCY_BUCKETS_S) -> None:
        self._bounds = check_buckets(buckets_s)
        self._by_governor: weakref.WeakKeyDictionary[Governor, _Buckets] = weakref.WeakKeyDictionary()
        self._hook = EveryGovernor(self._make)

    def _make(self, governor: Governor) -> WindowListener:
        buckets = _Buckets(self._bounds)
        self._by_governor[governor] = buckets
        return buckets.fold

    @property
    def buckets_s(self) -> tuple[float, ...]:
        """The buckets' upper bounds in seconds (+Inf implied)."""
        return self._bounds

    def get(self, governor: Governor) -> tuple[tuple[int, ...], float, int] | None:
        """``(cumulative counts per bound, sum of latencies, count)`` for ``governor``, if hooked."""
        buckets = self._by_governor.get(governor)
        return None if buckets is None else buckets.state

    def close(self) -> None:
        """Stop folding windows in (the governors are left as they were)."""
        self._hook.close()
