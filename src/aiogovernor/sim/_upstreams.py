"""Simulated upstreams: models of a server's response to concurrency."""

from __future__ import annotations

import asyncio
import math
import random

from aiogovernor._classify import OverloadError
from aiogovernor._validate import check_float, check_int

__all__ = ["KneeUpstream", "UpstreamError", "WallUpstream"]


class UpstreamError(Exception):
    """A simulated failure unrelated to load (a 500 from a bug): classified as ``error``."""


class KneeUpstream:
    """A server with ``capacity`` workers whose latency rises past the knee.

    Up to ``capacity`` requests at once each take ``service_time_s`` (times a
    little seeded jitter, or a lognormal factor with ``tail_sigma``). Past the
    knee every request is slowed by contention, ``(busy / capacity) **
    contention``, so with ``contention > 1`` goodput *falls* as concurrency
    grows: the congestion-collapse shape that an error-only controller drives
    an upstream into. Past ``queue_limit`` requests at once it refuses with
    `OverloadError` (a 503 with Retry-After).

    ``capacity`` may be changed while it runs (the capacity-shift model); the
    queue bound keeps its ratio to it unless it was given explicitly.

    Call it from code under a governor, in virtual time (`run_virtual`).

    Args:
        capacity: Workers: the knee, where Little's law puts the best limit.
        service_time_s: Latency of one request below the knee (the median,
            with ``tail_sigma``).
        contention: Exponent of the slowdown past the knee, >= 1.
        queue_limit: Requests at once past which it answers overload;
            defaults to 4 × capacity.
        retry_after_s: The Retry-After it names when refusing (None for none).
        jitter: Relative spread of service times, in [0, 1) (uniform).
        tail_sigma: When > 0, service times are lognormal with this sigma
            instead of uniformly jittered: a heavy tail (p99 ≈ p50 × e^(2.33σ)).
        error_rate: Fraction of requests that fail with `UpstreamError` after
            being served, whatever the load, in [0, 1).
        seed: Seeds the randomness, for reproducible runs.
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
        tail_sigma: float = 0.0,
        error_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        self._capacity = check_int("capacity", capacity, low=1)
        self.service_time_s = check_float("service_time_s", service_time_s, low=0.0, low_open=True)
        self.contention = check_float("contention", contention, low=1.0)
        self._queue_ratio: float | None = 4.0 if queue_limit is None else None
        self.queue_limit = check_int(
            "queue_limit", 4 * capacity if queue_limit is None else queue_limit, low=capacity
        )
        if retry_after_s is not None:
            check_float("retry_after_s", retry_after_s, low=0.0)
        self.retry_after_s = retry_after_s
        self.jitter = check_float("jitter", jitter, low=0.0, high=1.0, high_open=True)
        self.tail_sigma = check_float("tail_sigma", tail_sigma, low=0.0)
        self.error_rate = check_float("error_rate", error_rate, low=0.0, high=1.0, high_open=True)
        self._random = random.Random(seed)
        self.busy = 0
        self.completed = 0
        self.refused = 0
        self.failed = 0

    @property
    def capacity(self) -> int:
        """Workers: the knee. Settable while the upstream runs."""
        return self._capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._capacity = check_int("capacity", value, low=1)
        if self._queue_ratio is not None:
            self.queue_limit = math.ceil(self._queue_ratio * value)

    def latency_at(self, busy: int) -> float:
        """The model's latency (median, before jitter) with ``busy`` requests in service."""
        return float(self.service_time_s * max(1.0, busy / self._capacity) ** self.contention)

    def _spread(self) -> float:
        if self.tail_sigma:
            return math.exp(self.tail_sigma * self._random.gauss(0.0, 1.0))
        return 1.0 + self.jitter * (2.0 * self._random.random() - 1.0)

    async def __call__(self) -> None:
        """Serve one request: sleep for the modelled latency, or refuse, or fail."""
        if self.busy >= self.queue_limit:
            self.refused += 1
            raise OverloadError("simulated upstream full", retry_after_s=self.retry_after_s)
        self.busy += 1
        try:
            await asyncio.sleep(self.latency_at(self.busy) * self._spread())
        finally:
            self.busy -= 1
        if self.error_rate and self._random.random() < self.error_rate:
            self.failed += 1
            raise UpstreamError("simulated failure unrelated to load")
        self.completed += 1


class WallUpstream(KneeUpstream):
    """A rate-limited API: flat latency up to ``capacity``, then 429 with no warning.

    Latency says nothing about how close the wall is; only refusals do. By
    default the refusal names no Retry-After (many APIs do not).

    Args:
        capacity: Requests at once it serves; one more is refused.
        service_time_s: Latency of one request.
        retry_after_s: The Retry-After it names when refusing (None for none).
        jitter: Relative spread of service times, in [0, 1).
        error_rate: Fraction of requests that fail for reasons unrelated to load.
        seed: Seeds the randomness.
    """

    def __init__(
        self,
        *,
        capacity: int,
        service_time_s: float,
        retry_after_s: float | None = None,
        jitter: float = 0.1,
        error_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__(
            capacity=capacity,
            service_time_s=service_time_s,
            contention=1.0,
            queue_limit=capacity,
            retry_after_s=retry_after_s,
            jitter=jitter,
            error_rate=error_rate,
            seed=seed,
        )
        self._queue_ratio = 1.0
