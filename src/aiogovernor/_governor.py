"""The gate: a resizable semaphore that samples the work it admits and lets a policy resize it.

`Governor` is the gate (permits, FIFO waiters, the inlined fast path) and the
public face. It holds three helpers and calls them only on its slow path or
when a window is due, never on the uncontended fast path:

- a `Feedback` (windows -> policy -> decision -> history and listeners),
- a `TimeGates` (a pause and the optional rate ceiling, with their wake-ups),
- optionally a `Persistence` (learned state loaded once, saved after decisions).

One flag, ``_slow``, sends callers off the fast path; `_refresh_slow` is the
only place it is computed. The uncontended enter reads a single threshold,
``_fast_below`` (`_refresh_fast`), that folds it in with the waiters, the limit
and the window's peak in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import warnings
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextvars import ContextVar, Token, copy_context
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Literal, ParamSpec, Protocol, TypeVar

from . import _registry
from ._chunking import Chunker
from ._classify import Classifier, OverloadError, classify_with, retry_after_pause_s
from ._clock import Clock, loop_time
from ._env import getenv
from ._events import Decision, DecisionListener, WindowListener
from ._feedback import Feedback
from ._guard import guard_async
from ._lag import SharedLagProbe, shared_lag_probe
from ._names import check_environment, check_governor_name
from ._permit import PermitMarks
from ._persistence import Persistence, StateStore, bind_persistence
from ._record import LearnedState
from ._samples import Outcome, Window, WindowConfig
from ._time_gates import TimeGates
from ._validate import check_float, conforms
from .limits import LimitPolicy, default_policy, gate_limit

__all__ = ["Governor", "GovernorStats", "Permit", "check_gate_args"]

logger = logging.getLogger("aiogovernor")

P = ParamSpec("P")
R = TypeVar("R")

# The permit held by ``async with governor:`` in the current task. ``__aexit__``
# receives no handle on what ``__aenter__`` returned, and one governor guards
# many tasks at once, so each task keeps its own permit here; the token chain
# makes nesting (``async with a: async with b:``) restore the outer permit.
_current_permit: ContextVar[Permit | None] = ContextVar("aiogovernor_permit", default=None)
_get_permit, _set_permit, _reset_permit = _current_permit.get, _current_permit.set, _current_permit.reset


def _forget_permit(permit: Permit) -> None:
    """Take ``permit`` out of this context's variable, even from a copy of the context that set it."""
    token = permit._token
    if token is None or _get_permit() is not permit:
        return
    try:
        _reset_permit(token)
    except ValueError:  # the token belongs to the context that was copied
        old = token.old_value
        _set_permit(None if old is Token.MISSING else old)


_OK = Outcome.OK


def run_without_permit(fn: Callable[..., object], /, *args: object) -> None:
    """Call ``fn(*args)`` in a copy of the current context in which no permit is held.

    A task inherits its creator's context, so a task started while a permit is
    held (a map's worker starting more workers from inside its block) would
    find that permit as its own, and the nesting warning would fire when it
    queues. Starting tasks through this gives them a context without it.
    """
    context = copy_context()
    context.run(_set_permit, None)
    context.run(fn, *args)


def held_permit(governor: Governor) -> Permit | None:
    """The permit the current task holds on ``governor`` through ``async with``, if not given back yet.

    For a function that runs inside a block it did not open (a map's worker
    holds the permit, and hands the function none) yet must give that permit
    back before a wait: a retry's backoff holds no permit.
    """
    permit = _get_permit()
    if permit is None or permit._gate is not governor or permit._released:
        return None
    return permit


_DEFAULT_WINDOW = WindowConfig()  # frozen: one validated instance shared by every governor


class Permit(PermitMarks):
    """The right to run one unit of work now.

    Got from ``async with governor as permit:``, `Governor.acquire` or
    `Governor.try_acquire`. Set the outcome when the work's own result says
    more than "no exception" (an HTTP 429 read from a response, say);
    otherwise it is classified from the exception that ended the block, or
    ``ok``. The marks are shared with the thread gate's permit.
    """

    # Made only by the governor (`_grant_permit`, and written out in `Governor.__aenter__`),
    # field by field after ``Permit()``: with object's own ``__init__``, the call runs no
    # Python frame, and costs less than ``object.__new__(Permit)`` (whose wrapper packs its
    # arguments into tuples).
    __slots__ = ("_token",)
    __init__ = object.__init__
    _gate: Governor
    # The context variable's token for permits entered with `async with`; None for
    # permits from acquire() and try_acquire().
    _token: Token[Permit | None] | None

    @property
    def governor(self) -> Governor:
        """The governor that granted this permit."""
        return self._gate


def _grant_permit(governor: Governor, start: float, generation: int | None = None) -> Permit:
    """A permit of ``governor`` granted at ``start``, for a holder that releases it by hand.

    ``generation`` is the one it was handed over in (None: the governor's current one).
    """
    permit: Permit = Permit()
    permit._gate = governor
    permit._start = start
    permit._generation = governor._generation if generation is None else generation
    permit._outcome = None
    permit._released = False
    permit._size = 1.0
    permit._token = None
    return permit


