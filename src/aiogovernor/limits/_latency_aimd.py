"""`LatencyAIMD`, the default policy: additive increase, decrease on queueing latency or overload."""

from __future__ import annotations

import math
from array import array

from aiogovernor._samples import Window
from aiogovernor._validate import check_bool, check_float, check_int

from ._base import Adjustment, BoundedPolicy
from ._baseline import LatencyBaseline, median_noise, pooled_median

__all__ = ["LatencyAIMD"]

# How many of the latest limit-bound windows the goodput of a latency rise is compared with.
_DELIVERED_WINDOWS = 5
# The goodput rule: the fewest limit-bound windows its fit needs, how many standard errors
# below zero its slope must be, and the elasticity (relative change of goodput over relative
# change of the limit) under which a fall is material.
_GOODPUT_MIN_WINDOWS = 8
_GOODPUT_T = 2.5
_GOODPUT_ELASTICITY = 0.2
# How long a fall of goodput is remembered once the fit stops showing it, in multiples of
# goodput_memory_windows.
_FELL_MEMORY = 4
# Goodput past a remembered fall that grows at least this elastically with the limit says
# the upstream grew (no queue: goodput in proportion to the limit, elasticity 1).
_ROOM_ELASTICITY = 0.8
# The probe pace at a wall that refused the last probe: its longest wait grows by one
# probe interval per this many permits of the wall (up to ``max_probe_backoff`` intervals).
_PERMITS_PER_PROBE_INTERVAL = 3.0
# A pause of the client's loop counts as one (`LatencyAIMD._pause_excused`) only when it is
# this many times longer than the loop's steady lag and than the window before's longest pause.
_PAUSE_OUTLIER = 4.0


