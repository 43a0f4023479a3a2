"""Retries that respect the governor: backoff with full jitter, a retry budget, Retry-After.

Three pieces, each usable on its own (`governed_map` and the httpx transport
both build on them):

- `Retry`: a frozen, validated policy. It says how many attempts a unit of
  work gets, which outcomes are worth retrying, and how long to wait before
  attempt ``n + 1`` (`Retry.delay_s`): the upstream's Retry-After when it gave
  one (capped at ``max_retry_after_s``), else exponential backoff with full
  jitter drawn from a `random.Random` the caller injects.
- `RetryBudget`: a token bucket that lets retries add at most a fraction of
  the first attempts to the load (plus a small reserve), so that a failing
  upstream is not buried under retries. One budget is shared by every call
  that should count together (one map, one transport).
- `parse_retry_after`: the value of an HTTP ``Retry-After`` header, in
  delta-seconds or HTTP-date form, as seconds to wait, or None when there is
  nothing usable in it (then fall back to backoff).

A caller's retry loop, in outline:

```python
budget = retry.new_budget()
rng = random.Random()
attempt = 1
budget.record_request()
while True:
    outcome, retry_after_s = await one_attempt()   # its own permit, its own sample
    if not retry.should_retry(attempt, outcome) or not budget.try_spend():
        break
    await sleep(retry.delay_s(attempt, rng=rng, retry_after_s=retry_after_s))
    attempt += 1
```

The permit is released before the sleep: a retry waiting out its backoff
holds no concurrency.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from ._samples import Outcome
from ._validate import check_float, check_int

__all__ = ["Retry", "RetryBudget", "parse_retry_after"]

# ASCII digits only (``re.ASCII``): RFC 9110's DIGIT is %x30-39, while ``\d`` and
# ``float()`` would also read other scripts' digits ("١٢٠" as 120).
_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?", re.ASCII)


@dataclass(frozen=True, slots=True, kw_only=True)
class Retry:
    """How a unit of work is retried: attempts, backoff with full jitter, budget, Retry-After.

    Frozen and validated at construction; share one instance freely.

    The wait before attempt ``n + 1`` after a failed attempt ``n`` is the
    upstream's Retry-After when it named one (capped at ``max_retry_after_s``),
    else a uniform draw from ``[0, min(max_delay_s, base_delay_s *
    multiplier ** (n - 1))]`` ("full jitter": spreads the retries of many
    callers that failed together, instead of syncing them into waves).

    Args:
        attempts: Attempts in all, the first included (1 means no retry).
        base_delay_s: Backoff ceiling after the first failed attempt.
        max_delay_s: The backoff ceiling never exceeds this.
        multiplier: How much the ceiling grows per failed attempt (>= 1).
        retry_on: Outcomes worth retrying. By default only ``overload``
            (429, 503, timeouts, `OverloadError`): retrying a plain ``error``
            (a bug, a bad request) rarely helps.
        budget_ratio: Retries may add at most this fraction of first attempts
            (0.2: one retry per five requests, long run); None for no budget.
        budget_reserve: Retries allowed before any request paid for them, and
            the most the budget can save up (lets a short burst retry).
        max_retry_after_s: A Retry-After longer than this is cut to it.
        retry_after_jitter: A Retry-After wait is lengthened by up to this
            fraction of itself, at random, so that callers told the same time
            do not all come back at once (0 waits exactly as told).

    Raises:
        ValueError: For out-of-range values (naming the parameter), or
            ``max_delay_s < base_delay_s``.
        TypeError: If ``retry_on`` holds something other than outcomes.
    """

    attempts: int = 3
    base_delay_s: float = 0.1
    max_delay_s: float = 10.0
    multiplier: float = 2.0
    retry_on: frozenset[Outcome] = field(default_factory=lambda: frozenset({Outcome.OVERLOAD}))
    budget_ratio: float | None = 0.2
    budget_reserve: int = 10
    max_retry_after_s: float = 60.0
    retry_after_jitter: float = 0.1

    def __post_init__(self) -> None:
        check_int("attempts", self.attempts, low=1)
        check_float("base_delay_s", self.base_delay_s, low=0.0)
        check_float("max_delay_s", self.max_delay_s, low=0.0)
        if self.max_delay_s < self.base_delay_s:
            raise ValueError(
                f"max_delay_s ({self.max_delay_s}) must not be less than base_delay_s ({self.base_delay_s})"
            )
        check_float("multiplier", self.multiplier, low=1.0)
        if self.budget_ratio is not None:
            check_float("budget_ratio", self.budget_ratio, low=0.0)
        check_int("budget_reserve", self.budget_reserve, low=0)
        check_float("max_retry_after_s", self.max_retry_after_s, low=0.0)
        check_float("retry_after_jitter", self.retry_after_jitter, low=0.0, high=1.0)
        retry_on: object = self.retry_on
        if isinstance(retry_on, str) or not all(isinstance(o, Outcome) for o in self.retry_on):
            raise TypeError(f"retry_on must be a collection of Outcome, got {self.retry_on!r}")
        # Accept any collection of outcomes, keep a hashable frozenset.
        object.__setattr__(self, "retry_on", frozenset(self.retry_on))

    def should_retry(self, attempt: int, outcome: Outcome) -> bool:
        """Whether attempt ``attempt`` (1-based), which ended in ``outcome``, gets another try.

        True when attempts remain and the outcome is one of ``retry_on``. The
        budget is checked separately (`RetryBudget.try_spend`), last, so that
        a retry the policy refuses anyway spends nothing.
        """
        return attempt < self.attempts and outcome in self.retry_on

    def backoff_s(self, attempt: int, *, rng: random.Random) -> float:
        """The full-jitter backoff after failed attempt ``attempt`` (1-based).

        Args:
            attempt: The attempt that just failed, from 1.
            rng: The source of jitter; seed it for reproducible schedules.

        Returns:
            A uniform draw from ``[0, min(max_delay_s, base_delay_s * multiplier ** (attempt - 1))]``.
        """
        return rng.uniform(0.0, self.backoff_ceiling_s(attempt))

    def backoff_ceiling_s(self, attempt: int) -> float:
        """The most `backoff_s` can draw after failed attempt ``attempt`` (1-based).

        ``min(max_delay_s, base_delay_s * multiplier ** (attempt - 1))``: the one
        growth-and-cap computation, shared with schedules that jitter differently.
        """
        check_int("attempt", attempt, low=1)
        if self.base_delay_s == 0.0:
            return 0.0  # and no power of the multiplier to overflow
        # The exponent is bounded so that a large attempt number cannot overflow.
        steps = attempt - 1
        if self.multiplier > 1.0 and self.base_delay_s > 0.0:
            steps = min(steps, math.ceil(math.log(self.max_delay_s / self.base_delay_s, self.multiplier)) + 1)
        return min(self.max_delay_s, self.base_delay_s * self.multiplier**steps)

    def delay_s(self, attempt: int, *, rng: random.Random, retry_after_s: float | None = None) -> float:
        """How long to wait after failed attempt ``attempt`` before the next one.

        Args:
            attempt: The attempt that just failed, from 1.
            rng: The source of jitter for the backoff.
            retry_after_s: What the upstream asked for (see `parse_retry_after`);
                None when it said nothing usable.

        Returns:
            ``retry_after_s`` capped at ``max_retry_after_s`` and lengthened by
            up to ``retry_after_jitter`` of itself when given, else `backoff_s`.
        """
        if retry_after_s is not None:
            check_float("retry_after_s", retry_after_s, low=0.0)
            asked = min(retry_after_s, self.max_retry_after_s)
            return (
                asked * (1.0 + self.retry_after_jitter * rng.random()) if self.retry_after_jitter else asked
            )
        return self.backoff_s(attempt, rng=rng)

    def new_budget(self) -> RetryBudget | None:
        """A fresh `RetryBudget` with this policy's ratio and reserve; None if ``budget_ratio`` is None."""
        if self.budget_ratio is None:
            return None
        return RetryBudget(ratio=self.budget_ratio, reserve=self.budget_reserve)


