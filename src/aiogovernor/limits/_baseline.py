"""`LatencyBaseline`: the upstream's latency with no queue, estimated from windows."""

from __future__ import annotations

import math
import statistics
from array import array
from bisect import bisect_left, bisect_right

from aiogovernor._samples import Window, size_band
from aiogovernor._validate import check_float, check_int

__all__ = ["LatencyBaseline", "median_noise", "pooled_median"]

_SHORTFALLS: dict[float, float] = {}  # quantile -> minus the standard normal's quantile there


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

    Once a baseline is known, windows with fewer than ``min_samples`` calls
    are pooled with the next ones until they hold that many together, and
    the pool's median (each window's median weighted by its calls) is folded
    in. A governor held to a small limit, whose windows are small, keeps
    following the upstream's latency that way: one that joined an upstream
    already queued at by others learned a baseline that includes their
    queue, and a governor whose baseline never moved would judge that queue
    as its own congestion and give way to them, window after window.

    Args:
        memory_windows: How many recent window medians it keeps, >= 1.
        quantile: Which quantile of them is the baseline, in (0, 1).
        min_samples: Windows with fewer successful samples are not used alone
            (once a baseline is known, they are pooled until they hold that many).
    """

    __slots__ = ("_bands", "_memory", "_min_samples", "_pool", "_quantile", "_shortfall", "_value")

    def __init__(self, *, memory_windows: int = 50, quantile: float = 0.1, min_samples: int = 10) -> None:
        self._memory = check_int("memory_windows", memory_windows, low=1)
        # One memory per size band (see `Window.bands`; plain calls are band 0, size 1) of
        # (latency, mean size) pairs, and the band's reference pair at the low quantile.
        self._bands: dict[int, tuple[_Pairs, list[float]]] = {}
        self._quantile = check_float("quantile", quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        shortfall = _SHORTFALLS.get(self._quantile)
        if shortfall is None:  # computed once per quantile: an inverse CDF in Python per policy
            shortfall = _SHORTFALLS[self._quantile] = -statistics.NormalDist().inv_cdf(self._quantile)
        self._shortfall = shortfall
        self._min_samples = check_int("min_samples", min_samples, low=1)
        self._value: float | None = None
        # Small unsized windows waiting to be folded in together: (calls, median, cv)
        self._pool: list[tuple[int, float, float]] | None = None

    @property
    def value(self) -> float | None:
        """The baseline latency in seconds; None before the first usable window."""
        return self._value

    @property
    def min_samples(self) -> int:
        """The fewest successful samples a window needs to be folded in."""
        return self._min_samples

    @property
    def known(self) -> bool:
        """Whether any no-load latency has been measured (of plain calls or of any call size)."""
        return bool(self._bands)

    def observe(self, window: Window, *, min_samples: int | None = None) -> None:
        """Fold in one window's median latency (successful samples only), per size band if sized.

        ``min_samples`` overrides the fewest samples an unsized window needs, for a caller
        that folds in several small windows at once (their low quantile is the baseline).

        Raises:
            ValueError: For a ``min_samples`` below 1.
        """
        if min_samples is not None:
            check_int("min_samples", min_samples, low=1)
        if window.bands:
            # A band needs fewer calls than a window: batches are few and slow. Its own
            # spread sets how far its median is raised, as for unsized windows.
            need = max(2, self._min_samples // 4)
            for band in window.bands:
                if band.count >= need and band.latency_p50_s > 0:
                    noise = 1.25 * band.latency_cv / math.sqrt(band.count)
                    latency = band.latency_p50_s * (1.0 + self._shortfall * noise)
                    self._note(band.band, latency, band.size_mean)
            return
        if window.latency_p50_s <= 0:
            return
        if window.ok < (self._min_samples if min_samples is None else min_samples):
            if min_samples is None and 0 in self._bands and window.ok:
                self._pooled(window)
            return
        noise = median_noise(window)
        self._note(0, window.latency_p50_s * (1.0 + self._shortfall * noise), 1.0)

    def observe_median(self, ok: int, latency_p50_s: float, latency_cv: float) -> None:
        """Fold in the median latency of ``ok`` plain (unsized) calls, whatever their number.

        What `observe` does with an unsized window given ``min_samples=2``, from the three
        figures it reads of it, for a caller that keeps those instead of whole windows.
        The median is raised by its expected shortfall as in `observe`; fewer than 2
        calls, or a median that is not positive, are not folded in.

        Raises:
            ValueError: For a negative ``ok`` or ``latency_cv``.
        """
        check_int("ok", ok, low=0)
        check_float("latency_cv", latency_cv, low=0.0)
        if ok < 2 or latency_p50_s <= 0:
            return
        noise = 1.25 * latency_cv / math.sqrt(ok)
        self._note(0, latency_p50_s * (1.0 + self._shortfall * noise), 1.0)

    def _pooled(self, window: Window) -> None:
        """Pool a small window with the next ones; fold the pool in once it holds ``min_samples``."""
        pool = self._pool
        if pool is None:
            pool = self._pool = []
        pool.append((window.ok, window.latency_p50_s, window.latency_cv))
        if sum(n for n, _, _ in pool) < self._min_samples:
            return
        calls, median, cv = pooled_median(pool)
        pool.clear()
        noise = 1.25 * cv / math.sqrt(calls)
        self._note(0, median * (1.0 + self._shortfall * noise), 1.0)

    def _note(self, band: int, latency_s: float, size: float) -> None:
        known = self._bands.get(band)
        if known is None:
            known = self._bands[band] = (_Pairs(self._memory), [0.0, 1.0])
        memory, ref = known
        ref[0], ref[1] = memory.add(latency_s, size, self._quantile)
        if band == 0:
            self._value = ref[0]

    def expected_s(self, size: float) -> float | None:
        """The no-load latency of a call of ``size``, from the size bands measured so far.

        Between two measured sizes it interpolates (a cost affine in the size is then
        exact); beyond them it assumes the cost that makes a latency look least like
        queueing: the same latency for a smaller call, proportional for a larger one.
        None before any sized call was measured.
        """
        below: tuple[float, float] | None = None
        above: tuple[float, float] | None = None
        for _, (latency, ref_size) in self._bands.values():
            if ref_size <= size and (below is None or ref_size > below[0]):
                below = (ref_size, latency)
            elif ref_size > size and (above is None or ref_size < above[0]):
                above = (ref_size, latency)
        if below is not None and above is not None:
            (s1, l1), (s2, l2) = below, above
            return l1 + max(0.0, l2 - l1) * (size - s1) / (s2 - s1)
        if below is not None:
            return below[1] * size / below[0]
        if above is not None:
            return above[1]
        return None

    def references(self) -> tuple[tuple[float, float], ...]:
        """Each size band's no-load latency as ``(size, latency_s)``, smallest size first.

        Plain calls are size 1. What a governor keeps in its learned state (`restore`).
        """
        # Copied first: a thread gate's store loop reads this while a worker thread updates.
        return tuple(sorted((size, latency) for _, (latency, size) in list(self._bands.values())))

    def restore(self, references: tuple[tuple[float, float], ...]) -> None:
        """Start from ``(size, latency_s)`` pairs measured before (`references`), forgetting the memory.

        Each pair becomes its band's first memory, so windows of this run replace it
        as they come: the low quantile of a short memory is its minimum, and one
        that reads lower wins at once.

        Raises:
            ValueError: For a size below 1 or a latency that is not a finite number > 0.
        """
        pairs = [
            (
                check_float("size", size, low=1.0),
                check_float("latency_s", latency, low=0.0, low_open=True),
            )
            for size, latency in references
        ]
        self._bands.clear()
        self._value = None
        self._pool = None
        for size, latency in pairs:
            self._note(size_band(size), latency, size)

    def seed(self, latency_s: float) -> None:
        """Forget the memory and start from ``latency_s`` (a fresh minimum measurement)."""
        check_float("latency_s", latency_s, low=0.0, low_open=True)
        self._bands.clear()
        self._pool = None
        self._note(0, latency_s, 1.0)

    def ratio(self, window: Window) -> float:
        """The window's median latency over the baseline (1.0 when either is unknown).

        When the window's calls carried sizes, each size band's median is compared with
        the no-load latency expected at that band's mean size (`expected_s`) and the
        ratios are averaged, weighted by calls.
        """
        if window.bands:
            weighted = calls = 0.0
            for band in window.bands:
                expected = self.expected_s(band.size_mean)
                if expected is None or expected <= 0 or band.latency_p50_s <= 0:
                    continue
                weighted += band.count * band.latency_p50_s / expected
                calls += band.count
            return weighted / calls if calls else 1.0
        if self._value is None or window.ok == 0 or window.latency_p50_s <= 0:
            return 1.0
        return window.latency_p50_s / self._value


class _Pairs:
    """The last ``size`` (latency, size) pairs, in arrival order and sorted, unboxed in arrays.

    The baseline is the pair at a low rank of the sorted memory after each window: kept
    sorted as pairs come and go (a binary search and a shift of at most ``size`` floats),
    not sorted again whole per window. A size column exists only once a size other than 1
    was seen (plain calls' band never has one): 16 bytes a pair then, 8 until.
    """

    __slots__ = ("_latencies", "_next", "_order", "_order_sizes", "_size", "_sizes")

    def __init__(self, size: int) -> None:
        self._size = size
        self._latencies = array("d")  # in arrival order, a ring once full
        self._sizes: array[float] | None = None  # the same, for sizes; None: all are 1
        self._next = 0  # the pair the next one overwrites, once full
        # Sorted by (latency, size), as `sorted` orders the pairs; None once a NaN was seen
        # (it has no place in an order): the pairs are then sorted whole when asked.
        self._order: array[float] | None = array("d")
        self._order_sizes: array[float] | None = None

    def __len__(self) -> int:
        return len(self._latencies)

    def add(self, latency_s: float, size: float, quantile: float) -> tuple[float, float]:
        """Keep a pair; return the pair at ``quantile`` of those kept (the nearest rank's, from below)."""
        self.append(latency_s, size)
        n = len(self._latencies)
        rank = max(0, math.ceil(quantile * n) - 1)
        order = self._order
        if order is None:
            return self.at(rank)
        order_sizes = self._order_sizes
        return order[rank], 1.0 if order_sizes is None else order_sizes[rank]

    def append(self, latency_s: float, size: float) -> None:
        """Keep a pair, forgetting the oldest one when full."""
        latencies = self._latencies
        if size != 1.0 and self._sizes is None:
            self._sizes = array("d", [1.0]) * len(latencies)
            if self._order is not None:
                self._order_sizes = array("d", [1.0]) * len(latencies)
        sizes = self._sizes
        if latency_s != latency_s or size != size:  # NaN
            self._order = self._order_sizes = None
        order = self._order
        if len(latencies) < self._size:
            latencies.append(latency_s)
            if sizes is not None:
                sizes.append(size)
        else:
            i = self._next
            if order is not None:
                self._remove(latencies[i], 1.0 if sizes is None else sizes[i])
            latencies[i] = latency_s
            if sizes is not None:
                sizes[i] = size
            self._next = (i + 1) % self._size
        if order is not None:
            order_sizes = self._order_sizes
            k = bisect_left(order, latency_s)
            if order_sizes is not None:
                k = bisect_left(order_sizes, size, k, bisect_right(order, latency_s, k))
                order_sizes.insert(k, size)
            order.insert(k, latency_s)

    def _remove(self, latency_s: float, size: float) -> None:
        order = self._order
        assert order is not None
        order_sizes = self._order_sizes
        k = bisect_left(order, latency_s)
        if order_sizes is not None:
            k = bisect_left(order_sizes, size, k, bisect_right(order, latency_s, k))
            del order_sizes[k]
        del order[k]

    def at(self, rank: int) -> tuple[float, float]:
        """The pair at ``rank`` (0: the smallest) of the pairs sorted by latency, then size."""
        order = self._order
        if order is None:
            sizes = self._sizes or array("d", [1.0]) * len(self._latencies)
            return sorted(zip(self._latencies, sizes, strict=True))[rank]
        order_sizes = self._order_sizes
        return order[rank], 1.0 if order_sizes is None else order_sizes[rank]


def pooled_median(windows: list[tuple[int, float, float]]) -> tuple[int, float, float]:
    """Several small windows' calls taken together, from each window's ``(calls, median, cv)``.

    Returns their calls, the calls-weighted median of the windows' medians and the
    calls-weighted mean of their coefficients of variation.

    Raises:
        ValueError: For no calls at all.
    """
    calls = sum(n for n, _, _ in windows)
    if calls <= 0:
        raise ValueError("pooled_median needs at least one call")
    ordered = sorted(windows, key=lambda entry: entry[1])
    half, seen, median = calls / 2.0, 0, ordered[-1][1]
    for n, latency, _ in ordered:
        seen += n
        if seen >= half:
            median = latency
            break
    return calls, median, sum(n * c for n, _, c in windows) / calls


def median_noise(window: Window) -> float:
    """The relative standard error of a window's median latency.

    For a median of n samples, about 1.25 × (stdev / mean) / √n.
    """
    if window.ok < 2:
        return math.inf
    return 1.25 * window.latency_cv / math.sqrt(window.ok)
