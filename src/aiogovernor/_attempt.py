"""The one attempt loop: permit → call → classify → Retry-After → release → backoff.

Every caller that retries under a governor (the maps, the httpx transport,
the uploader, dispatch's submits, polls, cancels and endpoint failover) runs
this loop, so that the rules hold in one place:

- each attempt takes its own permit and is its own sample;
- the outcome comes from one classifier (a hook), the permit goes back with
  it before anything else can raise, and a retry waits holding no permit;
- an upstream's Retry-After (read by a hook, only after an ``overload``)
  pauses the governor for the same time the retry waits, and both go
  through `Retry.delay_s`: the only cap and the only jitter;
- the retry budget is charged last, so a retry the policy refuses anyway
  spends nothing.

One `Attempts` object is made per map, transport or upload run (it holds the
shared budget and the jitter source); `Attempts.run` drives one unit of work.
Integrations adapt it by overriding its hooks (the shape of stamina's
``retry_context``: one loop behind every form):

```python
class HTTPAttempts(Attempts[httpx.Response]):
    def classify(self, governor, result):   # a response or an exception
        return classify_http(result)
    def retry_after_s(self, result):
        return retry_after_s(result) if isinstance(result, httpx.Response) else None

attempts = HTTPAttempts(retry=Retry(attempts=3), rng=random.Random(seed))
response = await attempts.run(governor, lambda permit, attempt: send(request))
```
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from ._governor import Governor, Permit
from ._permit import PermitMarks
from ._retry import Retry, RetryBudget
from ._samples import Outcome

__all__ = ["Attempts", "Gate", "retry_after_of"]

T = TypeVar("T")

# Caps and jitters a Retry-After pause when the caller gave no retry policy:
# Retry's defaults (60 s at most, up to 10 % longer).
_PAUSE_ONLY = Retry(attempts=1)

_OVERLOAD = Outcome.OVERLOAD


class Gate(Protocol):
    """What the loop's decisions need of a gate: the async `Governor` or the thread gate."""

    def pause(self, seconds: float) -> None: ...

    def _classify_exc(self, exc: BaseException) -> Outcome: ...


class _BlockingGate(Gate, Protocol):
    def acquire(self, *, timeout_s: float | None = None) -> Any: ...


_GIVE_UP = object()  # an attempt's exception ends the unit of work


def retry_after_of(exc: BaseException) -> float | None:
    """The Retry-After an exception carries (`OverloadError` and look-alikes), if it is usable.

    Reads a ``retry_after_s`` attribute: a finite number of seconds >= 0, else None.
    """
    value = getattr(exc, "retry_after_s", None)
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= 0:
        return float(value)
    return None


