"""Simulated upstreams: models of a server's response to concurrency."""

from __future__ import annotations

import asyncio
import random

from aiogovernor._classify import OverloadError
from aiogovernor._validate import check_float, check_int

__all__ = ["KneeUpstream"]


class KneeUpstream:
    """A server with ``capacity`` workers whose latency rises past the knee.

    Up to ``capacity`` requests at once each take ``service_time_s`` (times a
    little seeded jitter). Past the knee every request is slowed by
    contention, ``(busy / capacity) ** contention``, so with ``contention > 1``
    goodput *falls* as concurrency grows: the congestion-collapse shape that
    an error-only controller drives an upstream into. Past ``queue_limit``
    requests at once it refuses with `OverloadError` (a 503 with Retry-After).

    Call it from code under a governor, in virtual time (`run_virtual`).

    Args:
        capacity: Workers: the knee, where Little's law puts the best limit.
        service_time_s: Latency of one request below the knee.
        contention: Exponent of the slowdown past the knee, >= 1.
        queue_limit: Requests at once past which it answers overload;
            defaults to 4 × capacity.
        retry_after_s: The Retry-After it names when refusing (None for none).
        jitter: Relative spread of service times, in [0, 1).
        seed: Seeds the jitter, for reproducible runs.
    """

    def __init__(
        self,
        *,
        capacity: int,
        service_time_s: float,
        contention: float = 1.5,
        queue_limit: int | None = None,
        retry_after_s: float | None = None,
        jitter: float = 0.1,
        seed: int = 0,
    ) -> None:
        self.capacity = check_int("capacity", capacity, low=1)
        self.service_time_s = check_float("service_time_s", service_time_s, low=0.0, low_open=True)
        self.contention = check_float("contention", contention, low=1.0)
        self.queue_limit = check_int(
            "queue_limit", 4 * capacity if queue_limit is None else queue_limit, low=capacity
        )
        if retry_after_s is not None:
            check_float("retry_after_s", retry_after_s, low=0.0)
        self.retry_after_s = retry_after_s
        self.jitter = check_float("jitter", jitter, low=0.0, high=1.0, high_open=True)
        self._random = random.Random(seed)
        self.busy = 0
        self.completed = 0
        self.refused = 0

    def latency_at(self, busy: int) -> float:
        """The model's mean latency with ``busy`` requests in service."""
        return float(self.service_time_s * max(1.0, busy / self.capacity) ** self.contention)

    async def __call__(self) -> None:
        """Serve one request: sleep for the modelled latency, or refuse."""
        if self.busy >= self.queue_limit:
            self.refused += 1
            raise OverloadError("simulated upstream full", retry_after_s=self.retry_after_s)
        self.busy += 1
        try:
            spread = 1.0 + self.jitter * (2.0 * self._random.random() - 1.0)
            await asyncio.sleep(self.latency_at(self.busy) * spread)
            self.completed += 1
        finally:
            self.busy -= 1
