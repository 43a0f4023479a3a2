"""The jittered delays between status polls of one job: a schedule, not a retry.

Polling a job is not retrying a failed call: each poll is the next planned
look at a job that is still running, made whatever the last one said (even a
failed poll is followed by the next planned one). So polls keep their own
schedule, reset when the job changes state, instead of `Retry`'s attempts
and budget. The growth and its cap are `Retry`'s (`Retry.backoff_ceiling_s`);
only the jitter differs, on purpose (see `PollBackoff`).
"""

from __future__ import annotations

import random

from aiogovernor._retry import Retry
from aiogovernor._validate import check_float

__all__ = ["PollBackoff"]


class PollBackoff:
    """Delays between status polls: grow by ``factor`` up to ``max_s``, with jitter.

    "Equal jitter" (half the ceiling fixed, half drawn at random) keeps a floor
    under each delay, so a poll is never fired at once after the last one,
    while spreading the polls of trials that started together. `Retry`'s full
    jitter may draw zero, which suits a retry but would turn polling into a
    busy loop.
    """

    __slots__ = ("_polls", "_rng", "_schedule")

    def __init__(
        self, *, initial_s: float, max_s: float, factor: float = 1.5, rng: random.Random | None = None
    ) -> None:
        initial_s = check_float("poll_interval_s", initial_s, low=0.0, low_open=True)
        max_s = check_float("max_poll_interval_s", max_s, low=initial_s)
        factor = check_float("factor", factor, low=1.0)
        self._schedule = Retry(base_delay_s=initial_s, max_delay_s=max_s, multiplier=factor)
        self._rng = rng or random.Random()
        self._polls = 1

    def next_s(self) -> float:
        """The next delay, in [ceiling/2, ceiling]; the ceiling then grows."""
        base = self._schedule.backoff_ceiling_s(self._polls)
        self._polls += 1
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def reset(self) -> None:
        """Start again from the initial delay (the job changed state)."""
        self._polls = 1