class Attempts(Generic[T]):
    """How one kind of call is attempted under a governor: retry policy, budget, jitter, hooks.

    Args:
        retry: Which outcomes get another attempt, and how long to wait;
            None makes one attempt (a Retry-After still pauses the governor,
            capped and jittered by `Retry`'s defaults).
        budget: Shared by every unit of work run through this object; None
            makes a fresh one from ``retry`` (`Retry.new_budget`; a policy
            with ``budget_ratio=None`` has none).
        rng: The jitter source (seed it for reproducible schedules); None
            makes an unseeded one.

    The hooks below say what a result means; override them to adapt the loop
    to a kind of call. They must not raise, except `choose`, `acquire`, `close` and `wait`.
    """

    __slots__ = ("budget", "retry", "rng")

    permit_outcome = False
    """Record the outcome the call set on its permit (`Permit.overload`, `Permit.error`, ...), when it
    set one, instead of `sample`'s (the way ``async with governor`` treats it); False records `sample`'s.
    The classified outcome still decides the pause and the retry."""

    scoped = False
    """Take each permit with ``async with governor`` (the task knows it holds it); False for
    `Governor.acquire`, which a permit handed to a value that outlives the attempt needs."""

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        budget: RetryBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.retry = retry
        if budget is None and retry is not None:
            budget = retry.new_budget()
        self.budget = budget
        self.rng = rng if rng is not None else random.Random()

    # -- hooks -----------------------------------------------------------

    # The hooks' ``governor`` is the gate the loop runs on: the async `Governor`, or a thread
    # gate (`Gate`) under `run_blocking`. Typed Any so that an integration bound to one kind of
    # gate may say which.
    def classify(self, governor: Any, result: T | BaseException) -> Outcome:
        """The outcome of one attempt: the governor's classifier for an exception, ``ok`` for a value."""
        if isinstance(result, BaseException):
            # The governor's own classifier (a named seam of the gate, shared with `async with`).
            gate: Gate = governor
            return gate._classify_exc(result)
        return Outcome.OK

    def retry_after_s(self, result: T | BaseException) -> float | None:
        """Seconds the upstream asked to wait (asked only after an ``overload``); None if it said nothing.

        By default an exception's ``retry_after_s`` (see `retry_after_of`).
        """
        return retry_after_of(result) if isinstance(result, BaseException) else None

    def retryable(self, result: T | BaseException) -> bool:
        """Whether this result may be attempted again at all (a one-shot body may not); True by default."""
        return True

    def sample(self, governor: Any, result: T | BaseException, outcome: Outcome) -> Outcome:
        """The outcome this attempt's permit records; by default the classified one.

        The classified outcome still decides the pause and the retry; an
        override may soften what the governor samples (a burst of 429s counted
        as one congestion event: the later ones ``ignored``).
        """
        return outcome

    async def choose(self, governor: Governor, attempt: int) -> Governor:
        """The governor for attempt ``attempt``, asked before its permit is taken; ``governor`` by default.

        An override may pick another (failover across endpoints), wait for one,
        or raise to end the unit of work holding no permit.
        """
        return governor

    async def acquire(self, governor: Governor) -> Permit:
        """Take the permit for an attempt when `scoped` is False; by default `Governor.acquire`.

        An override may bound the wait (a deadline), raising what the caller should see.
        """
        return await governor.acquire()

    def keep(self, value: T, permit: Any, outcome: Outcome) -> None:  # either gate's permit
        """The last attempt returned ``value``: release its permit (or tie it to the value's lifetime)."""
        permit.release(outcome)

    async def close(self, value: T, *, drain: bool) -> None:
        """Let go of a value that is not returned; nothing by default.

        Called before a retry with ``drain`` true (the permit still held, so
        a connection can be read clean and reused), or after a failure.
        """

    async def wait(self, delay_s: float) -> None:
        """Wait ``delay_s`` before the next attempt, holding no permit."""
        # anyio is loaded on first use: `import aiogovernor` must not pull it in (see the public API test).
        import anyio

        await anyio.sleep(delay_s)

    def close_blocking(self, value: T) -> None:
        """`run_blocking`'s `close`: let go of a value about to be retried (its permit still held)."""

    def wait_blocking(self, delay_s: float) -> None:
        """`run_blocking`'s `wait`: block this thread ``delay_s``, holding no permit."""
        time.sleep(delay_s)

    # -- the loop --------------------------------------------------------

    async def run(
        self,
        governor: Governor,
        call: Callable[[Permit, int], Awaitable[T]],
        *,
        permit: Permit | None = None,
        attempt: int = 1,
        once: bool = False,
        counted: bool = False,
    ) -> T:
        """Attempt one unit of work until it succeeds, the policy gives up, or the budget refuses.

        Args:
            governor: Grants a permit per attempt.
            call: Makes one attempt, given its permit and its number (from 1).
            permit: A permit already held for the first attempt (taken before
                the unit of work was chosen); None takes one.
            attempt: The number of the first attempt here (above 1 continues
                a unit of work whose earlier attempts ran elsewhere).
            once: Make one attempt whatever the policy says (a request body
                that cannot be sent twice); the budget counts the request
                and a Retry-After still pauses the governor.
            counted: The budget already counted this unit of work (a run
                resumed after an attempt that did not count).

        Returns:
            The last attempt's value (its permit handed to `keep`).

        Raises:
            BaseException: The last attempt's exception, its permit released.
        """
        budget = self.budget
        if budget is not None and not counted:
            budget.record_request()
        while True:
            if permit is None:
                governor = await self.choose(governor, attempt)
            if permit is None and self.scoped:
                # Taken the way `async with governor` users take theirs: the task knows it holds
                # it (the gate warns when a mapped function queues on its own governor).
                async with governor as permit:
                    done, value, delay_s = await self._attempt(governor, permit, call, attempt, once)
            else:
                if permit is None:
                    permit = await self.acquire(governor)
                done, value, delay_s = await self._attempt(governor, permit, call, attempt, once)
            if done:
                return value  # type: ignore[return-value]
            permit = None
            assert self.retry is not None  # only a retry policy says "again"
            await self.wait(delay_s if delay_s is not None else self.retry.backoff_s(attempt, rng=self.rng))
            attempt += 1

    async def _attempt(
        self,
        governor: Governor,
        permit: Permit,
        call: Callable[[Permit, int], Awaitable[T]],
        attempt: int,
        once: bool,
    ) -> tuple[bool, T | None, float | None]:
        """One attempt: (done, its value, the wait before the next); raises what ends the unit."""
        try:
            value = await call(permit, attempt)
        except BaseException as exc:
            delay_s = self._failed(governor, permit, exc, attempt, once)
            if delay_s is _GIVE_UP:
                raise
            return False, None, delay_s  # type: ignore[return-value]
        try:
            done, outcome, delay_s = self._returned(governor, permit, value, attempt, once)
            if done:
                return True, value, None
            await self.close(value, drain=True)
        except BaseException as exc:
            if not permit.released:
                permit.release(Outcome.ERROR if isinstance(exc, Exception) else Outcome.IGNORED)
            await self.close(value, drain=False)
            raise
        permit.release(outcome)  # what `sample` said to record
        return False, None, delay_s

    def _recorded(self, permit: PermitMarks, sampled: Outcome) -> Outcome:
        """The outcome the permit goes back with: the call's own (with `permit_outcome`), else ``sampled``."""
        if self.permit_outcome and permit.outcome is not None:
            return permit.outcome
        return sampled

    # -- the decisions both drivers share (no await in them) ----------------

    def _failed(
        self, governor: Gate, permit: PermitMarks, exc: BaseException, attempt: int, once: bool
    ) -> float | object | None:
        """An attempt raised: classify, pause, release; the wait before a retry, or `_GIVE_UP`."""
        outcome = recorded = Outcome.ERROR if isinstance(exc, Exception) else Outcome.IGNORED
        delay_s = None
        try:
            outcome = recorded = self.classify(governor, exc)
            delay_s = self._pause(governor, attempt, exc, outcome)
            recorded = self._recorded(permit, self.sample(governor, exc, outcome))
        finally:
            # The permit comes back whatever the hooks did (the call may have released it).
            if not permit.released:
                permit.release(recorded)
        if once or not isinstance(exc, Exception) or not self._again(attempt, exc, outcome):
            return _GIVE_UP
        return delay_s

    def _returned(
        self, governor: Gate, permit: PermitMarks, value: T, attempt: int, once: bool
    ) -> tuple[bool, Outcome, float | None]:
        """An attempt returned: (kept, the outcome its permit records, the wait before a retry).

        A kept value's permit is handed to `keep`; a value to retry still holds
        its permit (closed, then released with that outcome, by the caller).
        """
        outcome = self.classify(governor, value)
        delay_s = self._pause(governor, attempt, value, outcome)
        recorded = self._recorded(permit, self.sample(governor, value, outcome))
        if once or not self._again(attempt, value, outcome):
            self.keep(value, permit, recorded)
            return True, recorded, None
        return False, recorded, delay_s

    def run_blocking(
        self,
        governor: _BlockingGate,
        call: Callable[[Any, int], T],
        *,
        attempt: int = 1,
        timeout_s: float | None = None,
        once: bool = False,
    ) -> T:
        """`run` for a thread gate and a blocking ``call``: the same decisions, waits that block.

        Values are not closed before a retry (a plain function's result holds
        no connection); `wait_blocking` waits out the backoff.

        Args:
            governor: A thread gate (`aiogovernor.sync.Governor`).
            call: Makes one attempt, given its permit and its number (from 1).
            attempt: The number of the first attempt.
            timeout_s: How long each attempt may wait for its permit (None: for ever).
            once: Make one attempt whatever the policy says (a body that cannot be sent twice).
        """
        budget = self.budget
        if budget is not None:
            budget.record_request()
        while True:
            permit = governor.acquire(timeout_s=timeout_s)
            try:
                value = call(permit, attempt)
            except BaseException as exc:
                delay_s = self._failed(governor, permit, exc, attempt, once)
                if delay_s is _GIVE_UP:
                    raise
            else:
                try:
                    done, outcome, delay_s = self._returned(governor, permit, value, attempt, once)
                    if not done:
                        self.close_blocking(value)
                except BaseException as exc:
                    if not permit.released:
                        permit.release(Outcome.ERROR if isinstance(exc, Exception) else Outcome.IGNORED)
                    raise
                if done:
                    return value
                permit.release(outcome)
            assert self.retry is not None  # only a retry policy says "again"
            self.wait_blocking(
                delay_s if isinstance(delay_s, float) else self.retry.backoff_s(attempt, rng=self.rng)
            )
            attempt += 1

    def _pause(
        self, governor: Gate, attempt: int, result: T | BaseException, outcome: Outcome
    ) -> float | None:
        """Honour a Retry-After on an overload: pause the governor; return the (capped, jittered) wait."""
        if outcome is not _OVERLOAD:
            return None
        asked = self.retry_after_s(result)
        if asked is None:
            return None
        delay_s = (self.retry or _PAUSE_ONLY).delay_s(attempt, rng=self.rng, retry_after_s=asked)
        governor.pause(delay_s)
        return delay_s

    def _again(self, attempt: int, result: T | BaseException, outcome: Outcome) -> bool:
        retry = self.retry
        if retry is None or not retry.should_retry(attempt, outcome) or not self.retryable(result):
            return False
        budget = self.budget
        return budget is None or budget.try_spend()
