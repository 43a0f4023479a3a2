"""Outcomes, samples, and their aggregation into windows.

A *sample* is one finished unit of work. Samples are folded into a *window*
that closes when it is both long enough (a multiple of the recent minimum
latency, never less than a floor) and full enough (a minimum sample count);
a window that is too thin carries over. One window is what a policy sees
when it makes one decision.
"""

from __future__ import annotations

import bisect
import enum
import math
import operator
from array import array
from dataclasses import dataclass
from typing import Any

from ._frozen import blank_of
from ._validate import check_float, check_int

__all__ = ["Outcome", "Sample", "SizeBand", "Window", "WindowAggregator", "WindowConfig", "size_band"]


class Outcome(enum.StrEnum):
    """How one unit of work ended, as far as concurrency control cares.

    Only `OVERLOAD` means "too much concurrency"; a plain `ERROR` counts for
    the error rate but must not collapse the limit.
    """

    OK = "ok"
    """The work succeeded."""
    OVERLOAD = "overload"
    """The upstream is full: 429, 503, a timeout, an explicit "slow down"."""
    ERROR = "error"
    """The work failed for a reason unrelated to load (a bug, a 500, bad input)."""
    IGNORED = "ignored"
    """Not a measurement: cancelled, or the caller said so."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One finished unit of work.

    Attributes:
        start: When the permit was granted, in the governor's clock.
        latency_s: How long the permit was held.
        inflight: Permits held when this one was granted (itself included).
        outcome: How the work ended.
        fresh: False when the work started before the latest decrease of the
            limit; such a sample cannot trigger another decrease for the same
            congestion event.
        size: How much work the call carried (items in a batch, bytes of an
            upload); 1 for a plain call. Latency is judged against the
            no-load latency of calls of about the same size, so a larger
            batch is not mistaken for queueing.
    """

    start: float
    latency_s: float
    inflight: int
    outcome: Outcome
    fresh: bool = True
    size: float = 1.0


def size_band(size: float) -> int:
    """The band of a call's size: sizes within a factor of two share one (1 → 0, 2-3 → 1, 4-7 → 2...)."""
    return max(0, math.floor(math.log2(size))) if size > 1 else 0


@dataclass(frozen=True, slots=True)
class SizeBand:
    """The successful calls of one size band in a window: how many, and their median latency."""

    band: int
    """`size_band` of the calls' sizes."""
    count: int
    latency_p50_s: float
    latency_cv: float
    """Coefficient of variation of the band's latencies."""
    size_mean: float
    """Mean size of the band's calls."""


@dataclass(frozen=True, slots=True)
class Window:
    """What a policy sees for one decision: the samples of one interval, aggregated.

    Latency figures are taken over successful samples (failures are often
    fast and would hide queueing); when a window has none, over every
    counted sample. Ignored samples count nowhere but in `ignored`.
    """

    start: float
    """Clock time of the window's opening."""
    end: float
    """Clock time of the window's closing."""
    count: int
    """Samples counted (ignored ones excluded)."""
    ok: int
    overload: int
    """Overloads from work that started after the latest decrease."""
    error: int
    ignored: int
    stale_overload: int
    """Overloads from work that started before the latest decrease (not a new event)."""
    latency_min_s: float
    latency_mean_s: float
    latency_p50_s: float
    latency_p90_s: float
    latency_p99_s: float
    latency_cv: float
    """Coefficient of variation of the latencies (stdev / mean)."""
    peak_inflight: int
    """The most permits held at once during the window."""
    limit: int
    """The gate's limit when the window closed."""
    limit_bound: bool
    """Whether the limit was the bottleneck: inflight reached it, or callers queued."""
    size_mean: float = 1.0
    """Mean size of the successful calls (items or bytes each carried; 1 when unsized)."""
    bands: tuple[SizeBand, ...] = ()
    """Successful calls per size band, when any call said its size; empty otherwise."""
    loop_lag_s: float = 0.0
    """How late the client's own event loop ran the lag probe's timers, the median (0 when
    not measured): a steady backlog of the client's own work, delay the upstream is not to
    blame for, and that grows when the client is its own bottleneck."""
    loop_pause_s: float = 0.0
    """The delay the client's whole-loop pauses (its garbage collector, CPU stolen from it)
    caused a response arriving at a random moment of the window, on average: noise unrelated
    to how much is in flight."""
    loop_pause_longest_s: float = 0.0
    """The longest of those pauses: how much later than the steady lag the latest probe tick
    ran (0 when not measured). A pause delays every call whose sending or response falls in
    it, so one pause can move the window's median by up to its length."""

    @property
    def duration_s(self) -> float:
        """How long the window lasted."""
        return self.end - self.start

    @property
    def throughput(self) -> float:
        """Successful samples per second."""
        return self.ok / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def overload_rate(self) -> float:
        """Fresh and stale overloads as a fraction of counted samples."""
        return (self.overload + self.stale_overload) / self.count if self.count else 0.0

    @property
    def error_rate(self) -> float:
        """Plain errors as a fraction of counted samples."""
        return self.error / self.count if self.count else 0.0

    @property
    def confidence(self) -> float:
        """How much to trust this window, in [0, 1].

        Grows with the number of samples and falls with the spread of their
        latencies: a window of three scattered samples says little.
        """
        size = self.count / (self.count + 10.0)
        return size / (1.0 + self.latency_cv)