class RetryBudget:
    """A token bucket that keeps retries to a fraction of requests.

    Every first attempt deposits ``ratio`` tokens (`record_request`); every
    retry takes one whole token (`try_spend`) or is refused. The bucket starts
    full with ``reserve`` tokens and never holds more, so in the long run
    retries are at most ``ratio`` × requests, plus one burst of ``reserve``.
    Share one budget across every call that should be counted together (a
    map, a client's transport); it holds no clock and no event loop.

    Args:
        ratio: Tokens one request deposits: the fraction of requests that may
            be retried in the long run.
        reserve: The bucket's size, and its content at the start.
    """

    __slots__ = ("_balance", "_ratio", "_reserve", "refused", "requests", "retries")

    def __init__(self, *, ratio: float = 0.2, reserve: int = 10) -> None:
        self._ratio = check_float("ratio", ratio, low=0.0)
        self._reserve = check_int("reserve", reserve, low=0)
        self._balance = float(reserve)
        self.requests = 0
        """First attempts recorded."""
        self.retries = 0
        """Retries the budget allowed."""
        self.refused = 0
        """Retries the budget refused."""

    @property
    def ratio(self) -> float:
        """Tokens one request deposits."""
        return self._ratio

    @property
    def reserve(self) -> int:
        """The bucket's size."""
        return self._reserve

    @property
    def balance(self) -> float:
        """Tokens available now: how many retries may go at once."""
        return self._balance

    def record_request(self) -> None:
        """Count one first attempt: deposit ``ratio`` tokens (up to ``reserve``, at least 1 in all)."""
        self.requests += 1
        # A reserve of 0 with ratio 0.5 must still allow one retry per two requests.
        self._balance = min(max(float(self._reserve), 1.0), self._balance + self._ratio)

    def try_spend(self) -> bool:
        """Take one token for a retry; False (and counted as refused) when there is none."""
        # A small tolerance: 5 deposits of 0.2 must make one whole token.
        if self._balance >= 1.0 - 1e-9:
            self._balance = max(0.0, self._balance - 1.0)
            self.retries += 1
            return True
        self.refused += 1
        return False

    def __repr__(self) -> str:
        return (
            f"RetryBudget(ratio={self._ratio}, reserve={self._reserve}, balance={self._balance:.2f}, "
            f"requests={self.requests}, retries={self.retries}, refused={self.refused})"
        )


def parse_retry_after(value: str | bytes | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from an HTTP ``Retry-After`` header value, or None if it says nothing usable.

    Both forms of RFC 9110 are understood: delta-seconds (``"120"``; a
    decimal fraction such as ``"1.5"`` is tolerated) and an HTTP-date
    (``"Wed, 21 Oct 2015 07:28:00 GMT"``). Only ASCII digits count: a value
    in another script's digits (``"١٢٠"``) is garbage, not 120. The result is not capped: the
    caller caps it (`Retry.delay_s` does, at ``max_retry_after_s``).

    Args:
        value: The header's value; None or bytes are accepted.
        now: The current wall-clock time for the HTTP-date form (an aware
            datetime; a naive one is taken as UTC). Defaults to now, in UTC.

    Returns:
        Seconds >= 0 to wait, or None when the value is missing, garbage,
        negative, not finite, or a date that is not in the future: None
        means "fall back to backoff".
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")  # every byte decodes: garbage is caught below
    text = value.strip()
    if not text or not text.isascii():
        # The grammar is ASCII; the date parser, like int(), would read other digits.
        return None
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    # A date that has passed gives no instruction: the caller backs off as usual.
    return seconds if seconds > 0 else None
