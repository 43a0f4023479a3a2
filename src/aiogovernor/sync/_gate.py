"""The thread gate: a resizable, thread-safe semaphore that a feedback loop resizes.

The same parts as the async `aiogovernor.Governor`, driven from threads: a
`Feedback` (windows -> policy -> decision -> history, listeners, logging), a
`TimeGates` (pause and rate ceiling: its arithmetic, with a thread timer for
its wake-ups) and, when state is kept, a `ThreadPersistence`. One lock
guards the gate and every call into those helpers (the `Feedback` contract).

Waiters queue in arrival order, each blocked on a lock of its own that the
gate releases when it hands that waiter a permit (a hand-off: a thread that
arrives later cannot overtake it). A waiter that times out leaves the queue
under the gate's lock, so it leaves no hole.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import MappingProxyType, TracebackType
from typing import Any, Literal, ParamSpec, TypeVar

from aiogovernor import _registry
from aiogovernor._chunking import Chunker
from aiogovernor._classify import Classifier, OverloadError, classify_with, retry_after_pause_s
from aiogovernor._clock import Clock
from aiogovernor._events import Decision, DecisionListener, WindowListener
from aiogovernor._feedback import Feedback
from aiogovernor._governor import GovernorStats, check_gate_args
from aiogovernor._guard import guard_blocking
from aiogovernor._permit import PermitMarks
from aiogovernor._persistence import StateStore, bind_persistence
from aiogovernor._record import LearnedState
from aiogovernor._samples import Outcome, WindowConfig
from aiogovernor._time_gates import TimeGates
from aiogovernor._validate import check_float
from aiogovernor.limits import LimitPolicy, gate_limit

from ._persistence import ThreadPersistence

__all__ = ["Governor", "Permit"]

P = ParamSpec("P")
R = TypeVar("R")

_current: ContextVar[Permit | None] = ContextVar("aiogovernor_sync_permit", default=None)
_OK = Outcome.OK


class Permit(PermitMarks):
    """The right to run one unit of work now, granted by a thread gate.

    The same marks as the async gate's permit: `ok`, `overload` (with an
    optional Retry-After pause), `error`, `ignore`, `release`.
    """

    __slots__ = ("_governor", "_inflight", "_stray", "_ticket", "_token")

    def __init__(self, governor: Governor, start: float, inflight: int, generation: int) -> None:
        # Written out rather than calling PermitMarks.__init__: one frame less on every acquire.
        self._gate = self._governor = governor
        self._start = start
        self._inflight = inflight
        self._generation = generation
        self._outcome: Outcome | None = None
        self._released = False
        self._size = 1.0
        self._token: Token[Permit | None] | None = None
        # A timed-out call whose thread runs on: released for its caller, held at the gate.
        self._stray = False
        self._ticket = governor._grants  # the order of grants (the start is taken as the work starts)

    @property
    def governor(self) -> Governor:
        """The thread gate that granted this permit."""
        return self._governor


class _Waiter:
    __slots__ = ("lock", "permit")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.lock.acquire()  # released by the gate when it hands this waiter a permit
        self.permit: Permit | None = None


class _ThreadTimeGates(TimeGates):
    """`TimeGates` whose wake-up is a daemon timer thread that fires under the gate's lock."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.RLock, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._lock = lock

    def _timer_owner(self) -> object:
        return self._lock  # one owner for ever: the thread gate has one clock, whatever thread asks

    def _call_later(self, owner: object, delay: float) -> threading.Timer:
        timer = threading.Timer(max(0.0, delay), self._fire_locked)
        timer.daemon = True
        timer.name = "aiogovernor-wake"
        timer.start()
        return timer

    def _fire_locked(self) -> None:
        with self._lock:
            self._fire()