@dataclass(frozen=True, slots=True, kw_only=True)
class WindowConfig:
    """When a window closes.

    A window closes once it has lasted ``max(latency_multiple × recent minimum
    latency, min_duration_s)`` *and* holds at least ``min_samples`` counted
    samples (or as many as the limit, when the limit is smaller, so that a
    limit of 1 still decides). When calls say their size (a batch), it lasts
    at least ``latency_multiple`` × the recent minimum latency per unit of size
    × the last window's mean size too: a chunker that grows its batches makes
    each call longer than the short calls the recent minimum remembers, and a
    window shorter than its calls judges only work started before the last
    decision (a limit in slow start then climbs far past the knee before the
    first queued call comes back). A window that reaches ``max_samples`` before its
    duration keeps counting every sample but keeps only a uniform subsample of
    their latencies (every k-th in arrival order, k doubling as needed, at most
    ``max_samples`` of them), and closes on its duration: at high rates the
    governor decides once per window duration, not once per ``max_samples``
    calls, and a window's memory stays bounded. Its counts (and so its
    throughput and rates) stay exact; its latency figures are those of the
    subsample. A window holding calls that said their size (a batch) closes at
    ``max_samples`` instead, as its size bands need every such call.
    A fresh overload (from work started after the latest decrease) closes it
    at once, whatever its count: congestion is answered within one sample,
    and the overloads of the same event that follow are stale.

    Attributes:
        min_samples: Fewest counted samples for a decision.
        max_samples: The most latencies a window keeps: beyond it, a uniform
            subsample of them.
        min_duration_s: Floor of a window's duration.
        latency_multiple: How many recent minimum latencies a window lasts.
        min_latency_memory: How many past windows the recent minimum latency
            is taken over.
        limit_bound_utilization: The fraction of the limit that peak inflight
            must reach for the limit to count as the bottleneck.
        lag_probe_period_s: How often the governor checks how late its event loop
            runs a timer while work is in flight (`Window.loop_lag_s`); None turns
            the probe off.
    """

    min_samples: int = 10
    max_samples: int = 1000
    min_duration_s: float = 0.1
    latency_multiple: float = 2.0
    min_latency_memory: int = 10
    limit_bound_utilization: float = 0.9
    lag_probe_period_s: float | None = 0.01

    def __post_init__(self) -> None:
        check_int("min_samples", self.min_samples, low=1)
        check_int("max_samples", self.max_samples, low=self.min_samples)
        check_float("min_duration_s", self.min_duration_s, low=0.0)
        check_float("latency_multiple", self.latency_multiple, low=0.0)
        check_int("min_latency_memory", self.min_latency_memory, low=1)
        check_float("limit_bound_utilization", self.limit_bound_utilization, low=0.0, high=1.0, low_open=True)
        if self.lag_probe_period_s is not None:
            check_float("lag_probe_period_s", self.lag_probe_period_s, low=0.0, low_open=True)