class LatencyAIMD(BoundedPolicy):
    """Find the knee: grow while latency stays at its baseline, cut when queueing or refusals show.

    Two congestion signals, one controller:

    - **Overload** (429, 503, timeouts): a window with fresh overload above
      ``overload_threshold`` multiplies the limit by ``backoff_ratio``
      (always at least −1). Stale overloads (work started before the last
      decrease) hold. Plain errors never move the limit.
    - **Queueing latency**: the window's median latency over the
      upstream's no-load baseline (`LatencyBaseline`). Above ``1 +
      tolerance`` (plus twice the median's own standard error, so noise is
      not taken for queueing) the limit drops to ``limit / ratio``, Little's
      law's estimate of the knee: at a fixed throughput, concurrency is
      proportional to latency. The cut is at most ``max_decrease`` per window,
      and the window right after a cut is not cut again (its samples started
      before it: one congestion event, one decrease).

    Growth happens only while the limit is the bottleneck (demand-aware).
    A policy started low is in *slow start* until its first decrease, as TCP
    is: each limit-bound window whose latency is not rising grows the limit by
    ``max_step_ratio`` of itself (×1.5 by default) but never past 1.5 × what
    was in flight, and a rising one by one permit: from 4, a knee of 32 is
    reached in under half the time. After that, growth is one permit a window; after
    ``probe_interval_windows`` clean windows in a row the step doubles with
    each further clean window (up to ``max_step_ratio`` of the limit), so a
    grown capacity is found in a few windows, and it falls back to 1 after any
    decrease or while latency is rising. The limit at which congestion last showed is
    remembered as a ceiling: the limit climbs to just below it and waits
    ``probe_interval_windows`` clean windows before probing one past it,
    which keeps the refusals of a hard wall rare and the limit steady at a
    knee. A probe refused at the same limit as the one before doubles that
    wait, since each refused probe costs refusals, up to one
    ``probe_interval_windows`` per three permits of the wall and at most
    ``max_probe_backoff`` of them: a governor with fewer permits gains more
    from a probe and probes sooner, which is also how governors sharing a
    wall reach fair shares where a cut of ×``backoff_ratio`` is less than one
    permit (the cut stays multiplicative above that). A probe that stays clean forgets the
    ceiling and brings the first pace back, so a capacity that grows is
    followed; so does a refusal at another limit (the wall moved). A
    refusal above the last limit that was not refused (a growth step into
    the wall) cuts back to that limit when ``backoff_ratio`` would not, and
    counts as a refused probe of every limit the step went past: the next
    refusal at one of them is the same wall again.

    Three rules keep the real world's noise from reading as queueing: a deep
    latency cut stops at the *good floor*, the highest limit with a clean,
    limit-bound window lately, unless queueing lasts, and one whose window
    follows a window without queueing (a spike, not a queue that grew) stops at
    the *delivered floor* too, the most concurrency the upstream delivered in
    the limit-bound windows of the last ``delivered_floor_windows`` windows,
    measured as BBR measures it (calls answered times the no-load latency, over
    the window's length): a heavy tail's noisy medians seldom leave a window
    clean enough to set the good floor by; the client loop's own
    lag (`Window.loop_lag_s`, `Window.loop_pause_s`) is taken off the median,
    a rise that only the client's steady backlog explains holds the limit, and
    so does one that a single pause of the client's whole loop explains
    (``pause_allowance`` of `Window.loop_pause_longest_s`, when that pause
    stands out from the loop's steady lag and from the window before: a garbage
    collection, CPU stolen from the client; a pause delays every call sent or
    answered during it, so the median can rise by most of it); calls that carry
    a size are judged against calls of about that size (`LatencyBaseline`).

    A latency rise that goodput pays for is not queueing. By Little's law a
    limit-bound window delivers ``limit / ratio`` requests' worth of work at
    the no-load latency. Just above the good floor (within ``queue_allowance
    × √floor``), a rise whose delivered concurrency is the best of the last
    few limit-bound windows, and whose estimated queue
    ``limit × (1 − 1 / ratio)`` stays within ``queue_allowance × √limit``
    requests, holds the limit instead of cutting it: on real servers the best
    goodput lies there, where the client's own time per call leaves a
    server's workers idle unless a small queue waits for them. A rise that
    costs goodput, or one past the allowance, is cut as above.

    A limit whose goodput is below a lower limit's is not kept. Over the last
    ``goodput_memory_windows`` limit-bound windows, goodput (successful calls
    per second, each counted by its size when calls carry one) is fitted
    against the limit; when it falls significantly as
    the limit grows (a slope over 2.5 standard errors below zero, and a 10 %
    larger limit losing over 2 % of goodput), the limit goes back to one below
    the limit whose windows had the best goodput, and does not grow while the
    fit still shows the fall. This finds a cliff that latency does not show:
    a client whose own CPU per call grows with its connections (an HTTP pool
    that walks every connection per call) is its own bottleneck, its loop lag
    explains the latency rise (so the loop-lag rule forgives it), and past
    the best limit every permit more costs goodput. Once the fit no longer shows
    the fall (every window since ran at or below the best limit), growth climbs
    back to that limit and waits ``fall_wait_windows`` limit-bound windows there
    before each permit past it: without that wait, doubled steps ran deep into
    the fall again within a second, and a client whose collapse outlasts its
    cause stayed collapsed after each cut. The fall is forgotten when goodput
    past it grows about in proportion to the limit (a fit of the windows at or
    past it with an elasticity of 0.8 or more: the upstream grew), and four
    times ``goodput_memory_windows`` windows after it was last seen.

    With ``step_paid_ratio`` (off by default), a growth step of several permits that
    goodput does not pay for is undone: when the first limit-bound window after it
    does not deliver ``step_paid_ratio`` of the step's relative growth more work per
    second than the window before it, and the next delivers less than before the
    step, the limit goes back, slow start ends, and later steps stop one below the
    unpaid limit. A client whose CPU per response grows with its idle connections
    collapses past some pool size and stays collapsed a little below it; a step into
    that collapse shows no latency rise in its first window, only goodput that
    stopped rising.

    Without a baseline, a policy started above twice ``probe_limit`` (a high
    start, a learned limit) first pins the limit at ``probe_limit`` to measure the no-load
    latency, as Envoy's adaptive concurrency filter does, then return. A climb from a low
    start measures it on the way: from each window that holds enough calls
    (`LatencyBaseline`), or, on a slow upstream where none does before twice
    ``probe_limit``, from the climb's windows taken together when they hold
    ``probe_samples`` calls; only a climb with fewer drops back to measure. When the
    first window that measures it reads higher than the climb's smaller windows before
    it, pooled, by more than twice their combined noise, those count too: a governor
    that joins an upstream others already queue at sees no queue only in its first,
    smallest windows.

    After `restore_baseline` and a `reset` to a limit above ``initial_limit`` (the
    learned state of an earlier run), the limit is held, judged on overload only, until
    a window has answered a limit's worth of calls: the first call of each permit opened
    a connection, all at once, and on real servers the windows that answered them read
    1.2-1.5× a baseline the windows after them confirmed (the restored baseline was
    taken for stale and measured again at ``probe_limit``, which cost the second run
    more than the first).

    Args:
        min_limit: The floor, at least 1.
        max_limit: The ceiling.
        initial_limit: Where to start; defaults to ``min(max(min_limit, 4), max_limit)``.
        tolerance: How much the median latency may exceed the baseline
            before it counts as queueing, > 0.
        backoff_ratio: Multiplier on overload, in [0.5, 1).
        max_decrease: The deepest cut one window may make, as a fraction of
            the limit, in (0, 1).
        overload_threshold: Fraction of a window's samples that must be
            fresh overloads to back off, in [0, 1); 0 means any overload.
        probe_interval_windows: Clean windows spent just below the ceiling
            before probing past it, >= 1.
        max_step_ratio: The largest growth step, as a fraction of the limit, > 0.
        probe_limit: The limit at which the no-load latency is measured.
        probe_samples: Successful samples the baseline measurement needs.
        baseline: How the no-load latency is estimated; a default `LatencyBaseline`.
        floor_probe_windows: Windows at the floor before an upward probe, >= 1.
        min_latency_samples: Successful samples a window needs before its
            latency can cut the limit, >= 2.
        good_memory_windows: How many windows back the good floor looks for a
            clean, limit-bound window, >= 0 (0: no good floor).
        good_forget_windows: Within how many windows of a floored cut lasting
            queueing makes the floor forgotten, >= 1.
        good_min_windows: Clean windows the good floor needs at its limit, >= 1.
        lag_allowance: How many times the client loop's lag is taken off the
            median latency before judging queueing, >= 0 (0: the lag is ignored).
        good_floor_ratio: Latency cuts only over this ratio stop at the good
            floor, >= 1; gentler ones (a knee) cut as Little's law says.
        queue_allowance: How many requests, times the square root of the limit,
            may queue at the upstream while goodput holds, >= 0 (0: every
            rise past the tolerance is queueing).
        max_probe_backoff: The longest wait before probing past a ceiling that
            refused the probes before, as a multiple of
            ``probe_interval_windows``, >= 1 (1: a fixed pace). The wait doubles
            after each probe refused at the same limit, up to one interval per
            three permits of the wall (so at most this many intervals from a
            wall of 3 × ``max_probe_backoff`` permits up).
        goodput_memory_windows: How many windows back goodput is fitted against
            the limit, >= 0 (0: the goodput rule is off).
        slow_start: Grow by ``max_step_ratio`` of the limit per clean window
            until the first decrease. `reset` to a limit above
            ``initial_limit`` (a learned one) starts without it.
        step_paid_ratio: The share of a step's relative growth that goodput must
            show in the first limit-bound window after a step of several permits,
            in [0, 1]; 0 (the default) leaves steps unjudged. 0.25 holds a client
            that collapses past some pool size (docs/control.md, "A client that
            collapses").
        pause_allowance: How much of the longest pause of the client's loop in a
            window (`Window.loop_pause_longest_s`) may explain its latency rise, as
            a fraction of that pause, >= 0 (0: only the pauses' mean delay is taken
            off). A rise it explains holds the limit, with no growth; one past it
            cuts as before, and overload always does. The pause counts only when it
            is over four times both the loop's steady lag and the longest pause of
            the window before (docs/control.md, "One pause of the client's loop").
        fall_wait_windows: How many limit-bound windows growth waits at the limit
            past which goodput last fell before each permit past it, >= 0 (0: no
            wait; growth past it is paced only while the fit still shows the fall).
        delivered_floor_windows: How many windows back the delivered floor reads the
            limit-bound ones, >= 0 (0: no delivered floor). It applies to a
            latency cut over ``good_floor_ratio`` whose window follows one without
            queueing, and to calls that carry no size.
    """

    name = "latency-aimd"

    # Slots: past 30 attributes an instance's dict stops sharing its keys with the class's
    # other instances and costs ~1.5 KB per policy. Attributes not named here still work
    # (in the instance dict `BoundedPolicy` gives).
    __slots__ = (
        "_backoff",
        "_baseline",
        "_ceiling",
        "_clean",
        "_clean_limit",
        "_climb",
        "_cooldown",
        "_delivered",
        "_delivered_floor",
        "_delivered_measured",
        "_fall_wait",
        "_fell_at",
        "_fell_limit",
        "_fell_waited",
        "_floor_probe",
        "_floored_at",
        "_good",
        "_good_floor_ratio",
        "_good_forget",
        "_good_memory",
        "_good_min",
        "_goodput_memory",
        "_lag_allowance",
        "_max_decrease",
        "_max_probe_backoff",
        "_max_step_ratio",
        "_min_latency_samples",
        "_pause",
        "_pause_allowance",
        "_probe_interval",
        "_probe_limit",
        "_probe_medians",
        "_probe_ok",
        "_probe_samples",
        "_probed",
        "_probed_top",
        "_queue_allowance",
        "_quiet",
        "_rates",
        "_restored",
        "_resume",
        "_slow_start",
        "_start_limit",
        "_starting",
        "_step",
        "_step_paid",
        "_stepped",
        "_streak",
        "_threshold",
        "_tolerance",
        "_trial_cut",
        "_unpaid",
        "_wait",
        "_warming",
        "_windows",
        "_windows_at_floor",
    )

    def __init__(
        self,
        *,
        min_limit: int = 1,
        max_limit: int = 1000,
        initial_limit: float | None = None,
        tolerance: float = 0.1,
        backoff_ratio: float = 0.9,
        max_decrease: float = 0.5,
        overload_threshold: float = 0.0,
        probe_interval_windows: int = 5,
        max_step_ratio: float = 0.5,
        probe_limit: int = 3,
        probe_samples: int = 20,
        baseline: LatencyBaseline | None = None,
        floor_probe_windows: int = 5,
        min_latency_samples: int = 5,
        good_memory_windows: int = 30,
        good_forget_windows: int = 5,
        good_min_windows: int = 1,
        lag_allowance: float = 2.0,
        good_floor_ratio: float = 1.5,
        queue_allowance: float = 0.75,
        max_probe_backoff: int = 3,
        goodput_memory_windows: int = 30,
        slow_start: bool = True,
        step_paid_ratio: float = 0.0,
        pause_allowance: float = 0.75,
        fall_wait_windows: int = 16,
        delivered_floor_windows: int = 3,
    ) -> None:
        if initial_limit is None and isinstance(min_limit, int) and isinstance(max_limit, int):
            initial_limit = min(max(min_limit, 4), max_limit)
        super().__init__(min_limit=min_limit, max_limit=max_limit, initial_limit=initial_limit)
        self._tolerance = check_float("tolerance", tolerance, low=0.0, low_open=True)
        self._backoff = check_float("backoff_ratio", backoff_ratio, low=0.5, high=1.0, high_open=True)
        self._max_decrease = check_float(
            "max_decrease", max_decrease, low=0.0, high=1.0, low_open=True, high_open=True
        )
        self._threshold = check_float(
            "overload_threshold", overload_threshold, low=0.0, high=1.0, high_open=True
        )
        self._probe_interval = check_int("probe_interval_windows", probe_interval_windows, low=1)
        self._max_step_ratio = check_float("max_step_ratio", max_step_ratio, low=0.0, low_open=True)
        self._probe_limit = check_int("probe_limit", probe_limit, low=1)
        self._probe_samples = check_int("probe_samples", probe_samples, low=1)
        if baseline is not None and not isinstance(baseline, LatencyBaseline):
            raise TypeError(f"baseline must be a LatencyBaseline, got {baseline!r}")
        self._baseline = baseline or LatencyBaseline()
        self._floor_probe = check_int("floor_probe_windows", floor_probe_windows, low=1)
        self._min_latency_samples = check_int("min_latency_samples", min_latency_samples, low=2)
        self._good_memory = check_int("good_memory_windows", good_memory_windows, low=0)
        self._good_forget = check_int("good_forget_windows", good_forget_windows, low=1)
        self._good_min = check_int("good_min_windows", good_min_windows, low=1)
        self._lag_allowance = check_float("lag_allowance", lag_allowance, low=0.0)
        self._good_floor_ratio = check_float("good_floor_ratio", good_floor_ratio, low=1.0)
        self._queue_allowance = check_float("queue_allowance", queue_allowance, low=0.0)
        # (window, limit / ratio) of the latest limit-bound windows: their delivered concurrency
        # (None until the first: most governors never have a limit-bound window)
        self._delivered: list[tuple[int, float]] | None = None
        self._max_probe_backoff = check_int("max_probe_backoff", max_probe_backoff, low=1)
        self._goodput_memory = check_int("goodput_memory_windows", goodput_memory_windows, low=0)
        self._slow_start = check_bool("slow_start", slow_start)
        self._step_paid = check_float("step_paid_ratio", step_paid_ratio, low=0.0, high=1.0)
        self._pause_allowance = check_float("pause_allowance", pause_allowance, low=0.0)
        self._fall_wait = check_int("fall_wait_windows", fall_wait_windows, low=0)
        self._delivered_floor = check_int("delivered_floor_windows", delivered_floor_windows, low=0)
        # (window, concurrency delivered) of the latest limit-bound windows of plain calls,
        # measured: calls answered x the no-load latency / the window's length.
        self._delivered_measured: list[tuple[int, float]] | None = None
        # The limit of the best goodput the last time goodput fell past it, and when (a window
        # number); growth waits there (`fall_wait_windows`). None: no fall remembered.
        self._fell_limit: float | None = None
        self._fell_at = 0
        self._fell_waited = 0  # limit-bound windows waited at or past it since the last permit
        self._pause = 0.0  # the longest pause of the client's loop in the window before
        # (limit before, limit after, goodput before) of the last growth step of several permits
        # and how many windows after it have not paid for it yet
        self._stepped: tuple[float, float, float, int] | None = None
        # (window, limit) of the last step that goodput did not pay for: steps stop below it
        self._unpaid: tuple[int, float] | None = None
        self._starting = self._slow_start  # in slow start: no decrease yet
        self._start_limit = self._limit
        # (window, gate limit, goodput per second) of the latest limit-bound windows, flat in
        # unboxed doubles (30 tuples of boxed numbers were ~4 KB of every busy policy); made
        # at the first such window.
        self._rates: array[float] | None = None
        self._windows = 0  # windows seen (the clock of the good-floor memory)
        # (window, limit) of clean limit-bound windows, flat in unboxed doubles as `_rates`.
        self._good: array[float] | None = None
        self._floored_at: int | None = None  # window of the last cut the good floor stopped
        self._streak = 0  # consecutive windows with queueing latency
        self._step = 1.0
        self._ceiling: float | None = None
        self._quiet = 0  # windows since the last decrease or probe
        self._wait = self._probe_interval  # clean windows below the ceiling before the next probe
        self._probed: float | None = None  # the ceiling the last probe went past, until it runs clean
        # With `_probed`, the limits a refused step went past: a refusal at any of them is the
        # same wall again (a step of several permits probes them all at once).
        self._probed_top = 0.0
        self._clean_limit: float | None = None  # the gate's limit in the last limit-bound window unrefused
        self._clean = 0  # consecutive growing windows with latency at the baseline
        self._cooldown = False  # the window after a cut is not cut again for latency
        self._windows_at_floor = 0
        self._resume: float | None = None  # the limit to return to after measuring the baseline
        self._probe_ok = 0
        # (calls, median) of each window measured at the probe limit, while measuring.
        self._probe_medians: list[tuple[int, float]] | None = None
        # Limit-bound windows of a climb from the probe limit up while no baseline is known
        # (None when there are none): an unsized one as (calls, median, cv), which is all the
        # baseline reads of it.
        self._climb: list[Window | tuple[int, float, float]] | None = None
        self._restored = False  # the baseline came from learned state and no window has confirmed it
        self._trial_cut: float | None = None  # the limit before a cut made while it was on trial
        # Calls still to be answered at a restored limit before a window is judged (`reset`).
        self._warming = 0.0

    @property
    def baseline_s(self) -> float | None:
        """The estimated no-load latency, once measured."""
        return self._baseline.value

    @property
    def good_floor(self) -> float | None:
        """The highest limit with a clean, limit-bound window lately: where latency cuts stop."""
        if not self._good:
            return None
        if self._good_min == 1:
            return max(self._good[1::2])
        limits = sorted(self._good[1::2], reverse=True)
        return limits[self._good_min - 1] if len(limits) >= self._good_min else None

    @property
    def in_slow_start(self) -> bool:
        """Whether the policy still grows by ``max_step_ratio`` per clean window (no decrease yet)."""
        return self._starting

    @property
    def ceiling(self) -> float | None:
        """The limit at which congestion last showed, while remembered."""
        return self._ceiling

    def update(self, window: Window) -> Adjustment:
        """Measure the baseline if needed; else cut on overload or queueing, grow while limit-bound."""
        if (
            self._resume is None
            and not self._baseline.known
            and self._limit > 2 * self._probe_limit
            and not self._measured_on_the_climb(window)
        ):
            # A high start (a learned limit), or a climb too short to measure on: measure
            # the no-load latency at the probe limit first.
            self._resume = self._limit
            self._probe_ok = 0
            self._probe_medians = None
            self._limit = self._clamp(self._probe_limit)
            return Adjustment(self._limit, "no latency baseline: measure it at the probe limit")
        if self._resume is not None:
            return self._measure(window)

        limit = self._limit
        self._windows += 1
        _forget(self._good, 2, self._windows - self._good_memory)
        while self._delivered and self._delivered[0][0] <= self._windows - self._good_memory:
            del self._delivered[0]
        _forget(self._rates, 3, self._windows - self._goodput_memory)
        if self._unpaid is not None and self._unpaid[0] <= self._windows - self._good_memory:
            self._unpaid = None
        if window.count and window.overload / window.count > self._threshold:
            return self._cut(
                limit * self._backoff,
                window,
                f"overload {window.overload}/{window.count}: x{self._backoff:g}",
                ceiling=True,
            )
        if window.stale_overload:
            self._cooldown = False
            return self._hold("overload from before the last decrease")
        if self._warming > 0:
            # At a learned limit, the first call of each permit opened a connection, all at
            # once (handshakes, a server accepting them in a burst), and the windows that
            # answer them read 1.2-1.5x a baseline the windows after them confirmed on real
            # servers. Neither a cut nor a stale baseline, nor goodput: the window after the
            # one in which a limit's worth of calls has been answered judges.
            self._warming -= window.count
            return self._hold("warm-up at a learned limit: the first calls opened the connections")

        ratio = self._baseline.ratio(window)
        # Calls that carry a size are judged against the no-load latency at their size.
        at = f" at size {window.size_mean:.4g}" if window.bands else ""
        lagged = ""
        raw = ratio
        pause = window.loop_pause_s * self._lag_allowance
        steady = window.loop_lag_s * self._lag_allowance
        busy_ratio = paused_ratio = ratio
        before, self._pause = self._pause, window.loop_pause_longest_s
        if (pause or steady) and ratio > 1.0 and window.latency_p50_s > 0:
            # The client's own loop delayed every response by about its lag: that part of
            # the rise is not the upstream's queue. A rise several times the lag still
            # counts; overload always does.
            p50 = window.latency_p50_s
            busy_ratio = max(1.0, ratio * (1.0 - min(1.0, pause / p50)))
            longest = self._pause_excused(window, before)
            paused_ratio = max(1.0, ratio * (1.0 - min(1.0, (max(pause, longest) + steady) / p50)))
            ratio = max(1.0, ratio * (1.0 - min(1.0, (pause + steady) / p50)))
            lag_ms = (window.loop_lag_s + window.loop_pause_s) * 1000
            lagged = f" (less the client's loop lag {lag_ms:.1f} ms)"
        noise = 2.0 * median_noise(window) if window.ok >= self._min_latency_samples else math.inf
        known = self._baseline.known
        self._baseline.observe(window)
        if self._baseline.known:
            climb, self._climb = self._climb, None
            if climb and not known:
                self._fold_climb(climb, window)
        elif self._on_the_climb(window):
            climb = self._climb
            if climb is None:
                climb = self._climb = []
            climb.append(_climbed(window))
            del climb[: -(self._probe_limit + 2)]
        cooldown, self._cooldown = self._cooldown, False
        queueing = ratio > 1.0 + self._tolerance + noise
        # A rise that one pause of the client's whole loop explains is no queueing, but no
        # room to grow either (held below, after the rules that do not read latency).
        paused = queueing and paused_ratio <= 1.0 + self._tolerance + noise
        if paused:
            queueing = False
        if self._restored and math.isfinite(noise) and not paused and not cooldown:
            if not queueing:
                self._restored = False  # confirmed
                self._trial_cut = None
            elif self._trial_cut is None:
                # A learned limit can lie past the knee (a run ends anywhere on its
                # sawtooth): cut as any window would, and judge the baseline again there.
                self._trial_cut = self._limit
            else:
                # Queueing again after that cut: the baseline is stale (a slower upstream).
                self._restored = False
                resume, self._trial_cut = self._trial_cut, None
                return self._remeasure(f"learned latency baseline reads {ratio:.2f}x{at} again", resume)
        best: float | None = None
        if self._goodput_memory and window.limit_bound and not cooldown and math.isfinite(noise):
            # A limit whose goodput is below a lower limit's is not kept, whatever latency
            # says (it cannot see a client whose own CPU per call grows with the limit).
            # Work per second: calls that carry a size (batches) count by their size, so a
            # chunker that grows its batches does not read as goodput falling.
            rates = self._rates
            if rates is None:
                rates = self._rates = array("d")
            rates.extend((self._windows, float(window.limit), window.throughput * window.size_mean))
            best = self._best_before_fall()
            if best is not None:
                self._fell_limit, self._fell_at = best, self._windows
            if best is not None and limit > best:
                # One below the best, so that the climb back samples both sides of it.
                return self._cut(
                    max(best - 1.0, limit * (1.0 - self._max_decrease)),
                    window,
                    f"goodput falls as the limit grows: back below {best:g}, where it was best",
                    ceiling=False,
                )
        unpaid = self._step_unpaid(window, noise)
        if unpaid is not None and not (queueing and not cooldown):
            return unpaid
        paid = queueing and not cooldown and self._paid_for(window, ratio)
        if window.limit_bound and math.isfinite(noise):
            if self._delivered is None:
                self._delivered = []
            self._delivered.append((self._windows, window.limit / ratio))
            if len(self._delivered) > _DELIVERED_WINDOWS:
                del self._delivered[0]
            baseline_s = self._baseline.value
            if self._delivered_floor and not window.bands and baseline_s is not None:
                measured = self._delivered_measured
                if measured is None:
                    measured = self._delivered_measured = []
                measured.append((self._windows, window.throughput * baseline_s))
                while measured[0][0] <= self._windows - self._delivered_floor:
                    del measured[0]
        if paid:
            # Not congestion, but not room to grow either: hold where goodput is.
            self._streak = 0
            self._clean = 0
            self._step = 1.0
            return self._hold(f"latency {ratio:.2f}x baseline{at}{lagged}, paid for by goodput")
        self._streak = self._streak + 1 if queueing else 0
        if queueing and not cooldown:
            target = max(limit / ratio, limit * (1.0 - self._max_decrease))
            why = f"latency p50 {ratio:.2f}x baseline{at}{lagged} > {1 + self._tolerance + noise:.2f}"
            floored = self._floored_at
            if floored is not None and self._windows - floored <= self._good_forget and self._streak >= 2:
                # Queueing stayed on after a floored cut (this window and the one before):
                # the floor is stale (the capacity fell), so forget it and let Little's law
                # cut. A stall that merely comes again, after a clean window, is floored again.
                self._good = None
                self._floored_at = None
                why += ", again soon after a floored cut: floor forgotten"
            elif ratio > self._good_floor_ratio:
                good = self.good_floor
                if good is not None and target < good:
                    # One noisy window (a stall, a pause of the client) does not take the
                    # limit below where it recently ran clean while limit-bound.
                    target = min(good, limit - 1.0)
                    self._floored_at = self._windows
                    why += f": cut to the good floor {good:g}"
                delivered = self._delivered_lately()
                if delivered is not None and self._streak == 1 and target < delivered:
                    # A spike after a window without queueing: not below what the upstream
                    # delivered just before it (and in it). A queue that grew over several
                    # windows (one more governor at a shared upstream, whose incumbents
                    # delivered more than their share until then) cuts as Little's law
                    # says. The depth is read less the client's own loop lag, as for the
                    # good floor: a client collapsing under its own load lags, and its
                    # spikes read gentler here (floored, it stayed in its collapse longer).
                    target = min(delivered, limit - 1.0)
                    why += f": cut to the concurrency delivered lately {delivered:.1f}"
            return self._cut(target, window, why, ceiling=False)
        if queueing:
            return self._hold(f"latency {ratio:.2f}x baseline, from work started before the last cut")
        if best is not None:
            # At or below the best goodput's limit while the fall is remembered: no growth.
            self._clean = 0
            self._step = 1.0
            return self._hold(f"goodput falls past {best:g}: hold")
        if paused:
            self._clean = 0
            self._step = 1.0
            one = f"a {window.loop_pause_longest_s * 1000:.0f} ms pause of the client's loop"
            return self._hold(f"latency {raw:.2f}x baseline{at}, explained by {one}")
        if busy_ratio > 1.0 + self._tolerance + noise:
            # The rise is the client's own steady backlog: no cut, but no growth either,
            # since more work in flight cannot help a client that is its own bottleneck.
            # (Pauses, its GC, are noise: they stop neither.)
            self._clean = 0
            self._step = 1.0
            return self._hold(f"latency {raw:.2f}x baseline{at}, explained by the client's busy loop")

        at_floor = limit <= self._min_limit
        self._windows_at_floor = self._windows_at_floor + 1 if at_floor else 0
        if not window.limit_bound:
            self._step = 1.0
            if at_floor and self._windows_at_floor >= self._floor_probe:
                self._windows_at_floor = 0
                return self._set(limit + 1.0, "probe up from the floor")
            return self._hold("not limit-bound")
        self._quiet += 1
        self._clean_limit = float(window.limit)
        if self._probed is not None and window.limit >= self._probed:
            if window.limit >= self._probed_top:
                # A whole limit-bound window at the probed limit without a refusal: the wall
                # has moved (or was a passing one), so the next ceiling is probed at the first pace.
                self._probed = None
                self._wait = self._probe_interval
            else:
                # Part of a refused step runs clean: the wall lies past this limit.
                self._probed = window.limit + 1.0
        rising = ratio > 1.0 + self._tolerance / 2
        # Only a window that is clean beyond its own noise counts: a lucky window above the
        # knee must not raise the floor.
        if self._good_memory and ratio + noise <= 1.0 + self._tolerance / 2:
            memory = self._good
            if memory is None:
                memory = self._good = array("d")
            memory.extend((self._windows, float(window.limit)))
        ceiling = self._ceiling
        if ceiling is not None and limit + 1.0 >= ceiling:
            # Only refusals set a ceiling: a hard wall gives no warning before it.
            if self._quiet < self._wait:
                new = max(limit, ceiling - 1.0)
                return self._set(new, f"near the ceiling {ceiling:g}: wait {self._quiet}/{self._wait}")
            self._quiet = 0
            self._ceiling = None  # the probe: if it stays clean, the ceiling is forgotten
            self._probed = self._probed_top = ceiling
            return self._set(limit + 1.0, f"probe past the ceiling {ceiling:g}")
        if rising:
            self._clean = 0
        else:
            self._clean += 1
        step = self._step
        starting = self._starting and self._baseline.known
        if starting:
            # Slow start: no congestion seen yet, so grow multiplicatively; a rising
            # latency (the knee is near) grows by one while it lasts. A rise the client's
            # own loop explains counts here: multiplying the work in flight is what
            # makes such a client its own bottleneck. Not before the baseline is
            # known: the climb measures it at low limits.
            near = raw > 1.0 + self._tolerance / 2
            step = 1.0 if near else max(1.0, limit * self._max_step_ratio)
            # Grown from what was in flight, not past it: a window limit-bound only in its
            # first part (callers queued before the last step) says little about the new limit.
            step = min(step, max(1.0, window.peak_inflight * (1.0 + self._max_step_ratio) - limit))
        elif rising:
            step = 1.0  # the step was chosen on the window before; this one says the knee is near
        if ceiling is not None:
            step = min(step, ceiling - 1.0 - limit)
        if self._unpaid is not None:
            # Past a step that goodput did not pay for, one permit at a time.
            step = min(step, max(1.0, self._unpaid[1] - 1.0 - limit))
        fell = self._fell_limit
        if fell is not None and self._windows - self._fell_at > _FELL_MEMORY * self._goodput_memory:
            self._fell_limit = fell = None  # long ago: the upstream may have changed
        if fell is not None and limit > fell and self._goodput_trend(fell, _ROOM_ELASTICITY) > 0:
            # Goodput past that limit grows about as the limit does (Little's law with no
            # queue: twice the calls in flight, twice the calls per second): the upstream
            # grew. Near a peak it grows by less, and the wait goes on.
            self._fell_limit = fell = None
        paced = ""
        if fell is not None and self._fall_wait and limit + step > fell:
            # Goodput fell past this limit lately, and the fit no longer shows it only
            # because every window since ran below it. Climb back to it, then wait
            # there before each permit past it, as below a wall's ceiling: past a cliff
            # that latency does not show, a doubled step runs deep into the fall (and a
            # client whose collapse outlasts its cause stays collapsed after the cut).
            self._step = 1.0
            if limit < fell:
                step = fell - limit
                paced = f" (goodput fell past {fell:g} lately: no further for now)"
            elif self._fell_waited < self._fall_wait:
                self._fell_waited += 1
                self._clean = 0  # a wait is no clean growth: no doubled step right after it
                return self._hold(
                    f"goodput fell past {fell:g} lately: wait {self._fell_waited}/{self._fall_wait}"
                )
            else:
                self._fell_waited = 0
                step = 1.0
                paced = f" (goodput fell past {fell:g} lately: one permit past it)"
        pending = ""
        if self._stepped is not None:
            # The last step is not paid for yet: one permit until the next window says.
            step = 1.0
            pending = f" (the step to {self._stepped[1]:g} not paid for yet)"
        elif step >= 2.0 and self._step_paid:
            self._stepped = (limit, limit + step, window.throughput * window.size_mean, 0)
        # Steps double only after a run of clean windows: that finds a grown capacity in a
        # few windows, while near a knee steps stay additive, which makes sharing fair
        # (Chiu-Jain: additive increase, multiplicative decrease).
        if self._clean >= self._probe_interval and not paced:
            self._step = min(step * 2.0, max(1.0, limit * self._max_step_ratio))
        else:
            self._step = 1.0
        why = f"latency {ratio:.2f}x baseline{at}" + (", rising" if rising else "")
        growth = f"limit-bound{', slow start' if starting else ''}, {why}: +{step:g}{pending}{paced}"
        return self._set(limit + step, growth)

    def _delivered_lately(self) -> float | None:
        """The most concurrency delivered in the limit-bound windows of the last few windows.

        BBR's estimate of what a path holds without a queue: the calls a window answered
        times the no-load latency, over the window's length, which is the concurrency the
        upstream delivered whatever the latency read. Windows older than the last
        ``delivered_floor_windows`` say little of now.
        """
        measured = self._delivered_measured
        if not measured or measured[-1][0] <= self._windows - self._delivered_floor:
            return None
        return max(d for at, d in measured if at > self._windows - self._delivered_floor)

    def _pause_excused(self, window: Window, before: float) -> float:
        """How much of a window's median latency its longest pause of the client's loop may explain.

        A pause of the whole loop delays every call whose sending (a caller woken just before
        it) or response falls in it, and the responses that piled up during it are handled
        after it: on real hosts the median rose by up to the whole pause, far more than the
        pauses' mean delay (`Window.loop_pause_s`) explains. ``pause_allowance`` of the pause
        is excused, not all of it: on the simulated shared host the client's loop pauses
        because the server's CPU work takes the core, which grows with the load, and
        excusing the whole pause held limits above the best there (docs/control.md). Only a
        pause that stands out counts: a busy loop runs every tick late (its steady lag has
        its own rule), and a loop starved in every window is starved by the load.
        """
        longest = window.loop_pause_longest_s
        if longest <= _PAUSE_OUTLIER * max(window.loop_lag_s, before):
            return 0.0
        return self._pause_allowance * longest

    def _on_the_climb(self, window: Window) -> bool:
        """Whether a window of a climb from a low start can help measure the baseline."""
        return (
            window.limit_bound
            and window.ok >= 2
            and self._probe_limit <= window.limit
            and window.peak_inflight <= 2 * self._probe_limit + 1
        )

    def _fold_climb(self, climb: list[Window | tuple[int, float, float]], window: Window) -> None:
        """Fold the climb's small windows into a baseline ``window`` just measured, if they read lower.

        A governor that joins an upstream others already queue at climbs from a few permits,
        and its first windows, too small to measure the baseline alone, are often the only
        ones without the others' queue in them (on a knee of 16 with a first governor near
        it: 59-60 ms at 4 and 5 permits, 75 ms at the 6 of the first window large enough).
        A baseline measured from that window alone reads the others' queue as no load, so
        the same latency is 0.9x to the newcomer and 1.2x to the others, which give way
        window after window. Pooled, the climb's calls count when their median is lower
        than the window's by more than twice the two medians' combined noise; within
        noise (a climb on an idle upstream) the baseline is the window's alone, as before.
        Calls that carry a size are judged per size band (`LatencyBaseline`) and not pooled.
        """
        if window.bands:
            return
        entries = [c for c in climb if isinstance(c, tuple)]
        if sum(n for n, _, _ in entries) < 2:
            return
        calls, median, cv = pooled_median(entries)
        noise = math.hypot(1.25 * cv / math.sqrt(calls), median_noise(window))
        if median * (1.0 + 2.0 * noise) < window.latency_p50_s:
            self._baseline.observe_median(calls, median, cv)

    def _measured_on_the_climb(self, window: Window) -> bool:
        """Measure the baseline from the climb's windows, if they hold as many calls as a probe needs.

        On a slow upstream a climb from a low start may pass twice the probe limit before any
        window holds enough calls to measure the no-load latency (`LatencyBaseline`). Its
        windows from the probe limit up, taken together, measure it as well as the probe
        limit would, without the drop back there. A climb that holds fewer calls (steps that
        double, windows that are few) is measured at the probe limit as before.
        """
        climb = self._climb or []
        self._climb = None
        calls = sum(w[0] if isinstance(w, tuple) else w.ok for w in climb)
        if self._on_the_climb(window):
            calls += window.ok
            if window.ok < self._baseline.min_samples:
                climb.append(_climbed(window))  # a larger one is folded in by `update` as usual
        enough = calls >= self._probe_samples
        if enough:
            baseline = self._baseline
            for climbed in climb:
                if isinstance(climbed, tuple):
                    baseline.observe_median(*climbed)
                else:
                    baseline.observe(climbed, min_samples=2)
        return enough

    def _step_unpaid(self, window: Window, noise: float) -> Adjustment | None:
        """Go back from a growth step of several permits that goodput did not pay for.

        A client whose own CPU per response grows with its connections (an HTTP pool that
        walks every connection on every response) collapses past some pool size, and stays
        collapsed at that limit: a step into the collapse must not be kept, nor the next
        cut left inside it. A step of several permits (slow start, or doubled steps) is paid
        for when the first limit-bound window at the new limit delivers at least
        ``step_paid_ratio`` of the step's relative growth more work per second than the
        window before it; if not, growth is one permit for one more window, and if that one
        delivers less than before the step (the step cost goodput), the limit goes back to
        where it was, slow start ends, and later steps stop one below the unpaid limit
        (growth past it is one permit a window). A step onto a plateau costs nothing and
        stays.
        """
        stepped, self._stepped = self._stepped, None
        if stepped is None or not window.limit_bound or not math.isfinite(noise):
            return None
        before, after, rate, strikes = stepped
        if window.limit <= before:
            return None
        now = window.throughput * window.size_mean
        wanted = rate * (1.0 + self._step_paid * (after / before - 1.0))
        if now >= wanted:
            return None
        if not strikes:
            # One window's goodput is noisy (a stall, a heavy tail): the next one confirms, and
            # meanwhile growth is one permit (`update` reads the strike).
            self._stepped = (before, after, rate, 1)
            return None
        if now >= rate:
            # Goodput no lower than before the step (a plateau: a saturated CPU, a FIFO
            # backlog, or a rise slower than the step): the limit costs nothing; it stays.
            return None
        self._unpaid = (self._windows, after)
        return self._cut(
            before,
            window,
            f"step to {after:g} not paid for: {now:.4g}/s against {rate:.4g}/s at {before:g}: back to it",
            ceiling=False,
        )

    def _allowance(self, limit: float) -> float:
        """How many requests may queue at the upstream while goodput holds: ~√limit."""
        return self._queue_allowance * math.sqrt(limit)

    def _paid_for(self, window: Window, ratio: float) -> bool:
        """Whether a latency rise is work in flight that the upstream turns into goodput.

        Only just above the good floor, so that the limit stays within a small queue of
        where latency was clean: governors sharing an upstream each see their own goodput
        rise as they grow (at the others' expense), and past that zone every rise is cut
        multiplicatively, which keeps sharing fair (Chiu-Jain).
        """
        good = self.good_floor
        limit = float(window.limit)
        if (
            not self._queue_allowance
            or not window.limit_bound
            or good is None
            or limit > good + self._allowance(good)
            or self._delivered is None
            or len(self._delivered) < _DELIVERED_WINDOWS
        ):
            return False
        if limit / ratio < max(d for _, d in self._delivered):
            return False  # less goodput than lately: congestion
        return limit * (1.0 - 1.0 / ratio) <= self._allowance(limit)

    def _goodput_trend(self, low: float = 0.0, material: float = _GOODPUT_ELASTICITY) -> int:
        """-1 when goodput falls as the limit grows lately, +1 when it rises, else 0.

        A least-squares slope of goodput (successful calls per second) on the gate's limit
        over the latest limit-bound windows (those at ``low`` or above) counts when it is
        more than 2.5 standard errors from zero (its own residuals say how noisy goodput
        is) and material: an elasticity (the relative change of goodput over the relative
        change of the limit) of at least ``material`` either way (0.2: a 10 % larger
        limit losing, or gaining, over 2 % of goodput).
        """
        rates = self._rates
        if rates is None:
            return 0
        # One pass of sums (this runs on every limit-bound window).
        n = 0
        sl = sx = sll = slx = sxx = 0.0
        for i in range(1, len(rates), 3):
            lim, x = rates[i], rates[i + 1]
            if lim < low:
                continue
            n += 1
            sl += lim
            sx += x
            sll += lim * lim
            slx += lim * x
            sxx += x * x
        if n < _GOODPUT_MIN_WINDOWS:
            return 0
        var_l = sll - sl * sl / n  # n times the variance of the limits
        mean_x = sx / n
        if var_l <= 1e-9 or mean_x <= 0:
            return 0
        cov = slx - sl * sx / n
        slope = cov / var_l
        if abs(slope * (sl / n) / mean_x) < material:
            return 0
        resid = max(0.0, (sxx - sx * sx / n) - slope * cov)
        if abs(slope) < _GOODPUT_T * math.sqrt(resid / (n - 2) / var_l):
            return 0
        return 1 if slope > 0 else -1

    def _best_before_fall(self) -> float | None:
        """The limit of the best goodput lately, when goodput falls as the limit grows; else None.

        The fall is `_goodput_trend`'s; the best limit is the one whose windows' mean
        goodput is highest.
        """
        rates = self._rates
        if rates is None or self._goodput_trend() >= 0:
            return None
        bins: dict[float, list[float]] = {}
        for i in range(1, len(rates), 3):
            bins.setdefault(rates[i], []).append(rates[i + 1])
        return max(bins, key=lambda lim: (sum(bins[lim]) / len(bins[lim]), -lim))

    def _longest_wait(self, wall: float) -> int:
        """The most clean windows spent below a wall that refused the last probe before probing it again.

        A refused probe costs a refusal to learn one permit, which is worth 1/limit of a
        governor's goodput: the wait grows with the wall, one ``probe_interval_windows`` per
        three permits, from one interval up to ``max_probe_backoff`` of them. At a wall
        several governors share this is also what lets them converge to fair shares. Below
        ten permits a cut of x0.9 is less than the one permit every refusal takes, so
        multiplicative decrease no longer separates large shares from small ones and every
        probe past a saturated wall is refused; a governor with fewer permits probes
        sooner, and takes the room a larger one leaves first.
        """
        intervals = min(float(self._max_probe_backoff), max(1.0, wall / _PERMITS_PER_PROBE_INTERVAL))
        return round(self._probe_interval * intervals)

    def _cut(self, target: float, window: Window, reason: str, *, ceiling: bool) -> Adjustment:
        limit = self._limit
        if ceiling:
            wall = float(window.limit)
            if self._probed is not None and self._probed <= wall <= self._probed_top:
                # The probe was refused at the same wall: probe it less often, since each
                # failed probe costs refusals. The cut stays multiplicative: several
                # governors sharing one wall only converge to fair shares that way
                # (Chiu-Jain), as the one holding the most is refused on its probes alone.
                self._wait = min(2 * self._wait, self._longest_wait(wall))
                reason += f"; the same wall again, next probe in {self._wait} windows"
            else:
                self._wait = self._probe_interval  # a new wall: probe it at the first pace
            self._probed = None
            self._ceiling = wall
            clean = self._clean_limit
            if clean is not None and clean < wall and clean < target:
                # A growth step ran into the wall: the permits it added are refused, and a cut
                # of x backoff_ratio can land above the wall still, costing a round of
                # refusals per cut; back to the last limit that was not refused, which is
                # deeper than x backoff_ratio, so sharing stays fair.
                target = clean
                reason += f", back to {clean:g} (the last limit not refused)"
                # The step probed every limit past the clean one, and the wall is one of
                # them: a refusal at any of them next (the limit climbs back from the clean
                # one) is the same wall again, not a new one probed at the first pace.
                self._probed, self._probed_top = clean + 1.0, wall
            # A refusal outranks the memory of clean windows: none above it is kept.
            new = min(target, limit - 1.0)
            good = self._good
            if good:
                kept = array("d")
                for at, clean_limit in zip(good[::2], good[1::2], strict=True):
                    if clean_limit < new:
                        kept.extend((at, clean_limit))
                self._good = kept
        self._clean = 0
        self._step = 1.0
        self._stepped = None
        self._quiet = 0
        self._cooldown = True
        self._windows_at_floor = 0
        self._starting = False
        return self._set(min(target, limit - 1.0), reason)

    def _measure(self, window: Window) -> Adjustment:
        """Pin the limit at the probe limit until the work from before has drained, then measure."""
        assert self._resume is not None
        if window.peak_inflight <= self._probe_limit and window.ok:
            self._probe_ok += window.ok
            if window.bands:
                self._baseline.observe(window)  # sized calls: measured per size band
            elif self._probe_medians is None:
                self._probe_medians = [(window.ok, window.latency_p50_s)]
            else:
                self._probe_medians.append((window.ok, window.latency_p50_s))
        if self._probe_ok < self._probe_samples:
            return self._hold(
                f"measuring the latency baseline: {self._probe_ok}/{self._probe_samples} samples"
            )
        resume, self._resume = self._resume, None
        self._step = 1.0
        measured, self._probe_medians = self._probe_medians, None
        if not measured:
            return self._set(resume, f"latency baseline measured per call size; back to {resume:g}")
        medians = sorted(m for _, m in measured)
        baseline = medians[len(medians) // 2]
        self._baseline.seed(baseline)
        return self._set(resume, f"latency baseline {baseline * 1000:.1f} ms measured; back to {resume:g}")

    def learned_baseline(self) -> tuple[tuple[float, float], ...]:
        """The no-load latency measured so far, per call size, as ``(size, latency_s)`` pairs.

        What a governor keeps in its learned state, so that the next run starts without
        measuring it again (`restore_baseline`).
        """
        return self._baseline.references()

    def restore_baseline(self, references: tuple[tuple[float, float], ...]) -> None:
        """Start from a baseline measured before (`learned_baseline`), e.g. in the last run.

        With a baseline, a high start (a learned limit) needs no measurement at the
        probe limit. The restored baseline is on trial: the first window that can judge
        it and reads queueing is cut on as any window is (a learned limit can lie past
        the knee), and if the first window after that cut reads queueing again, the
        baseline is taken for stale (the upstream got slower, or it is another one):
        measured again at the probe limit, the limit then returns to the learned one
        rather than being cut further. An empty ``references`` forgets the baseline.
        """
        self._baseline.restore(references)
        self._restored = bool(references)
        self._trial_cut = None

    def _remeasure(self, why: str, resume: float) -> Adjustment:
        """Forget a restored baseline that read queueing, and measure it again where the limit allows.

        ``resume`` is the limit to return to once measured (the learned one, before the cut
        that tried it).
        """
        self._baseline.restore(())
        if self._limit <= 2 * self._probe_limit:
            return self._hold(f"{why}: stale, measured again from this run's windows")
        self._resume = resume
        self._probe_ok = 0
        self._probe_medians = None
        self._limit = self._clamp(self._probe_limit)
        return Adjustment(self._limit, f"{why}: stale, measure it again at the probe limit")

    def reset(self, limit: float) -> None:
        """Start over from ``limit`` (e.g. a learned value); the latency baseline is kept.

        With a restored baseline (`restore_baseline`) and ``limit`` above ``initial_limit``,
        the windows until a limit's worth of calls is answered are a warm-up: only overload
        cuts.
        """
        # A start no higher than the policy's own is a cold start; a higher one (a learned
        # limit) already knows roughly where the knee is.
        self._starting = self._slow_start and limit <= self._start_limit
        # A learned limit with its learned baseline (`restore_baseline` first): the first
        # calls there open the connections, and read high against that baseline.
        super().reset(limit)
        self._warming = self._limit if self._restored and limit > self._start_limit else 0.0
        self._trial_cut = None
        self._step = 1.0
        self._ceiling = None
        self._quiet = 0
        self._wait = self._probe_interval
        self._probed = None
        self._clean_limit = None
        self._clean = 0
        self._cooldown = False
        self._windows_at_floor = 0
        self._resume = None
        self._climb = None
        self._good = None
        self._floored_at = None
        self._delivered = None
        self._delivered_measured = None
        self._rates = None
        self._stepped = None
        self._unpaid = None
        self._pause = 0.0
        self._fell_limit = None
        self._fell_waited = 0


def _forget(records: array[float] | None, stride: int, oldest: float) -> None:
    """Drop the leading flat records (``stride`` numbers each, a window number first) up to ``oldest``."""
    if not records:
        return
    end = 0
    while end < len(records) and records[end] <= oldest:
        end += stride
    if end:
        del records[:end]


def _climbed(window: Window) -> Window | tuple[int, float, float]:
    """What a climb keeps of a window: an unsized one's calls, median and cv (a whole one is ~0.5 kB)."""
    if window.bands:
        return window
    return (window.ok, window.latency_p50_s, window.latency_cv)