class Governor:
    """A thread-safe semaphore whose limit a feedback loop resizes while work runs.

    The thread-world twin of `aiogovernor.Governor`: the same constructor
    arguments, policies, windows, decisions, learned state and semantics.
    Use it from any thread:

    ```python
    gov = aiogovernor.sync.Governor("uploads")

    with gov:                           # take a permit, measure, release
        upload(item)

    with gov as permit:                 # ... and say how it went
        r = session.get(url)
        if r.status_code == 429:
            permit.overload(retry_after_s=5)

    permit = gov.acquire(timeout_s=1.0)  # manual form
    try:
        upload(item)
    finally:
        permit.release()
    ```

    Raising the limit wakes waiters at once; lowering it never interrupts
    work (new permits wait until ``inflight < limit``). Waiters are served in
    arrival order; a waiter that times out leaves no hole. No permit leaks on
    exceptions or timeouts.

    Time: ``clock`` defaults to `time.monotonic`, the thread gate's clock
    (the async gate's is its event loop's time). Latencies, windows, pauses
    and the rate ceiling are measured on it. ``timeout_s`` is how long a
    thread blocks in the operating system, in real seconds, whatever the clock.

    Args:
        name: What this governor guards; learned state is kept under this name.
        policy: The limit algorithm; None means `aiogovernor.limits.default_policy`.
        environment: Where the learned state belongs; defaults to
            ``$AIOGOVERNOR_ENV``, else ``"default"``.
        clock: Seconds as a float; defaults to `time.monotonic`.
        classify: Maps the exception that ended a unit of work to an outcome;
            returning None defers to `aiogovernor.default_classify`.
        max_per_second: An optional rate ceiling (GCRA) composed with the limit.
        burst: How many calls the rate ceiling lets through at once.
        window: When windows close; see `aiogovernor.WindowConfig`.
        history_size: How many decisions `decisions` keeps.
        max_pause_s: The longest a pause (a Retry-After) may last.
        store: Where the learned state is kept (see `aiogovernor.state`);
            ``"default"`` is the JSON file store, None keeps nothing. The
            learned limit is loaded by the first acquire (which blocks on the
            store), decisions are saved in the background, debounced; `close`
            saves what is left, and for a file store so does the interpreter's exit.
        state_max_age_s: Learned state older than this (wall time) is ignored.
        save_interval_s: At most one background save per this many seconds.
        state_history_size: How many of the latest decisions are kept with
            the learned state (``aiogovernor state history``); 0 keeps none.
    """

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
        check_float("max_pause_s", max_pause_s, low=0.0)
        self._name = name
        self._settings: dict[str, Any] = {
            "environment": environment,
            "clock": clock,
            "classify": classify,
            "max_per_second": max_per_second,
            "burst": burst,
            "window": window,
            "history_size": history_size,
            "max_pause_s": max_pause_s,
            "store": store,
            "state_max_age_s": state_max_age_s,
            "save_interval_s": save_interval_s,
            "state_history_size": state_history_size,
        }
        self._environment = environment
        self._policy = policy
        self._time: Clock = clock or time.monotonic
        self._classify = classify
        # Re-entrant: a decision listener may read `stats()` from inside a decision.
        self._lock = lock = threading.RLock()

        self._limit = gate_limit(policy.limit, policy.min_limit)
        self._inflight = 0
        self._waiters: deque[_Waiter] = deque()
        self._generation = 0
        self._grants = 0  # permits granted so far
        self._peak_inflight = 0
        self._saw_waiters = False
        self._warned_nested = False

        self._feedback = feedback = Feedback(
            policy,
            governor=name,
            environment=environment,
            window=window or WindowConfig(),
            history_size=history_size,
            apply=self._apply,
        )
        self._ok_latencies = feedback.ok_latencies
        self._close_at = feedback.close_at
        self._max_samples = feedback.max_samples
        self._gates = _ThreadTimeGates(
            lock, max_per_second=max_per_second, burst=burst, max_pause_s=max_pause_s, on_wake=self._dispatch
        )
        persistence = bind_persistence(
            self,
            store,
            max_age_s=state_max_age_s,
            save_interval_s=save_interval_s,
            history_size=state_history_size,
            kind=ThreadPersistence,
        )
        assert persistence is None or isinstance(persistence, ThreadPersistence)
        self._persistence = persistence
        self._state_pending = persistence is not None
        self._load_lock = threading.Lock()
        _registry.register(self)  # a weak reference: metrics exporters read thread gates too

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
        """How many permits may be held at once."""
        return self._limit

    @property
    def inflight(self) -> int:
        """Permits held now."""
        return self._inflight

    @property
    def waiting(self) -> int:
        """Threads queued for a permit."""
        return len(self._waiters)

    @property
    def max_per_second(self) -> float | None:
        """The rate ceiling, if any."""
        return self._gates.max_per_second

    @property
    def decisions(self) -> tuple[Decision, ...]:
        """The most recent decisions, oldest first (bounded by ``history_size``)."""
        with self._lock:
            return self._feedback.history

    @property
    def store(self) -> StateStore | None:
        """Where the learned state is kept; None when persistence is off."""
        return self._persistence.store if self._persistence is not None else None

    def paused_for_s(self) -> float:
        """How much longer new permits are paused; 0 when not paused."""
        with self._lock:
            gates = self._gates
            return gates.paused_for_s(self._time()) if gates.paused else 0.0

    def stats(self) -> GovernorStats:
        """A frozen snapshot: limit, inflight, waiting, counts, last window and decision."""
        persistence = self._persistence
        with self._lock:
            feedback = self._feedback
            w = feedback.last_window
            gates = self._gates
            return GovernorStats(
                name=self._name,
                environment=self._environment,
                policy=self._policy.name,
                limit=self._limit,
                policy_limit=self._policy.limit,
                inflight=self._inflight,
                waiting=len(self._waiters),
                paused_for_s=gates.paused_for_s(self._time()) if gates.paused else 0.0,
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

    def derive(self, name: str, policy: LimitPolicy | None = None) -> Governor:
        """A new thread gate set up like this one, under another name (its own permits and limit)."""
        if policy is self._policy:
            raise ValueError("a derived governor needs its own policy object, not this governor's")
        return Governor(name, policy, **self._settings)

    def add_listener(self, listener: DecisionListener) -> None:
        """Call ``listener(decision)`` after every decision (in the thread that made it)."""
        with self._lock:
            self._feedback.add_listener(listener)

    def remove_listener(self, listener: DecisionListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        with self._lock:
            self._feedback.remove_listener(listener)

    def add_window_listener(self, listener: WindowListener) -> None:
        """Call ``listener(window, ok_latencies_s)`` as each window closes (see `aiogovernor.metrics`)."""
        with self._lock:
            self._feedback.add_window_listener(listener)

    def remove_window_listener(self, listener: WindowListener) -> None:
        """Stop calling ``listener``; a listener never added is an error (ValueError)."""
        with self._lock:
            self._feedback.remove_window_listener(listener)

    def guard(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Decorate a plain function: each call takes a permit, and its exceptions are classified.

        ```python
        @gov.guard
        def upload(path: str) -> None: ...
        ```

        Raises:
            TypeError: For a coroutine function (guard it with the async
                `aiogovernor.Governor`) or a generator.
        """
        return guard_blocking(self, fn)

    def __repr__(self) -> str:
        return (
            f"<sync.Governor {self._name!r} env={self._environment!r} policy={self._policy.name} "
            f"limit={self._limit} inflight={self._inflight} waiting={len(self._waiters)}>"
        )

    # -- acquiring -------------------------------------------------------

    def __enter__(self) -> Permit:
        permit = self.acquire()
        permit._token = _current.set(permit)
        return permit

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        permit = _current.get()
        if permit is None or permit._governor is not self or permit._token is None:
            raise RuntimeError(f"{self!r} exited without a matching enter in this thread")
        _current.reset(permit._token)
        permit._token = None
        if permit._released:
            return
        outcome = permit._outcome
        if outcome is None:
            outcome = _OK if exc is None else self._classify_exc(exc)
        self._release(permit, outcome)

    def acquire(self, *, timeout_s: float | None = None) -> Permit:
        """Block until a permit is free; the caller must `Permit.release` it.

        Args:
            timeout_s: Give up after this many (real) seconds; None waits for ever.

        Raises:
            TimeoutError: When no permit came within ``timeout_s``.
        """
        if timeout_s is not None:
            check_float("timeout_s", timeout_s, low=0.0)
        if self._state_pending:
            self._load_state()
        with self._lock:
            if not self._waiters and self._inflight < self._limit and self._pass_time_gates():
                self._inflight += 1
                return self._new_permit()
        # Warned before queueing: a warning turned into an error must not leave a waiter behind.
        self._warn_nested()
        with self._lock:
            if not self._waiters and self._inflight < self._limit and self._pass_time_gates():
                self._inflight += 1
                return self._new_permit()
            waiter = _Waiter()
            self._waiters.append(waiter)
            self._saw_waiters = True
        try:
            got = waiter.lock.acquire(timeout=-1 if timeout_s is None else timeout_s)
        except BaseException:
            # Interrupted (KeyboardInterrupt in the main thread): leave no hole, keep no permit.
            with self._lock:
                if waiter.permit is None:
                    self._waiters.remove(waiter)
                else:
                    self._release(waiter.permit, Outcome.IGNORED)
            raise
        if not got:
            with self._lock:
                if waiter.permit is None:  # not granted as the wait ended: leave the queue
                    self._waiters.remove(waiter)
                    raise TimeoutError(f"no permit from {self!r} within {timeout_s}s")
        permit = waiter.permit
        assert permit is not None
        # The work starts when this thread runs again, not when the permit was handed over: on a
        # busy host a woken thread may wait for a core, and that wait is not the upstream's latency.
        permit._start = self._time()
        return permit

    def try_acquire(self) -> Permit | None:
        """A permit if one is free now (and no one is queued), else None; never blocks on the store."""
        with self._lock:
            if self._waiters or self._inflight >= self._limit or not self._pass_time_gates():
                return None
            self._inflight += 1
            return self._new_permit()

    def _now(self) -> float:
        """The gate's clock (`time.monotonic` unless one was injected)."""
        return self._time()

    def _new_permit(self) -> Permit:
        self._grants += 1
        inflight = self._inflight
        if inflight > self._peak_inflight:
            self._peak_inflight = inflight
        return Permit(self, self._time(), inflight, self._generation)

    def _warn_nested(self) -> None:
        held = _current.get()
        if held is not None and held._governor is self and not held._released and not self._warned_nested:
            self._warned_nested = True
            warnings.warn(
                f"{self!r}: a thread that holds one of its permits is queueing for another; if every "
                "permit is held this way, nothing is ever released",
                RuntimeWarning,
                stacklevel=3,
            )

    def _dispatch(self) -> None:
        """Hand free permits to waiters, in arrival order (under the lock)."""
        waiters = self._waiters
        while waiters and self._inflight < self._limit:
            if not self._pass_time_gates():
                return
            waiter = waiters.popleft()
            self._inflight += 1
            waiter.permit = self._new_permit()
            waiter.lock.release()

    # -- time gates: pause and rate ceiling --------------------------------

    def _pass_time_gates(self) -> bool:
        gates = self._gates
        return not gates.engaged or gates.admit(self._time())

    def pause(self, seconds: float) -> None:
        """Admit nothing new for ``seconds`` (capped at ``max_pause_s``); work in flight goes on."""
        check_float("seconds", seconds, low=0.0)
        with self._lock:
            self._gates.pause_until(self._time() + seconds, self._time())

    def pause_until(self, t: float) -> None:
        """Admit nothing new until clock time ``t`` (capped at ``max_pause_s`` from now)."""
        check_float("t", t)
        with self._lock:
            self._gates.pause_until(t, self._time())

    # -- releasing, sampling and deciding -----------------------------------

    def _classify_exc(self, exc: BaseException) -> Outcome:
        """The outcome of work that ended with ``exc``; an `OverloadError`'s Retry-After pauses."""
        outcome = classify_with(self._classify, exc, self._name)
        if isinstance(exc, OverloadError):
            seconds = retry_after_pause_s(exc, self._name, self._environment)
            if seconds is not None:
                self.pause(seconds)
        return outcome

    def _release(self, permit: PermitMarks, outcome: Outcome) -> None:
        with self._lock:
            if permit._released:
                raise RuntimeError("this permit was already released")
            permit._released = True
            permit._outcome = outcome
            if isinstance(permit, Permit) and permit._stray:
                return  # its thread still runs: the gate counts it until `_stray_done`
            self._account(permit, outcome)

    def _stray_done(self, permit: Permit) -> None:
        """A timed-out call's thread returned: now its permit comes back (under the lock)."""
        permit._stray = False
        if permit._released:
            self._account(permit, permit._outcome or Outcome.OVERLOAD)

    def _account(self, permit: PermitMarks, outcome: Outcome) -> None:
        """Give a permit back and fold in its sample (under the lock)."""
        self._inflight -= 1
        now = self._time()
        feedback = self._feedback
        if outcome is _OK:
            latency = now - permit._start
            self._ok_latencies.append(latency)
            if permit._size != 1.0:
                feedback.record_size(latency, permit._size)  # a batch: judged per unit of work
            if now >= self._close_at or len(self._ok_latencies) >= self._max_samples:
                if feedback.due(permit._start, now, self._limit):
                    self._close_window(now)
                self._close_at = feedback.close_at
        else:
            fresh = permit._generation == self._generation
            if feedback.sample(permit._start, now, outcome, fresh, self._limit, permit._size):
                self._close_window(now)
            self._close_at = feedback.close_at
        if self._waiters:
            self._dispatch()

    def _close_window(self, now: float) -> None:
        feedback = self._feedback
        decision = feedback.close(
            now, self._limit, peak_inflight=self._peak_inflight, saw_waiters=self._saw_waiters
        )
        self._close_at = feedback.close_at
        self._peak_inflight = self._inflight
        self._saw_waiters = bool(self._waiters)
        if decision.new_limit > decision.old_limit:
            self._dispatch()

    def _apply(self, decision: Decision) -> None:
        if decision.new_limit < self._limit:
            self._generation += 1  # work started before now cannot cause another decrease
        self._limit = decision.new_limit

    def reset_limit(self, limit: float, *, reason: str = "reset") -> None:
        """Set the limit by hand, clamped to the policy's bounds; recorded as a decision."""
        with self._lock:
            decision = self._feedback.reset(limit, reason, self._time(), self._limit)
            if decision.new_limit > decision.old_limit:
                self._dispatch()

    # -- learned state ---------------------------------------------------------

    def _load_state(self) -> None:
        persistence = self._persistence
        assert persistence is not None
        with self._load_lock:  # one loader; the others wait for it (never under the gate's lock)
            if self._state_pending:
                persistence.load_blocking()
                self._state_pending = not persistence.loaded

    def restore(self) -> LearnedState | None:
        """Load the learned state now (blocking), instead of on the first acquire; return what was restored.

        Loading happens once: later calls return the same state at no cost.

        Returns:
            The state the governor now starts from; None when persistence is
            off, nothing was saved yet, or the state is older than ``state_max_age_s``.
        """
        persistence = self._persistence
        if persistence is None:
            return None
        if self._state_pending:
            self._load_state()
        return persistence.restored

    def attach_chunker(self, chunker: Chunker | None) -> None:
        """Keep ``chunker``'s size with this governor's learned state; None detaches it.

        As `aiogovernor.Governor.attach_chunker`: a chunker with a
        ``reset(size)`` method starts from the learned size. Does nothing when
        persistence is off.
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

    def plot(self, path: str) -> None:
        """Draw what this governor did to the PNG file ``path`` (the ``plot`` extra, matplotlib).

        The same picture as `aiogovernor.Governor.plot`, from the decisions kept in `decisions`.
        """
        from aiogovernor._plot import Trace, draw

        trace = Trace()
        trace.add_decisions(self.decisions)
        draw(trace, path, title=f"{self._name} [{self._environment}]: {self._policy.name}")

    def close(self) -> None:
        """Save the learned state now (if anything changed); never raises for a store failure.

        ``with gov:`` takes a permit, so the governor's lifetime is
        ``with contextlib.closing(sync.Governor(...)) as gov:``. It stays
        usable after `close`.
        """
        if self._persistence is not None:
            self._persistence.flush_blocking()