class _Thinned:
    """The samples of one list folded out of a window that reached ``max_samples``.

    ``kept`` holds every ``stride``-th of the ``seen`` samples in arrival order (the
    first one included): a uniform subsample at a fixed cost, whatever the rate.
    Made on a window's first fold and dropped when it closes.

    A caller may thin the samples itself before they reach the list (``presampled``):
    the async gate keeps one successful latency in ``stride``, counts the others
    without computing them and reports them with `WindowAggregator.count_skipped`.
    Then every sample of the list is kept as it is.
    """

    __slots__ = ("kept", "seen", "stride")

    def __init__(self) -> None:
        self.kept: list[float] = []
        self.seen = 0
        self.stride = 1

    def fold(self, pending: list[float], cap: int, presampled: bool = False) -> None:
        """Move ``pending`` (the samples that followed the last fold) in; keep at most ``cap``."""
        stride = self.stride
        if stride == 1 or presampled:
            self.kept += pending
        else:
            # Sample i of `pending` is sample `seen + i` of the window: keep the multiples of stride.
            self.kept += pending[-self.seen % stride :: stride]
        self.seen += len(pending)
        pending.clear()
        kept = self.kept
        while len(kept) > cap:
            del kept[1::2]  # kept[j] is sample j × stride: the multiples of twice the stride stay
            stride *= 2
        self.stride = stride


_WindowBlank = blank_of(Window)  # `close` fills one in, then makes it a Window (see `blank_of`)
_new = object.__new__
_mul = operator.mul
_ceil = math.ceil


