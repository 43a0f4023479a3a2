"""`CircuitBreaker`: closed → open after consecutive failures → half-open probes → closed."""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable

from aiogovernor._clock import Clock, loop_time
from aiogovernor._validate import check_float, check_int

__all__ = ["BreakerState", "CircuitBreaker"]

logger = logging.getLogger("aiogovernor.dispatch")


class BreakerState(enum.StrEnum):
    """Where a circuit breaker stands."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Stops sending work to an endpoint that keeps failing, and probes it back.

    A pure state machine over an injected clock, with no event loop in it:

    - **closed**: every call is allowed; ``failure_threshold`` failures in a
      row open the breaker (a success resets the count);
    - **open**: nothing is allowed until ``reset_timeout_s`` has passed;
    - **half-open**: up to ``half_open_max_calls`` probe calls are allowed at
      once; a probe's success closes the breaker, its failure opens it again.

    Each allowed call must end in `record_success`, `record_failure` or
    `record_ignored` (a call cancelled by its caller says nothing about the
    endpoint, but frees its probe slot).

    Args:
        failure_threshold: Consecutive failures that open the breaker, >= 1.
        reset_timeout_s: How long it stays open before probing, > 0.
        half_open_max_calls: Probes allowed at once while half-open, >= 1.
        clock: Seconds as a float; defaults to the running event loop's time.
        name: For logs and the repr.
        on_change: Called with ``(old, new)`` on every transition.
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        reset_timeout_s: float = 30.0,
        half_open_max_calls: int = 1,
        clock: Clock | None = None,
        name: str = "breaker",
        on_change: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self._threshold = check_int("failure_threshold", failure_threshold, low=1)
        self._reset_timeout_s = check_float("reset_timeout_s", reset_timeout_s, low=0.0, low_open=True)
        self._half_open_max = check_int("half_open_max_calls", half_open_max_calls, low=1)
        if clock is not None and not callable(clock):
            raise TypeError(f"clock must be a zero-argument callable returning seconds, got {clock!r}")
        if on_change is not None and not callable(on_change):
            raise TypeError(f"on_change must be callable, got {on_change!r}")
        self._clock: Clock = clock or loop_time
        self._name = name
        self._on_change = on_change
        self._state = BreakerState.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._probes = 0
        self._times_opened = 0

    @property
    def state(self) -> BreakerState:
        """The current state; an open breaker whose timeout has passed reads as half-open."""
        if self._state is BreakerState.OPEN and self._clock() >= self._opened_at + self._reset_timeout_s:
            self._move(BreakerState.HALF_OPEN)
            self._probes = 0
        return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures in a row since the last success."""
        return self._failures

    @property
    def times_opened(self) -> int:
        """How often the breaker has opened."""
        return self._times_opened

    def retry_in_s(self) -> float:
        """Seconds until an open breaker lets a probe through; 0 when calls are allowed."""
        if self.state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self._reset_timeout_s - self._clock())

    def available(self) -> bool:
        """Whether `allow` would let a call through now, without taking a probe slot."""
        state = self.state
        return state is BreakerState.CLOSED or (
            state is BreakerState.HALF_OPEN and self._probes < self._half_open_max
        )

    def allow(self) -> bool:
        """Let one call through if the state permits; a half-open breaker counts it as a probe."""
        state = self.state
        if state is BreakerState.CLOSED:
            return True
        if state is BreakerState.HALF_OPEN and self._probes < self._half_open_max:
            self._probes += 1
            return True
        return False

    def record_success(self) -> None:
        """A call went well: reset the failure count; a half-open breaker closes."""
        self._failures = 0
        if self._state is BreakerState.HALF_OPEN:
            self._probes = 0
            self._move(BreakerState.CLOSED)

    def record_failure(self) -> None:
        """A call failed: count it; open when the count reaches the threshold, or a probe failed."""
        self._failures += 1
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self._failures >= self._threshold
        ):
            self._open()

    def record_ignored(self) -> None:
        """A call ended saying nothing about the endpoint (cancelled): free its probe slot."""
        if self._state is BreakerState.HALF_OPEN and self._probes:
            self._probes -= 1

    def _open(self) -> None:
        self._opened_at = self._clock()
        self._probes = 0
        self._times_opened += 1
        self._move(BreakerState.OPEN)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if old is new:
            return
        logger.info("circuit breaker %s: %s -> %s", self._name, old.value, new.value)
        if self._on_change is not None:
            self._on_change(old, new)

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self._name!r} {self._state.value} failures={self._failures}>"
