"""The jittered backoff between status polls: polls keep their own schedule, apart from `Retry`."""

from __future__ import annotations

import random

from aiogovernor._validate import check_float

__all__ = ["PollBackoff"]


class PollBackoff:
    """Delays between status polls: grow by ``factor`` up to ``max_s``, with jitter.

    Kept small and private on purpose: polling needs only this, and the
    library's retry policy lives elsewhere. "Equal jitter" (half fixed, half
    random) keeps a floor under each delay, so a poll is never fired at once,
    while spreading polls from trials that started together.
    """

    __slots__ = ("_current", "_factor", "_initial", "_max", "_rng")

    def __init__(
        self, *, initial_s: float, max_s: float, factor: float = 1.5, rng: random.Random | None = None
    ) -> None:
        self._initial = check_float("poll_interval_s", initial_s, low=0.0, low_open=True)
        self._max = check_float("max_poll_interval_s", max_s, low=self._initial)
        self._factor = check_float("factor", factor, low=1.0)
        self._rng = rng or random.Random()
        self._current = self._initial

    def next_s(self) -> float:
        """The next delay, in [current/2, current]; the base then grows."""
        base = self._current
        self._current = min(self._max, self._current * self._factor)
        return base / 2 + self._rng.uniform(0.0, base / 2)

    def reset(self) -> None:
        """Start again from the initial delay (the job changed state)."""
        self._current = self._initial