def _percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ordered, non-empty list."""
    rank = max(0, math.ceil(q * len(ordered)) - 1)
    return ordered[rank]


class WindowAggregator:
    """Folds samples into windows.

    Not thread-safe and not async: the governor calls it from the event
    loop; a simulation or a test can drive it directly with `add`,
    `should_close` and `close`.

    Args:
        config: When windows close.
        start: Clock time at which the first window opens.
        presampled: Whether the caller, once a window is thinned (`ok_stride` > 1),
            appends only one successful latency in `ok_stride` to `ok_latencies`
            and reports the others with `count_skipped`.
    """

    __slots__ = (
        "_close_at",
        "_config",
        "_counts",
        "_lag_span",
        "_lags",
        "_lat_ok",
        "_lat_other",
        "_max",
        "_min_latencies",
        "_min_next",
        "_min_unit_latencies",
        "_need",
        "_presampled",
        "_sized",
        "_start",
        "_target_s",
        "_thin_ok",
        "_thin_other",
    )

    def __init__(
        self, config: WindowConfig | None = None, *, start: float | None = 0.0, presampled: bool = False
    ) -> None:
        self._config = config or WindowConfig()
        self._presampled = presampled
        # The last `min_latency_memory` windows' minimum latencies, a ring of unboxed floats
        # made at the first close (an empty deque alone is 760 bytes, and every governor kept one).
        self._min_latencies: array[float] | None = None
        self._min_next = 0  # the slot the next one overwrites, once the ring is full
        # The same windows' minimum latencies per unit of size (latency / size; a plain call
        # is size 1), in the same slots: made at the first window holding a sized call.
        self._min_unit_latencies: array[float] | None = None
        self._target_s = self._config.min_duration_s
        self._need = self._config.min_samples
        self._max = self._config.max_samples
        # Both lists live as long as the aggregator (cleared, never replaced), so
        # that a caller may hold on to `ok_latencies` across windows.
        self._lat_ok: list[float] = []
        self._lat_other: list[float] = []
        # What a window that reached `max_samples` before its duration folded out of the two
        # lists above (`_fold`); None while it has not (the common case costs nothing).
        self._thin_ok: _Thinned | None = None
        self._thin_other: _Thinned | None = None
        # Made on first use (most governors never see a sized call, and a thread gate no lag):
        # (latency, size) of successful sized calls, and the lag probe's readings in the window.
        self._sized: list[tuple[float, float]] | None = None
        self._lags: list[float] | None = None
        self._lag_span = 0.0
        self._start: float | None = None
        self._close_at = -math.inf
        self._counts = [0, 0, 0, 0, 0]
        if start is not None:
            self.open(start)

    @property
    def config(self) -> WindowConfig:
        """The closing rules."""
        return self._config

    @property
    def count(self) -> int:
        """Counted samples in the open window."""
        count = len(self._lat_ok) + len(self._lat_other)
        if self._thin_ok is not None:
            count += self._thin_ok.seen
        if self._thin_other is not None:
            count += self._thin_other.seen
        return count

    @property
    def start(self) -> float | None:
        """When the open window opened; None until `open` (when made with ``start=None``)."""
        return self._start

    @property
    def close_at(self) -> float:
        """The earliest time the open window may close on duration."""
        return self._close_at

    @property
    def ok_latencies(self) -> list[float]:
        """The open window's successful latencies: the same list object for the aggregator's life.

        The governor's fast path appends to it directly instead of calling
        `record`, and asks `should_close` once ``now >= close_at`` or the list
        holds ``max_samples`` (which may fold the list into a subsample and
        empty it: it holds the latencies since the last fold).
        """
        return self._lat_ok

    @property
    def recent_min_latency_s(self) -> float | None:
        """The smallest latency seen over the last few windows, if any."""
        mins = self._min_latencies
        return min(mins) if mins else None

    def open(self, start: float) -> None:
        """Open the window at ``start`` (an aggregator made with ``start=None`` waits for this)."""
        self._start = start
        self._close_at = start + self._target_s

    def open_counts(self) -> tuple[int, int, int, int]:
        """The open window's samples so far: ok, overload (fresh and stale), error, ignored."""
        _, overload, error, ignored, stale = self._counts
        ok = len(self._lat_ok)
        if self._thin_ok is not None:
            ok += self._thin_ok.seen
        return ok, overload + stale, error, ignored

    def _reset(self, start: float) -> None:
        self.open(start)
        self._lat_ok.clear()
        self._lat_other.clear()
        if self._sized:
            self._sized.clear()
        if self._lags:
            self._lags.clear()
        self._lag_span = 0.0
        self._thin_ok = self._thin_other = None
        self._counts = [0, 0, 0, 0, 0]  # (ok: len(_lat_ok)), overload, error, ignored, stale

    def add(self, sample: Sample, *, now: float, limit: int) -> bool:
        """Fold one sample into the open window at clock time ``now``, under ``limit``.

        Returns:
            Whether the window should now close (see `should_close`).
        """
        if sample.size != 1.0 and sample.outcome is Outcome.OK:
            self.record_size(sample.latency_s, sample.size)
        return self.record(sample.latency_s, sample.outcome, sample.fresh, now, limit)

    def record_size(self, latency_s: float, size: float) -> None:
        """Say that the successful sample just recorded carried ``size`` units of work."""
        if size != 1.0:
            if self._sized is None:
                self._sized = []
            self._sized.append((latency_s, size))

    def record_lag(self, lag_s: float, period_s: float) -> None:
        """Fold in one lag reading: a timer armed ``period_s`` before ran ``lag_s`` late."""
        if self._lags is None:
            self._lags = []
        self._lags.append(lag_s)
        self._lag_span += period_s + lag_s

    def _loop_lag(self) -> tuple[float, float, float]:
        """The client loop's steady lag, its pauses' mean delay and its longest pause (see `Window`).

        A steadily backlogged loop runs every tick about equally late: the median
        lateness. A pause delays only what arrives during it, by what is left of it: on
        average ``Σ excess² / 2 / Σ span`` over the window, the excess being each tick's
        lateness beyond the steady one. The longest pause is the largest excess (a tick
        falls in every pause longer than the probe's period, up to a period after its start).
        """
        lags = self._lags
        if not lags:
            return 0.0, 0.0, 0.0
        ordered = sorted(lags)
        steady = ordered[len(lags) // 2]
        # Summed in the order read (a list, not a generator: fewer steps, the same sum).
        excess = sum([(lag - steady) ** 2 for lag in lags if lag > steady])
        return steady, excess / (2.0 * self._lag_span), ordered[-1] - steady

    def record(self, latency_s: float, outcome: Outcome, fresh: bool, now: float, limit: int) -> bool:
        """Fold one sample in and say whether the window should close (the allocation-free `add`).

        This is the governor's hot path: one call per finished unit of work.
        """
        if outcome is Outcome.OK:
            self._lat_ok.append(latency_s)
        elif outcome is Outcome.IGNORED:
            self._counts[3] += 1
            return False
        else:
            counts = self._counts
            if outcome is Outcome.ERROR:
                counts[2] += 1
            elif fresh:
                counts[1] += 1
                self._lat_other.append(latency_s)
                return True  # congestion is answered at once, whatever the count
            else:
                counts[4] += 1
            self._lat_other.append(latency_s)
        if now < self._close_at:
            return len(self._lat_ok) + len(self._lat_other) >= self._max and self._fold()
        count = len(self._lat_ok) + len(self._lat_other)
        if self._thin_ok is not None or self._thin_other is not None:
            count = self.count
        return count >= self._need or count >= limit

    def _fold(self) -> bool:
        """The lists hold ``max_samples`` before the window's duration: fold them into subsamples.

        Returns whether the window must close now instead: one holding sized calls
        does (its size bands need every such call), as every window did once.
        """
        if self._sized:
            return True
        cap = self._max
        if self._lat_ok:
            if self._thin_ok is None:
                self._thin_ok = _Thinned()
            self._thin_ok.fold(self._lat_ok, cap, self._presampled)
        if self._lat_other:
            if self._thin_other is None:
                self._thin_other = _Thinned()
            self._thin_other.fold(self._lat_other, cap)
        return False

    def settled_ok_latencies(self) -> list[float]:
        """The successful latencies the open window's figures are taken over, were it closed now.

        `ok_latencies` itself, unless the window reached ``max_samples`` before its
        duration: then its uniform subsample, with the latencies since the last fold
        folded in (`ok_latencies` is emptied).
        """
        thin = self._thin_ok
        if thin is None:
            return self._lat_ok
        thin.fold(self._lat_ok, self._max, self._presampled)
        return thin.kept

    @property
    def ok_stride(self) -> int:
        """One successful latency in how many the open window keeps: 1 until it is thinned."""
        thin = self._thin_ok
        return 1 if thin is None else thin.stride

    def count_skipped(self, n: int) -> None:
        """Count ``n`` successful samples whose latencies a presampling caller left out."""
        thin = self._thin_ok
        if thin is None:
            raise RuntimeError("samples can be left out only once a window is thinned")
        thin.seen += n

    def _note_unit_min(self, floor_s: float, plain: bool) -> None:
        """Note the closing window's minimum latency per unit of size, in the slot `_note_min` just wrote.

        ``floor_s`` is its minimum latency over all calls; ``plain``, whether any
        call said no size (size 1, whose latency per unit is its latency).
        """
        mins = self._min_latencies
        assert mins is not None  # `_note_min` ran first
        sized = self._sized
        per_unit = floor_s
        if sized:
            per_unit = min(latency / size for latency, size in sized)
            if plain:
                per_unit = min(per_unit, floor_s)
        units = self._min_unit_latencies
        if units is None:
            # Windows before held only plain calls: their minimum per unit is their minimum.
            units = self._min_unit_latencies = array("d", mins)
        elif len(units) < len(mins):
            units.append(per_unit)
        units[(self._min_next - 1) % len(mins)] = per_unit

    def _note_min(self, latency_s: float) -> None:
        mins = self._min_latencies
        if mins is None:
            mins = self._min_latencies = array("d")
        memory = self._config.min_latency_memory
        if len(mins) < memory:
            mins.append(latency_s)
        else:
            mins[self._min_next] = latency_s
            self._min_next = (self._min_next + 1) % memory

    def _bands(self, ok: int) -> tuple[float, tuple[SizeBand, ...]]:
        """Mean size and per-band medians of the successful calls (none when no call had a size)."""
        sized = self._sized
        if not sized:
            return 1.0, ()
        # Calls that said no size are size 1: their latencies are the ok ones not in `sized`.
        unsized = ok - len(sized)
        by_band: dict[int, list[float]] = {}
        sizes: dict[int, float] = {}
        if unsized > 0:
            sized_latencies = sorted(lat for lat, _ in sized)
            rest = list(self.settled_ok_latencies())  # sorted by close()
            for lat in sized_latencies:  # remove each sized latency once
                i = bisect.bisect_left(rest, lat)
                # Always there, unless the window was folded into a subsample before its
                # first sized call: then band 0 is estimated from the subsample.
                if i < len(rest) and rest[i] == lat:
                    rest.pop(i)
            by_band[0] = rest
            sizes[0] = float(unsized)
        total = float(unsized)
        for lat, size in sized:
            band = size_band(size)
            by_band.setdefault(band, []).append(lat)
            sizes[band] = sizes.get(band, 0.0) + size
            total += size
        bands = []
        for band in sorted(by_band):
            lats = sorted(by_band[band])
            n = len(lats)
            mean = sum(lats) / n
            var = max(0.0, sum(x * x for x in lats) / n - mean * mean)
            cv = math.sqrt(var) / mean if mean > 0 else 0.0
            bands.append(SizeBand(band, n, _percentile(lats, 0.5), cv, sizes[band] / n))
        return total / ok if ok else 1.0, tuple(bands)

    def should_close(self, now: float, limit: int) -> bool:
        """Whether the open window has enough in it to decide on at ``now``, under ``limit``.

        A fresh overload closes it at once. Otherwise it needs
        ``min(min_samples, limit)`` counted samples and its duration. A window
        that holds ``max_samples`` latencies before its duration is folded into
        a subsample here (see `WindowConfig`), and stays open.
        """
        if self._counts[1]:
            return True
        count = self.count
        if (count < self._need and count < limit) or count == 0:
            return False
        if now >= self._close_at:
            return True
        return len(self._lat_ok) + len(self._lat_other) >= self._max and self._fold()

    def close(self, now: float, limit: int, *, peak_inflight: int, saw_waiters: bool = False) -> Window:
        """Close the open window at ``now`` and open the next one.

        Args:
            now: Clock time of the closing.
            limit: The gate's limit now.
            peak_inflight: The most permits held at once during the window.
            saw_waiters: Whether callers queued for a permit during the window.
        """
        # One call per window, on the gate's path: written for few interpreter steps. The
        # figures are those of the plain formulas (each noted), bit for bit: sums run over
        # the sorted latencies in order, as the golden results were made.
        _, overload, error, ignored, stale = self._counts
        ok_lats = self._lat_ok
        other = self._lat_other
        ok = len(ok_lats)
        if self._thin_ok is not None:  # folded into a subsample (`_fold`): its latencies, all counted
            ok_lats = self.settled_ok_latencies()
            ok = self._thin_ok.seen
        if self._thin_other is not None:
            self._thin_other.fold(other, self._max)
            other = self._thin_other.kept
        latencies = ok_lats or other
        w: Any = _new(_WindowBlank)
        if latencies:
            latencies.sort()
            n = len(latencies)
            mean = sum(latencies) / n
            # The spread is estimated on an evenly strided subsample of the sorted
            # latencies: the same distribution, at a fixed cost per window.
            stride = n // 256
            if stride > 1:
                sub = latencies[::stride]
                m = len(sub)
                sub_mean = sum(sub) / m
            else:  # the subsample is the whole list: no copy, and its mean is `mean`
                sub, m, sub_mean = latencies, n, mean
            var = sum(map(_mul, sub, sub)) / m - sub_mean * sub_mean
            # max(0.0, var) and the nearest-rank percentiles (`_percentile`), inline.
            w.latency_cv = math.sqrt(var) / sub_mean if var > 0.0 and sub_mean > 0 else 0.0
            low = latencies[0]
            w.latency_min_s = low
            w.latency_mean_s = mean
            w.latency_p50_s = latencies[_ceil(0.5 * n) - 1]
            w.latency_p90_s = latencies[_ceil(0.9 * n) - 1]
            w.latency_p99_s = latencies[_ceil(0.99 * n) - 1]
            floor = min(low, min(other)) if other else low
            self._note_min(floor if floor > 0 else low)
            if self._sized or self._min_unit_latencies is not None:
                # Calls that said no size (failed ones included) count as size 1.
                plain = ok > len(self._sized or ()) or bool(other)
                self._note_unit_min(floor if floor > 0 else low, plain)
        else:
            w.latency_min_s = w.latency_mean_s = w.latency_p50_s = 0.0
            w.latency_p90_s = w.latency_p99_s = w.latency_cv = 0.0
        w.start = now if self._start is None else self._start
        w.end = now
        w.count = ok + overload + error + stale
        w.ok = ok
        w.overload = overload
        w.error = error
        w.ignored = ignored
        w.stale_overload = stale
        w.peak_inflight = peak_inflight
        w.limit = limit
        w.limit_bound = saw_waiters or peak_inflight >= max(
            1, _ceil(limit * self._config.limit_bound_utilization)
        )
        if self._sized:
            w.size_mean, w.bands = self._bands(ok)
        else:
            w.size_mean, w.bands = 1.0, ()
        if self._lags:
            w.loop_lag_s, w.loop_pause_s, w.loop_pause_longest_s = self._loop_lag()
        else:
            w.loop_lag_s = w.loop_pause_s = w.loop_pause_longest_s = 0.0
        w.__class__ = Window
        recent = self.recent_min_latency_s
        config = self._config
        self._target_s = max(
            config.min_duration_s, config.latency_multiple * recent if recent is not None else 0.0
        )
        units = self._min_unit_latencies
        if units is not None and w.size_mean != 1.0:
            # Calls that say their size last about their size's latency (see `WindowConfig`).
            self._target_s = max(self._target_s, config.latency_multiple * min(units) * w.size_mean)
        self._reset(now)
        return w  # type: ignore[no-any-return]
