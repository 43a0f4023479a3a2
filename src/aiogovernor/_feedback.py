"""The feedback loop: samples -> windows -> policy -> decision -> history, listeners, logging.

The shape of Netflix concurrency-limits' ``WindowedLimit`` with
``notifyOnChange``: the gate feeds samples in and only hears back the
decisions. A plain synchronous object with no event loop, so it is tested
(and simulated) without one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ._events import Decision, DecisionListener, WindowListener
from ._frozen import blank_of
from ._history import DecisionHistory
from ._samples import Outcome, Window, WindowAggregator, WindowConfig
from ._validate import check_int
from .limits import LimitPolicy, gate_limit

__all__ = ["Feedback"]

logger = logging.getLogger("aiogovernor")

_T = TypeVar("_T")

_OUTCOMES = tuple(Outcome)
_DecisionBlank = blank_of(Decision)  # `_decide` fills one in, then makes it a Decision (see `blank_of`)
_new = object.__new__
_DEBUG = logging.DEBUG


def _without(items: tuple[_T, ...], item: _T) -> tuple[_T, ...]:
    """``items`` less the first ``item``; ValueError when it is not there (as `list.remove`)."""
    kept = list(items)
    kept.remove(item)
    return tuple(kept)


class Feedback:
    """Turns one gate's samples into decisions about its limit.

    Contract with the gate that owns it (an asyncio gate, or a thread gate):

    - It is not thread-safe and never touches an event loop, a clock or a
      lock: every method takes the time it needs (``now``) and the gate's
      current limit from the caller, and the caller holds whatever lock
      guards its gate for the length of each call.
    - Samples go in through `sample`, or (on a gate's fast path, for
      successful work) by appending latencies straight to `ok_latencies`
      and calling `due` once ``now >= close_at`` or the list holds
      `max_samples` (`due` may then fold the list into the window's
      subsample and empty it); then `close` when a window is due.
    - Every decision (from `close` or `reset`) is handed first to
      ``apply`` (the gate sets its limit from ``decision.new_limit``), then
      kept in the history, logged and given to each listener, in that
      order, before the method returns it. A listener that raises is logged
      and skipped. The gate wakes its waiters afterwards if the limit rose.

    Args:
        policy: The limit algorithm.
        governor: The gate's name, for decisions and logs.
        environment: The gate's environment, for decisions and logs.
        window: When windows close.
        history_size: How many decisions to keep.
        apply: Called with each decision before anyone else hears of it.
        presampled: Whether the gate thins a thinned window's successful latencies itself
            (see `WindowAggregator`): it appends one in `ok_stride` and reports the
            others with `count_skipped`.
    """

    __slots__ = (
        "_agg",
        "_apply",
        "_decision_count",
        "_environment",
        "_governor",
        "_history",
        "_history_size",
        "_last_window",
        "_listeners",
        "_policy",
        "_totals",
        "_window_listeners",
        "lag_probe_period_s",
        "max_samples",
        "ok_latencies",
    )

    def __init__(
        self,
        policy: LimitPolicy,
        *,
        governor: str,
        environment: str,
        window: WindowConfig,
        history_size: int,
        apply: Callable[[Decision], None],
        presampled: bool = False,
    ) -> None:
        self._policy = policy
        self._governor = governor
        self._environment = environment
        # Made at the first decision: most governors are built for a short while, or never decide.
        self._history_size = check_int("history_size", history_size, low=1)
        self._history: DecisionHistory | None = None
        # Tuples, replaced whole when one is added or removed: most governors have none, and
        # every governor without shares the one empty tuple (an empty list is 56 bytes each).
        self._listeners: tuple[DecisionListener, ...] = ()
        self._window_listeners: tuple[WindowListener, ...] = ()
        self._apply = apply
        self._decision_count = 0
        # Closed windows' counts, by Outcome in declaration order; then the decisions that
        # raised, lowered and held the limit (one list: one object less per governor).
        self._totals = [0, 0, 0, 0, 0, 0, 0]
        self._last_window: Window | None = None
        # The first window opens at the first sample's start (the gate's clock may need a loop).
        self._agg = WindowAggregator(window, start=None, presampled=presampled)
        self.ok_latencies = self._agg.ok_latencies
        """The open window's successful latencies (the same list for the object's life)."""
        self.max_samples = window.max_samples
        """How many latencies `ok_latencies` holds before `due` must be asked (it may fold them)."""
        self.lag_probe_period_s = window.lag_probe_period_s
        """How often the gate reads its loop's lag (`record_lag`); None: it does not."""

    # -- samples and windows ---------------------------------------------

    @property
    def close_at(self) -> float:
        """The earliest time the open window may close on duration (-inf before the first sample)."""
        return self._agg.close_at

    def sample(
        self, start: float, now: float, outcome: Outcome, fresh: bool, limit: int, size: float = 1.0
    ) -> bool:
        """Fold in one finished unit of work; return whether a window is due (then call `close`).

        Args:
            start: When its permit was granted.
            now: When it finished.
            outcome: How it went.
            fresh: False when it started before the latest decrease of the limit.
            limit: The gate's limit now.
            size: How much work it carried (items, bytes); 1 for a plain call.
        """
        agg = self._agg
        if agg.start is None:
            agg.open(start)
        if size != 1.0 and outcome is Outcome.OK:
            agg.record_size(now - start, size)
        return agg.record(now - start, outcome, fresh, now, limit)

    def record_size(self, latency_s: float, size: float) -> None:
        """After a successful latency was appended to `ok_latencies`: it carried ``size`` units of work."""
        self._agg.record_size(latency_s, size)

    @property
    def ok_stride(self) -> int:
        """One successful latency in how many the open window keeps (1 until it is thinned)."""
        return self._agg.ok_stride

    def count_skipped(self, n: int) -> None:
        """Count ``n`` successful samples left out of `ok_latencies` (a presampling gate's)."""
        self._agg.count_skipped(n)

    def record_lag(self, lag_s: float, period_s: float) -> None:
        """One reading of the gate's loop lag: a timer armed ``period_s`` before ran ``lag_s`` late."""
        self._agg.record_lag(lag_s, period_s)

    def due(self, start: float, now: float, limit: int) -> bool:
        """After latencies were appended to `ok_latencies`: whether a window is due.

        Opens the first window at ``start`` (the sample's start) if none is open.
        """
        agg = self._agg
        if agg.start is None:
            agg.open(start)
        return agg.should_close(now, limit)

    def reopen(self, now: float) -> None:
        """Restart the open window at ``now``, its samples kept: its times came from another clock."""
        if self._agg.start is not None:
            self._agg.open(now)

    def close(self, now: float, limit: int, *, peak_inflight: int, saw_waiters: bool) -> Decision:
        """Close the open window, ask the policy, and decide.

        Args:
            now: Clock time of the closing.
            limit: The gate's limit now.
            peak_inflight: The most permits held at once during the window.
            saw_waiters: Whether callers queued during the window.
        """
        ok_sorted: list[float] | None = None
        if self._window_listeners:
            # Sorted here (the window's own percentiles sort them anyway, and a sorted
            # list sorts again in one pass) and copied: closing the window clears them.
            latencies = self._agg.settled_ok_latencies()  # a subsample, past `max_samples`
            latencies.sort()
            ok_sorted = latencies[:]
        window = self._agg.close(now, limit, peak_inflight=peak_inflight, saw_waiters=saw_waiters)
        totals = self._totals  # by Outcome in declaration order
        totals[0] += window.ok
        totals[1] += window.overload + window.stale_overload
        totals[2] += window.error
        totals[3] += window.ignored
        self._last_window = window
        if ok_sorted is not None:
            for window_listener in self._window_listeners:
                try:
                    window_listener(window, ok_sorted)
                except Exception:
                    logger.exception("window listener %r failed", window_listener)
        adjustment = self._policy.update(window)
        return self._decide(adjustment.limit, adjustment.reason, window, now, limit)

    def reset(self, limit: float, reason: str, now: float, gate_limit_now: int) -> Decision:
        """Reset the policy to ``limit`` (clamped to its bounds) and record it as a decision."""
        self._policy.reset(limit)
        return self._decide(self._policy.limit, reason, None, now, gate_limit_now)

    def _decide(
        self, policy_limit: float, reason: str, window: Window | None, now: float, old: int
    ) -> Decision:
        new = gate_limit(policy_limit, self._policy.min_limit)
        # Decision(governor=..., ...), at a fifth of its constructor's cost (see `blank_of`).
        d: Any = _new(_DecisionBlank)
        d.governor = self._governor
        d.environment = self._environment
        d.at = now
        d.old_limit = old
        d.new_limit = new
        d.policy_limit = policy_limit
        d.reason = reason
        d.window = window
        d.confidence = window.confidence if window is not None else 1.0
        d.__class__ = Decision
        decision: Decision = d
        self._apply(decision)
        history = self._history
        if history is None:
            history = self._history = DecisionHistory(
                self._history_size, governor=self._governor, environment=self._environment
            )
        history.append(decision)
        self._decision_count += 1
        self._totals[4 if new > old else 5 if new < old else 6] += 1
        if logger.isEnabledFor(_DEBUG):
            # The message is for people; the fields are for JSON formatters and structlog.
            logger.debug(
                "%s",
                decision.describe(),
                extra={
                    "governor": self._governor,
                    "environment": self._environment,
                    "old": old,
                    "new": new,
                    "reason": reason,
                },
            )
        if self._listeners:
            for listener in self._listeners:
                try:
                    listener(decision)
                except Exception:
                    logger.exception("decision listener %r failed", listener)
        return decision

    # -- what it knows ------------------------------------------------------

    @property
    def history(self) -> tuple[Decision, ...]:
        """The most recent decisions, oldest first (bounded by ``history_size``).

        The latest is the decision listeners were given; older ones carry a
        `WindowSummary` (built again on each read from compact records).
        """
        return () if self._history is None else self._history.decisions()

    def decision_rows(self) -> DecisionHistory | None:
        """The kept decisions' rows (None before the first decision): what a saved record reads."""
        return self._history

    @property
    def last_decision(self) -> Decision | None:
        """The latest decision, if any."""
        return None if self._history is None else self._history.last

    @property
    def decision_count(self) -> int:
        """How many decisions were made."""
        return self._decision_count

    def decisions_by_direction(self) -> Mapping[str, int]:
        """Decisions that raised (``up``), lowered (``down``) and held (``hold``) the limit."""
        return dict(zip(("up", "down", "hold"), self._totals[4:], strict=True))

    @property
    def last_window(self) -> Window | None:
        """The last closed window, if any."""
        return self._last_window

    def counts(self) -> dict[str, int]:
        """Finished units of work by outcome: closed windows plus the open one."""
        totals = self._totals[:4]
        for i, n in enumerate(self._agg.open_counts()):
            totals[i] += n
        return {o.value: n for o, n in zip(_OUTCOMES, totals, strict=True)}

    def add_listener(self, listener: DecisionListener) -> None:
        """Call ``listener(decision)`` after every decision."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners = (*self._listeners, listener)

    def remove_listener(self, listener: DecisionListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        self._listeners = _without(self._listeners, listener)

    def add_window_listener(self, listener: WindowListener) -> None:
        """Call ``listener(window, ok_latencies_s)`` as each window closes (see `WindowListener`)."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._window_listeners = (*self._window_listeners, listener)

    def remove_window_listener(self, listener: WindowListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        self._window_listeners = _without(self._window_listeners, listener)