@dataclass(frozen=True, slots=True, kw_only=True)
class GovernorStats:
    """A frozen snapshot of a governor, from `Governor.stats`.

    Attributes:
        name: The governor's name.
        environment: The environment it learns for.
        policy: The policy's name.
        limit: Permits the gate admits at once.
        policy_limit: The policy's own float limit.
        inflight: Permits held now.
        waiting: Callers queued for a permit.
        paused_for_s: How much longer new permits are paused (0 when not paused).
        counts: Finished units of work by outcome, since creation.
        latency_p50_s: Median latency of the last window, if one closed.
        latency_p90_s: 90th percentile latency of the last window.
        latency_p99_s: 99th percentile latency of the last window.
        last_window: The last closed window, if any.
        last_decision: The last decision, if any.
        decision_count: How many decisions were made.
        decisions_by_direction: Decisions by direction of the limit: ``up``,
            ``down`` and ``hold``, since creation.
        restored: Whether the governor started from learned state (loaded
            by `Governor.restore` or the first acquire, and recent enough to use).
        restored_saved_at: When that state had been saved, in wall-clock
            seconds since the epoch; None when nothing was restored.
    """

    name: str
    environment: str
    policy: str
    limit: int
    policy_limit: float
    inflight: int
    waiting: int
    paused_for_s: float
    counts: Mapping[str, int]
    latency_p50_s: float | None
    latency_p90_s: float | None
    latency_p99_s: float | None
    last_window: Window | None
    last_decision: Decision | None
    decision_count: int
    decisions_by_direction: Mapping[str, int]
    restored: bool = False
    restored_saved_at: float | None = None

    @property
    def decisions(self) -> int:
        """Deprecated: `decision_count` (``Governor.decisions`` is the decisions themselves)."""
        warnings.warn(
            "GovernorStats.decisions is deprecated; use GovernorStats.decision_count",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.decision_count


class _TrioRun:
    """Stands in for the loop while one trio run goes on: bound while that run is current."""

    __slots__ = ("_current", "_token")

    def __init__(self, token: object, current: Callable[[], object]) -> None:
        self._token = token
        self._current = current

    def is_running(self) -> bool:
        try:
            return self._current() is self._token
        except RuntimeError:  # no trio run at all now
            return False


class _Forever:
    """Stands in for the loop owning a clock that needs no re-binding."""

    @staticmethod
    def is_running() -> bool:
        return True


class _Stopped:
    """Stands in for the loop before the first clock read: forces a binding."""

    @staticmethod
    def is_running() -> bool:
        return False


_FOREVER = _Forever()
_STOPPED = _Stopped()


class _Queued(Protocol):
    """A queued caller, as the gate sees it: an asyncio future, or `_EventWaiter` on other loops."""

    def done(self) -> bool: ...

    def cancelled(self) -> bool: ...

    def set_result(self, result: int, /) -> None: ...


class _EventWaiter:
    """A queued caller on a loop other than asyncio's (trio): an anyio event behind a future's face."""

    __slots__ = ("event", "generation", "granted")

    def __init__(self, event: Any) -> None:
        self.event = event
        self.granted = False
        self.generation = 0

    def done(self) -> bool:
        return self.granted  # a cancelled one has left the queue already

    @staticmethod
    def cancelled() -> bool:
        return False

    def set_result(self, result: int, /) -> None:
        self.granted = True
        self.generation = result
        self.event.set()


def _fast_time(loop: asyncio.AbstractEventLoop) -> Clock:
    """The loop's time(), or the C function it merely wraps.

    asyncio's stock ``BaseEventLoop.time`` is ``return time.monotonic()``; calling
    the C function directly saves a Python frame twice per unit of work. A loop
    that overrides ``time`` (virtual time, looptime) keeps its own method.
    """
    bound = loop.time
    if getattr(bound, "__func__", None) is asyncio.BaseEventLoop.time:
        return time.monotonic
    return bound


# The keyword arguments `Governor._settings` keeps, in its order.
_SETTINGS = (
    "environment",
    "clock",
    "classify",
    "max_per_second",
    "burst",
    "window",
    "history_size",
    "max_pause_s",
    "store",
    "state_max_age_s",
    "save_interval_s",
    "state_history_size",
)


def _default_environment() -> str:
    return getenv("AIOGOVERNOR_ENV") or "default"


def check_gate_args(
    name: object,
    policy: LimitPolicy | None,
    environment: str | None,
    clock: object,
    classify: object,
    window: object,
) -> tuple[LimitPolicy, str]:
    """Validate a gate's constructor arguments (either gate's); return its policy and environment."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if policy is None:
        policy = default_policy()
    elif not conforms(policy, LimitPolicy):
        raise TypeError(f"policy must implement LimitPolicy (limit, update, reset, ...), got {policy!r}")
    if clock is not None and not callable(clock):
        raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
    if classify is not None and not callable(classify):
        raise TypeError(f"classify must be callable, got {classify!r}")
    if window is not None and not isinstance(window, WindowConfig):
        raise TypeError(f"window must be a WindowConfig, got {window!r}")
    check_governor_name(name)
    return policy, check_environment(_default_environment() if environment is None else environment)


class _Thinning:
    """Where a thinned window's groups stand (see ``_thin`` in `Governor.__init__`)."""

    __slots__ = ("kept_base", "stride")

    def __init__(self) -> None:
        self.stride = 1
        self.kept_base = 0


class Governor:
    """An async semaphore whose limit a feedback loop resizes while work runs.

    Three ways in:

    ```python
    async with gov:                      # take a permit, measure, release
        await call()

    async with gov as permit:            # ... and say how it went
        r = await client.get(url)
        if r.status_code == 429:
            permit.overload(retry_after_s=5)

    permit = await gov.acquire(timeout_s=1.0)   # manual form
    try:
        await call()
    finally:
        permit.release()
    ```

    Each finished unit of work becomes a sample; samples are aggregated into
    windows; each window goes to the policy, which returns the next limit.
    Raising the limit wakes waiters at once; lowering it never cancels work
    (new permits wait until ``inflight < limit``). Waiters are served in
    arrival order. No permit leaks on exceptions, timeouts or cancellation.

    Args:
        name: What this governor guards (an upstream, an endpoint); learned
            state is kept under this name.
        policy: The limit algorithm; None means `aiogovernor.limits.default_policy`.
        environment: Where the learned state belongs (production, staging, a
            host); defaults to ``$AIOGOVERNOR_ENV``, else ``"default"``.
        clock: Seconds as a float; defaults to the running event loop's time.
        classify: Maps the exception that ended a unit of work to an outcome;
            returning None defers to `default_classify`.
        max_per_second: An optional rate ceiling (GCRA) composed with the
            concurrency limit, for APIs that meter calls per time window.
        burst: How many calls the rate ceiling lets through at once.
        window: When windows close; see `WindowConfig`.
        history_size: How many decisions `decisions` keeps.
        max_pause_s: The longest a pause (a Retry-After) may last.
        store: Where the learned state is kept (see `aiogovernor.state`):
            ``"default"`` is a `aiogovernor.state.JsonFileStore` in the user's
            state directory; None (or ``$AIOGOVERNOR_DISABLE_STATE=1``) keeps
            nothing. The learned state is loaded by `restore`, or else on
            the first awaited acquire, and the limit clamped to the policy's
            bounds; decisions are saved in the background, debounced;
            `aclose` saves what is left, and for a file store so does the
            interpreter's exit (see the state guide).
        state_max_age_s: Learned state older than this (wall time) is ignored;
            None uses it whatever its age.
        save_interval_s: At most one background save per this many seconds.
        state_history_size: How many of the latest decisions are kept with
            the learned state (``aiogovernor state history``); 0 keeps none.
    """

    # An instance's dict shares its keys with the class's other instances only up to 29
    # attributes (CPython); past that each governor's dict costs ~1.3 KB more. What is
    # rarely set lives here until it is (the nesting warning, given once).
    _warned_nested = False

    def __init__(
        self,
        name: str = "default",
        policy: LimitPolicy | None = None,
        *,
        environment: str | None = None,
        clock: Clock | None = None,
        classify: Classifier | None = None,
        max_per_second: float | None = None,
        burst: int = 1,
        window: WindowConfig | None = None,
        history_size: int = 100,
        max_pause_s: float = 300.0,
        store: StateStore | Literal["default"] | None = "default",
        state_max_age_s: float | None = 30 * 86400.0,
        save_interval_s: float = 5.0,
        state_history_size: int = 1000,
    ) -> None:
        policy, environment = check_gate_args(name, policy, environment, clock, classify, window)
        self._name = name
        # Everything but the name and the policy, for `derive` (a tuple: a dict is 460 bytes).
        self._settings = (
            environment,
            clock,
            classify,
            max_per_second,
            burst,
            window,
            history_size,
            max_pause_s,
            store,
            state_max_age_s,
            save_interval_s,
            state_history_size,
        )
        self._environment = environment
        self._policy = policy
        # The clock is read twice per unit of work. Reading the loop's time
        # through asyncio.get_running_loop() costs a getpid() each time, so the
        # running loop's bound time() is cached while that loop runs.
        self._time: Clock = clock or loop_time
        self._clock_bound: Callable[[], bool] = (_FOREVER if clock else _STOPPED).is_running
        # What the times kept so far belong to: the asyncio loop or trio run whose clock was read.
        self._clock_owner: object = None
        # Whether the fast path checks the binding on every permit. Every stock asyncio loop's
        # time is `time.monotonic`, so once bound to one, the fast path trusts it and the
        # binding is checked on the slow path and when a window is due (`_window_check`);
        # a loop with its own time (virtual time) and trio runs are checked on every permit.
        self._rebind = clock is None
        self._classify = classify
        window = window or _DEFAULT_WINDOW
        check_float("max_pause_s", max_pause_s, low=0.0)

        self._limit = gate_limit(policy.limit, policy.min_limit)
        self._inflight = 0
        # Waiters in arrival order. An ordered dict, not a deque: a cancelled waiter
        # leaves from anywhere in the queue in O(1) (a deque searches for it).
        self._waiters: OrderedDict[_Queued, None] = OrderedDict()
        self._generation = 0  # bumped on every decrease of the limit
        self._peak_inflight = 0  # the open window's most permits held at once
        # The uncontended enter takes a permit at once while inflight is below this: the
        # limit and the window's peak in flight, or 0 while a caller queues or `_slow` is
        # set. It is lowered wherever one of those falls or appears (`_refresh_fast`); a
        # stale value is only ever too low, which sends a caller the long way once.
        self._fast_below = 0
        self._saw_waiters = False  # whether anyone queued during the open window
        # What tells how many `async with` blocks are open (entered, not yet exited), without
        # a count on the fast path: every permit held is a block's, a hand-held one's (from
        # acquire or try_acquire) or a queued caller's granted but not yet resumed, and open
        # blocks also count those that gave their permit back before their exit (by hand,
        # or renewed away by a map). So open blocks = inflight - apart + spare, where
        # `_apart` counts the hand-held and the granted ones together (`_blocks_open`):
        # blocks never hold more permits than are open, whatever context their exits run
        # in (see `_exit_elsewhere`).
        self._apart = 0
        self._spare_blocks = 0
        self._lag_probe: SharedLagProbe | None = None  # the loop's, watched from window closes (asyncio)

        # Windows, the policy, decisions: the gate only feeds samples in and
        # hears the decisions back through `_apply`.
        self._feedback = feedback = Feedback(
            policy,
            governor=name,
            environment=environment,
            window=window,
            history_size=history_size,
            apply=self._apply,
            presampled=True,
        )
        # The fast path appends successful latencies straight into the open
        # window and looks no further until its duration or count is reached.
        self._ok_latencies = feedback.ok_latencies
        self._close_at = feedback.close_at
        # A window past `max_samples` keeps one successful latency in `_thin.stride` (see
        # `WindowConfig`). The gate thins them itself: `_skip` counts down the blocks
        # whose latency is counted but neither computed nor kept before the next one
        # kept (0: keep the next), and the skipped ones are reported in bulk
        # (`_flush_skipped`): every latency kept since `_thin.kept_base` (an index into
        # `_ok_latencies`) closed a group of `_thin.stride` blocks. The fast path calls in
        # once `_ok_latencies` holds `_check_len` (`max_samples`; 0 while thinning, so that
        # each kept latency starts the next group).
        self._thin = _Thinning()
        self._skip = 0
        self._check_len = feedback.max_samples

        # A pause (Retry-After) and the optional rate ceiling.
        self._gates = TimeGates(
            max_per_second=max_per_second, burst=burst, max_pause_s=max_pause_s, on_wake=self._dispatch
        )

        # Learned state: until it is loaded, `_slow` sends callers to the slow
        # path, where the first one loads it; the fast path checks nothing more.
        self._persistence: Persistence | None = bind_persistence(
            self,
            store,
            max_age_s=state_max_age_s,
            save_interval_s=save_interval_s,
            history_size=state_history_size,
            rows=self._feedback,  # the saved record reads its history's rows
        )
        self._state_pending = self._persistence is not None
        self._slow = True
        self._refresh_slow()
        _registry.register(self)  # a weak reference, for metrics exporters

    def _refresh_slow(self) -> None:
        """Compute the one flag that sends callers off the fast path.

        The slow path is taken while the learned state is still to be loaded,
        or while a time gate (a pause, the rate ceiling) may refuse a permit.
        Capacity and waiters are checked on the fast path itself.
        """
        self._slow = self._state_pending or self._gates.engaged
        self._refresh_fast()

    def _refresh_fast(self) -> None:
        """Compute ``_fast_below``: the enter takes a permit at once while inflight is below it."""
        if self._slow or self._waiters:
            self._fast_below = 0
        else:
            limit, peak = self._limit, self._peak_inflight
            self._fast_below = peak if peak < limit else limit

    # -- introspection -------------------------------------------------

    @property
    def name(self) -> str:
        """What this governor guards."""
        return self._name

    @property
    def environment(self) -> str:
        """Where its learned state belongs."""
        return self._environment

    @property
    def policy(self) -> LimitPolicy:
        """The limit algorithm."""
        return self._policy

    @property
    def limit(self) -> int:
        """Permits the gate admits at once."""
        return self._limit

    @property
    def inflight(self) -> int:
        """Permits held now."""
        return self._inflight

    @property
    def waiting(self) -> int:
        """Callers queued for a permit."""
        return len(self._waiters)

    @property
    def max_per_second(self) -> float | None:
        """The rate ceiling, if any."""
        return self._gates.max_per_second

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The most recent decisions, oldest first (bounded by ``history_size``)."""
        return self._feedback.history

    def paused_for_s(self) -> float:
        """How much longer new permits are paused; 0 when not paused."""
        gates = self._gates
        return gates.paused_for_s(self._now()) if gates.paused else 0.0

    def stats(self) -> GovernorStats:
        """A frozen snapshot: limit, inflight, waiting, counts, last window and decision."""
        feedback = self._feedback
        persistence = self._persistence
        self._flush_skipped()  # the open window's counts include the blocks thinned out
        w = feedback.last_window
        return GovernorStats(
            name=self._name,
            environment=self._environment,
            policy=self._policy.name,
            limit=self._limit,
            policy_limit=self._policy.limit,
            inflight=self._inflight,
            waiting=len(self._waiters),
            paused_for_s=self.paused_for_s(),
            counts=MappingProxyType(feedback.counts()),
            latency_p50_s=w.latency_p50_s if w else None,
            latency_p90_s=w.latency_p90_s if w else None,
            latency_p99_s=w.latency_p99_s if w else None,
            last_window=w,
            last_decision=feedback.last_decision,
            decision_count=feedback.decision_count,
            decisions_by_direction=MappingProxyType(feedback.decisions_by_direction()),
            restored=persistence is not None and persistence.restored is not None,
            restored_saved_at=persistence.restored_at if persistence is not None else None,
        )

    def plot(self, path: str) -> None:
        """Draw what this governor did to the PNG file ``path`` (the ``plot`` extra, matplotlib).

        The picture the demo draws, from the decisions kept in `decisions`
        (the last ``history_size``): the limit after each decision, each
        window's peak in-flight work, its p50 latency and its overloads.

        Raises:
            ImportError: When matplotlib is missing.
            aiogovernor.PlotError: When the file cannot be written.
        """
        from ._plot import Trace, draw

        trace = Trace()
        trace.add_decisions(self._feedback.history)
        draw(trace, path, title=f"{self._name} [{self._environment}]: {self._policy.name}")

    def derive(self, name: str, policy: LimitPolicy | None = None) -> Governor:
        """A new governor set up like this one, under another name.

        It shares this governor's settings (environment, store, clock,
        classifier, rate ceiling, window, history size, pause cap, state age
        and save interval), but nothing it learned or holds: its own permits,
        its own limit. Used for one governor per upstream host, say.

        Args:
            name: The new governor's name (its learned state is kept under it).
            policy: Its limit algorithm: pass a fresh one (a policy keeps
                state, so two governors must not share one); None means the
                default policy.
        """
        if policy is self._policy:
            raise ValueError("a derived governor needs its own policy object, not this governor's")
        settings: dict[str, Any] = dict(zip(_SETTINGS, self._settings, strict=True))
        return Governor(name, policy, **settings)

    def guard(self, fn: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        """Decorate a coroutine function: each call takes a permit, and its exceptions are classified.

        ```python
        @gov.guard
        async def fetch(url: str) -> bytes: ...
        ```

        Raises:
            TypeError: For a plain (synchronous) function or a generator: plain
                functions are guarded by `aiogovernor.sync.Governor`.
        """
        return guard_async(self, fn)

    def add_listener(self, listener: DecisionListener) -> None:
        """Call ``listener(decision)`` after every decision."""
        self._feedback.add_listener(listener)

    def remove_listener(self, listener: DecisionListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        self._feedback.remove_listener(listener)

    def add_window_listener(self, listener: WindowListener) -> None:
        """Call ``listener(window, ok_latencies_s)`` as each window closes (see `WindowListener`)."""
        self._feedback.add_window_listener(listener)

    def remove_window_listener(self, listener: WindowListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        self._feedback.remove_window_listener(listener)

    def __repr__(self) -> str:
        return (
            f"<Governor {self._name!r} env={self._environment!r} policy={self._policy.name} "
            f"limit={self._limit} inflight={self._inflight} waiting={len(self._waiters)}>"
        )

    # -- acquiring -------------------------------------------------------

    async def __aenter__(self) -> Permit:
        # This is the cost every caller pays, so the uncontended path is written
        # out here rather than shared with acquire() through helper calls, and
        # the permit is built field by field (no __init__ frame).
        inflight = self._inflight
        if inflight < self._fast_below:
            # No one queues, nothing slows, under the limit, and under the window's peak
            # in flight (so the peak stands).
            self._inflight = inflight + 1
            generation = self._generation
        elif self._waiters or inflight >= self._limit or self._slow:
            if self._state_pending:
                await self._load_state()
            # `_take_now`, written out: this is the contended hand-off's path.
            if self._waiters or self._inflight >= self._limit or (self._slow and not self._pass_time_gates()):
                loop = self._clock_owner
                if isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running():
                    # `_wait` on the bound asyncio loop, written out: a coroutine less per hand-off.
                    self._warn_if_nested(stacklevel=3)
                    fut: asyncio.Future[int] = loop.create_future()
                    self._waiters[fut] = None
                    self._saw_waiters = True
                    self._fast_below = 0
                    try:
                        generation = await fut
                    except BaseException:
                        self._leave_queue(fut)
                        raise
                    self._apart -= 1
                else:
                    generation = await self._wait(None)
            else:
                self._inflight += 1
                generation = self._generation
            inflight = self._inflight
            if inflight > self._peak_inflight:
                self._peak_inflight = inflight
            self._refresh_fast()
        else:
            self._inflight = inflight = inflight + 1
            generation = self._generation
            if inflight > self._peak_inflight:
                self._peak_inflight = inflight
            self._refresh_fast()
        if self._rebind and not self._clock_bound():
            self._bind_clock()
        permit: Permit = Permit()
        permit._gate = self
        permit._start = self._time()
        permit._generation = generation
        permit._outcome = None
        permit._released = False
        permit._size = 1.0
        permit._token = _set_permit(permit)
        return permit

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit = _get_permit()
        if permit is None or permit._gate is not self or permit._released:
            self._exit_elsewhere(permit, exc)
            return
        # The permit comes back first, before anything that can raise.
        permit._released = True
        self._inflight -= 1
        try:
            _reset_permit(permit._token)  # type: ignore[arg-type]
        except ValueError:  # exiting in a copy of the context that entered
            _forget_permit(permit)
        if exc is None and permit._outcome is None:
            # The common case, written out: no helper frames on the hot path.
            permit._outcome = _OK
            skip = self._skip
            if skip and permit._size == 1.0:
                # A thinned window: this block is counted, its latency neither kept nor
                # measured. Its start stands in for the time: once a block that started
                # after the window's duration ends, the window closes.
                self._skip = skip - 1
                if permit._start >= self._close_at:
                    self._window_check(self._time(), permit._start, False)
                if self._waiters:
                    self._dispatch()
                return
            now = self._time()
            if permit._size == 1.0:
                lat = self._ok_latencies
                lat.append(now - permit._start)
                if now >= self._close_at or len(lat) >= self._check_len:
                    self._window_check(now, permit._start)
            else:
                self._sized_sample(permit, now)
            if self._waiters:
                self._dispatch()
            return
        outcome = permit._outcome
        if outcome is None:
            outcome = self._classify_exc(exc)  # type: ignore[arg-type]
        permit._outcome = outcome
        self._record(permit, outcome)

    def _exit_elsewhere(self, permit: Permit | None, exc: BaseException | None) -> None:
        """An `async with` exit that finds no held permit of this governor in its context.

        Either its block gave its permit back already (by hand, or a map
        renewed it away), or the block was entered in another task or context:
        an async generator closed by its finalizer in a new task, a fixture set
        up and torn down in two tasks, ``asyncio.wait_for(gov.__aenter__(), t)``
        (or another block's exit found this block's permit in a copied context
        and gave it back). Blocks never hold more permits than are open: if no
        open block had given its permit back, closing this one leaves one
        permit too many held, and one goes back (its latency is unknown, so it
        counts as ``ignored``), then a Retry-After is honoured. Only an exit
        with no block open at all is an error.
        """
        if self._blocks_open() <= 0:
            raise RuntimeError(f"{self!r} exited without a matching enter")
        if permit is not None and permit._gate is self:
            _forget_permit(permit)
        # The block closes: one spare less, or one permit less held (see `_blocks_open`).
        if self._spare_blocks:
            self._spare_blocks -= 1  # this block's permit (or one like it) was given back already
            return
        self._inflight -= 1
        try:
            now = self._now()
        except RuntimeError:  # no event loop runs: nothing to measure or to wake
            return
        self._feedback.sample(now, now, Outcome.IGNORED, False, self._limit)
        if isinstance(exc, OverloadError):
            self._pause_for(exc)
        if self._waiters:
            self._dispatch()

    def _blocks_open(self) -> int:
        """`async with` blocks entered and not yet exited (see ``_apart`` in ``__init__``)."""
        return self._inflight - self._apart + self._spare_blocks

    async def acquire(self, *, timeout_s: float | None = None) -> Permit:
        """Wait for a permit; the caller must `Permit.release` it.

        Args:
            timeout_s: Give up after this many seconds (None waits for ever).

        Raises:
            TimeoutError: When no permit came within ``timeout_s``.
        """
        if timeout_s is not None:
            check_float("timeout_s", timeout_s, low=0.0)
        if self._state_pending:
            if timeout_s is None:
                await self._load_state()
            else:
                # The first load counts against the timeout too: a store that hangs must not.
                import anyio

                deadline = anyio.current_time() + timeout_s
                with anyio.fail_after(timeout_s):
                    await self._load_state()
                timeout_s = max(0.0, deadline - anyio.current_time())
        if not self._take_now():
            return self._new_permit(await self._wait(timeout_s))
        return self._new_permit()

    def try_acquire(self) -> Permit | None:
        """A permit if one is free now (and no one is queued), else None."""
        return self._new_permit() if self._take_now() else None

    def _take_now(self) -> bool:
        """Take a permit if capacity, pause and rate allow and no one queues ahead."""
        if self._waiters or self._inflight >= self._limit:
            return False
        if self._slow and not self._pass_time_gates():
            return False
        self._inflight += 1
        return True

    def _new_permit(self, generation: int | None = None) -> Permit:
        """The permit just taken (by acquire or try_acquire), which its holder releases by hand.

        A permit handed over from the queue carries the ``generation`` it was handed over in.
        """
        inflight = self._inflight
        if inflight > self._peak_inflight:
            self._peak_inflight = inflight
        if not self._clock_bound():
            self._bind_clock()
        permit = _grant_permit(self, self._time(), generation)
        self._apart += 1
        return permit

    def _now(self) -> float:
        """The injected clock, or the running loop's time."""
        if not self._clock_bound():
            self._bind_clock()
        return self._time()

    def _bind_clock(self) -> None:
        """Read the running loop's clock from now on; times kept from another loop's are dropped.

        Raises:
            RuntimeError: When no event loop runs at all (nothing is bound then).
        """
        owner: object
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                import trio  # the only other loop anyio runs on
            except ImportError:
                raise RuntimeError("no running event loop") from None
            owner = trio.lowlevel.current_trio_token()  # raises RuntimeError outside a run
            self._clock_bound = _TrioRun(owner, trio.lowlevel.current_trio_token).is_running
            self._time = trio.current_time
            self._rebind = True
        else:
            owner = loop
            self._clock_bound, self._time = loop.is_running, _fast_time(loop)
            self._rebind = self._time is not time.monotonic
        if owner is not self._clock_owner:
            first = self._clock_owner is None
            self._clock_owner = owner
            if not first:
                self._new_clock()

    def _new_clock(self) -> None:
        """The governor is used by another event loop (a second ``asyncio.run``, a new ``trio.run``).

        Every time kept so far is a reading of the old loop's clock, and its
        wake-up timer will never fire here: a pause, the rate ceiling's
        theoretical arrival time and the open window's start are dropped (the
        window keeps its samples). Work and waiters are the loop's own: a loop
        that ends cancels them, which gives their permits back.
        """
        self._gates.forget_times()
        self._feedback.reopen(self._time())
        self._close_at = self._feedback.close_at
        self._refresh_slow()

    async def _wait(self, timeout_s: float | None) -> int:
        """Queue for a permit; the generation it was handed over in.

        That generation, not the one when the waiter's task runs again, is the permit's:
        a decrease between the two (a refusal handled first in the same turn of the loop)
        must not make the work it admitted before that decrease count as fresh, or one
        congestion event would decrease the limit once per permit handed over with it.
        """
        self._warn_if_nested(stacklevel=4)
        loop = self._clock_owner
        if not (isinstance(loop, asyncio.AbstractEventLoop) and loop.is_running()):
            # Asked only when the loop whose clock is bound does not run: on Python 3.11,
            # asyncio.get_running_loop() makes a getpid() call (a gate is used by one
            # thread's loop at a time, so the bound loop, while it runs, is that loop).
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                return await self._wait_anyio(timeout_s)
        # The future itself is the place in the queue: granting sets its result.
        fut: asyncio.Future[int] = loop.create_future()
        self._waiters[fut] = None
        self._saw_waiters = True
        self._fast_below = 0
        try:
            if timeout_s is None:
                generation = await fut
            else:
                async with asyncio.timeout(timeout_s):
                    generation = await fut
        except BaseException:
            self._leave_queue(fut)
            raise
        self._apart -= 1  # resumed: the caller makes it a block's or a hand-held permit
        return generation

    def _warn_if_nested(self, *, stacklevel: int) -> None:
        """Warn (once per governor) when the task about to queue holds one of its permits already."""
        held = _get_permit()
        if held is not None and held._gate is self and not held._released and not self._warned_nested:
            # Checked only when about to queue, so the fast path pays nothing for it.
            self._warned_nested = True
            warnings.warn(
                f"{self!r}: a task that holds one of its permits is queueing for another; if every "
                "permit is held this way, nothing is ever released (with governed_map, the function "
                "mapped already runs under a permit and must not take one from the same governor)",
                RuntimeWarning,
                stacklevel=stacklevel,
            )

    async def _wait_anyio(self, timeout_s: float | None) -> int:
        import anyio

        waiter = _EventWaiter(anyio.Event())
        self._waiters[waiter] = None
        self._saw_waiters = True
        self._fast_below = 0
        try:
            if timeout_s is None:
                await waiter.event.wait()
            else:
                with anyio.fail_after(timeout_s):
                    await waiter.event.wait()
        except BaseException:
            self._leave_queue(waiter)
            raise
        self._apart -= 1
        return waiter.generation

    def _leave_queue(self, waiter: _Queued) -> None:
        """A waiter gives up (cancelled, timed out): out of the queue, or its permit passed on."""
        if waiter.done() and not waiter.cancelled():
            # Granted, then cancelled before running: pass the permit on.
            self._inflight -= 1
            self._apart -= 1
            self._dispatch()
        else:
            self._waiters.pop(waiter, None)
            if not self._waiters:
                self._refresh_fast()

    def _dispatch(self) -> None:
        """Hand free permits to waiters, in arrival order."""
        waiters = self._waiters
        while waiters and self._inflight < self._limit:
            if self._slow and not self._pass_time_gates():
                return
            waiter = waiters.popitem(last=False)[0]
            if waiter.done():  # cancelled, and its task has not taken it out of the queue yet
                if self._slow:
                    self._gates.refund()  # the rate token was not used
                continue
            waiter.set_result(self._generation)
            self._inflight += 1
            self._apart += 1
        if not waiters:
            self._refresh_fast()

    # -- time gates: pause and rate ceiling --------------------------------

    def _pass_time_gates(self) -> bool:
        """Whether a permit may be granted now; if not, the time gates arrange a wake-up."""
        gates = self._gates
        if not gates.admit(self._now()):
            return False
        if not gates.engaged:
            self._refresh_slow()  # a pause ended: the fast path may open again
        return True

    def pause(self, seconds: float) -> None:
        """Admit nothing new for ``seconds`` (capped at ``max_pause_s``).

        Work in flight goes on and is still sampled; a pause never shortens
        an existing one.
        """
        check_float("seconds", seconds, low=0.0)
        self.pause_until(self._now() + seconds)

    def pause_until(self, t: float) -> None:
        """Admit nothing new until clock time ``t`` (capped at ``max_pause_s`` from now)."""
        check_float("t", t)
        paused_for = self._gates.pause_until(t, self._now())
        if paused_for:
            self._refresh_slow()
            logger.debug("%s[%s] paused for %.3fs", self._name, self._environment, paused_for)

    # -- releasing, sampling and deciding -----------------------------------

    def _classify_exc(self, exc: BaseException) -> Outcome:
        """The outcome of work that ended with ``exc``; an `OverloadError`'s Retry-After pauses."""
        outcome = classify_with(self._classify, exc, self._name)
        if isinstance(exc, OverloadError):
            self._pause_for(exc)
        return outcome

    def _pause_for(self, exc: OverloadError) -> None:
        """Pause for an `OverloadError`'s Retry-After (see `retry_after_pause_s`); never raises."""
        seconds = retry_after_pause_s(exc, self._name, self._environment)
        if seconds is not None:
            with contextlib.suppress(RuntimeError):  # no event loop runs: no clock to pause on
                self.pause(seconds)

    def _release(self, permit: Permit, outcome: Outcome) -> None:
        """`Permit.release`: give the permit back first, then measure."""
        self._give_back(permit, outcome)
        self._record(permit, outcome)

    def _give_back(self, permit: Permit, outcome: Outcome) -> None:
        """Return a permit before its block (if any) exits; its sample is taken elsewhere."""
        permit._released = True
        permit._outcome = outcome
        self._inflight -= 1
        if permit._token is not None:  # an `async with` block's: it still has to exit
            self._spare_blocks += 1
        else:
            self._apart -= 1

    def _record(self, permit: Permit, outcome: Outcome) -> None:
        """Fold a released permit's sample in, close a window if due, and wake waiters."""
        try:
            now = self._now()
        except RuntimeError:  # released with no event loop running: nothing to measure or wake
            return
        fresh = permit._generation == self._generation
        feedback = self._feedback
        self._flush_skipped()  # this sample goes in as it is, outside the groups
        if feedback.sample(permit._start, now, outcome, fresh, self._limit, permit._size):
            self._close_window(now)
        elif self._thin.stride != 1 or feedback.ok_stride != 1:
            self._resync()  # a fold may have thinned the window further
        self._close_at = feedback.close_at
        if self._waiters:
            self._dispatch()

    def _flush_skipped(self) -> None:
        """Report the blocks thinned out since the last report; start a new group."""
        stride = self._thin.stride
        if stride != 1:
            kept = len(self._ok_latencies)
            skipped = (kept - self._thin.kept_base) * (stride - 1) + (stride - 1 - self._skip)
            self._thin.kept_base = kept
            self._skip = stride - 1
            if skipped:
                self._feedback.count_skipped(skipped)

    def _resync(self) -> None:
        """After the feedback folded or closed the window (skipped blocks reported first): its stride."""
        stride = self._feedback.ok_stride
        self._thin.stride = stride
        self._skip = stride - 1
        self._thin.kept_base = len(self._ok_latencies)
        self._check_len = self._feedback.max_samples if stride == 1 else 0

    def _sized_sample(self, permit: Permit, now: float) -> None:
        """A successful unit of work that said its size: its latency is kept, thinned or not."""
        latency = now - permit._start
        self._flush_skipped()
        lat = self._ok_latencies
        lat.append(latency)
        self._feedback.record_size(latency, permit._size)
        if self._thin.stride != 1:
            self._thin.kept_base = len(lat)  # it closed no group
        if now >= self._close_at or len(lat) >= self._check_len:
            self._window_check(now, permit._start, False)

    def _renew(self, permit: Permit) -> bool:
        """End ``permit``'s unit of work as an ``ok`` sample and keep the permit for the next unit.

        For a pool worker running units one after another (`governed_map`): while nobody
        waits, no time gate (pause, rate ceiling, pending state) applies and the limit still
        covers the permits held, giving the permit back and taking it again would change
        nothing but cost. The sample is recorded either way; a kept permit counts as granted
        now (start, generation). Otherwise, or when the window this sample closes
        lowers the limit below the permits held, the permit is released.

        This runs once per unit of work, so the common case (a plain sample, no window due)
        is all it does in line; the rest is in `_renew_other` and `_renew_due`.

        Returns:
            Whether the permit was kept (else it is released).
        """
        if (
            self._waiters
            or self._slow
            or self._inflight > self._limit
            or permit._released
            or permit._size != 1.0
        ):
            return self._renew_other(permit)
        now = self._time()  # bound when the permit was granted, in this same task
        skip = self._skip
        if skip:  # a thinned window: counted, its latency not kept (see `__aexit__`)
            self._skip = skip - 1
            if now >= self._close_at:
                return self._renew_due(permit, now, False)
        else:
            lat = self._ok_latencies
            lat.append(now - permit._start)
            if now >= self._close_at or len(lat) >= self._check_len:
                return self._renew_due(permit, now)
        permit._start = now
        permit._generation = self._generation
        return True

    def _renew_other(self, permit: Permit) -> bool:
        """`_renew` when the permit cannot be kept as it is, or its unit said its size."""
        if permit._released:
            # A permit its holder gave back by hand (an attempt loop that waited out a
            # backoff holding none) is neither released twice nor kept.
            return False
        if self._waiters or self._slow or self._inflight > self._limit:
            self._release(permit, _OK)
            return False
        now = self._time()
        latency = now - permit._start
        self._flush_skipped()  # kept whatever the thinning: its size bands need it
        lat = self._ok_latencies
        lat.append(latency)
        self._feedback.record_size(latency, permit._size)
        if self._thin.stride != 1:
            self._thin.kept_base = len(lat)  # it closed no group
        permit._size = 1.0  # the next unit of work says its own size
        if now >= self._close_at or len(lat) >= self._check_len:
            return self._renew_due(permit, now, False)
        permit._start = now
        permit._generation = self._generation
        return True

    def _renew_due(self, permit: Permit, now: float, kept: bool = True) -> bool:
        """`_renew` once its sample (recorded) may close the window: close it if it is due."""
        self._window_check(now, permit._start, kept)
        if self._inflight > self._limit:
            # The decision lowered the limit: this permit goes back (its sample is in).
            self._give_back(permit, _OK)
            if self._waiters:
                self._dispatch()
            return False
        permit._start = now
        permit._generation = self._generation
        return True

    def _window_check(self, now: float, sample_start: float, kept: bool = True) -> None:
        """After a fast-path sample: open the first window, or close the open one if it is due.

        ``kept``: the sample's latency was appended as the last of its group (else it
        was counted only, or kept outside the groups).
        """
        stride = self._thin.stride
        if stride != 1:
            if kept:
                self._skip = stride - 1  # the next group starts
            if now < self._close_at and len(self._ok_latencies) < self._feedback.max_samples:
                return
            self._flush_skipped()
        if not self._clock_bound():
            # Another loop runs now (the fast path trusted a stock loop's clock): ``now`` is
            # a reading of the old one. Bind the new clock, which restarts the window.
            self._bind_clock()
            return
        feedback = self._feedback
        if feedback.due(sample_start, now, self._limit):
            self._close_window(now)
        elif stride != 1 or feedback.ok_stride != 1:
            self._resync()  # folded: thinned further, or for the first time
        self._close_at = feedback.close_at

    def _close_window(self, now: float) -> None:
        feedback = self._feedback
        self._flush_skipped()
        decision = feedback.close(
            now, self._limit, peak_inflight=self._peak_inflight, saw_waiters=self._saw_waiters
        )
        if self._thin.stride != 1:
            self._resync()  # the next window keeps every latency again
        self._close_at = feedback.close_at
        # Work still running belongs to the next window too.
        self._peak_inflight = self._inflight
        self._refresh_fast()
        self._saw_waiters = bool(self._waiters)
        period_s = feedback.lag_probe_period_s
        if period_s is not None:
            self._watch_lag(period_s)
        if decision.new_limit > decision.old_limit:
            self._dispatch()

    def _watch_lag(self, period_s: float) -> None:
        """Receive the running asyncio loop's lag readings while work is in flight (one probe per loop)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # trio: no probe
            return
        probe = self._lag_probe
        if probe is None or probe.loop is not loop:
            probe = self._lag_probe = shared_lag_probe(loop, period_s)
        probe.watch(self)

    def _lag_reading(self, probe: SharedLagProbe, lag_s: float, period_s: float) -> bool:
        """One reading of the loop's lag (`SharedLagProbe`); whether to go on receiving them."""
        if probe is not self._lag_probe:
            return False  # another loop's (the governor has moved on): its lag is not this loop's
        self._feedback.record_lag(lag_s, period_s)
        return self._inflight > 0

    def _apply(self, decision: Decision) -> None:
        """Take a decision's limit (the feedback calls this before any listener hears of it)."""
        if decision.new_limit < self._limit:
            self._generation += 1  # work started before now cannot cause another decrease
        self._limit = decision.new_limit
        self._refresh_fast()

    def reset_limit(self, limit: float, *, reason: str = "reset") -> None:
        """Set the limit by hand (e.g. from learned state), clamped to the policy's bounds.

        The policy is reset to ``limit`` and the change is recorded as a decision.
        """
        try:
            now = self._now()
        except RuntimeError:  # no running loop: the default clock cannot be read
            now = math.nan
        decision = self._feedback.reset(limit, reason, now, self._limit)
        if decision.new_limit > decision.old_limit:
            self._dispatch()

    # -- learned state ---------------------------------------------------------

    @property
    def store(self) -> StateStore | None:
        """Where the learned state is kept; None when persistence is off."""
        return self._persistence.store if self._persistence is not None else None

    async def restore(self) -> LearnedState | None:
        """Load the learned state now, instead of on the first acquire; return what was restored.

        Until the state is loaded, `limit` shows the policy's starting limit.
        Call this to see (or log) the learned limit before any work runs.
        Loading happens once: later calls return the same state at no cost.

        Returns:
            The state the governor now starts from; None when persistence is
            off, nothing was saved yet, or the state is older than
            ``state_max_age_s``.
        """
        persistence = self._persistence
        if persistence is None:
            return None
        if self._state_pending:
            await self._load_state()
        return persistence.restored

    def attach_chunker(self, chunker: Chunker | None) -> None:
        """Keep ``chunker``'s size with this governor's learned state; None detaches it.

        The integrations that size chunks (`aiogovernor.governed_batches`, the
        uploader) attach theirs; attach your own when you size batches
        yourself. A chunker with a ``reset(size)`` method, such as
        `AdaptiveChunker`, starts from the learned size. One chunker is
        attached at a time; the size of the last one is kept after it is
        detached. Does nothing when persistence is off.
        """
        if chunker is not None and not isinstance(chunker, Chunker):
            raise TypeError(f"chunker must be a Chunker (size and record) or None, got {chunker!r}")
        if self._persistence is not None:
            self._persistence.attach_chunker(chunker)

    def detach_chunker(self, chunker: Chunker) -> None:
        """Detach ``chunker`` if it is the one attached (keeping its size); else do nothing."""
        persistence = self._persistence
        if persistence is not None and persistence.chunker is chunker:
            persistence.attach_chunker(None)

    async def _load_state(self) -> None:
        persistence = self._persistence
        assert persistence is not None
        await persistence.load()
        if persistence.loaded:
            self._state_pending = False
            self._refresh_slow()

    async def aclose(self) -> None:
        """Save the learned state now (if anything changed) and stop the pending background save.

        ``async with gov:`` takes a permit, so it cannot also mean "the
        governor's lifetime"; for a block that saves on the way out use
        ``async with contextlib.aclosing(Governor(...)) as gov:``. The
        governor stays usable after `aclose`; later decisions are saved again.
        Never raises for a store failure: that is logged. The save is
        shielded from cancellation, so a cancelled task's cleanup still saves.
        """
        if self._persistence is not None:
            import anyio

            with anyio.CancelScope(shield=True):
                await self._persistence.flush()
