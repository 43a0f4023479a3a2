"""Models of real servers' noise: worker pools with a backlog, CPU saturation, correlated stalls,
proxies that refuse at N connections, and token-bucket limiters that delay then refuse."""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from aiogovernor._classify import OverloadError
from aiogovernor._validate import check_float, check_int

from ._upstreams import UpstreamError

__all__ = ["ConnectionWall", "ServerUpstream", "TokenBucketUpstream", "Upstream"]


@runtime_checkable
class Upstream(Protocol):
    """What a scenario sends its requests to: an awaitable call and a capacity that may change.

    ``capacity`` is the model's knee (where Little's law puts the best limit); setting it
    is how a scenario's capacity schedule changes the upstream while it runs.
    """

    @property
    def capacity(self) -> int: ...

    @capacity.setter
    def capacity(self, value: int) -> None: ...

    async def __call__(self) -> None: ...


class _Job:
    __slots__ = ("future", "work")

    def __init__(self, work: float, future: asyncio.Future[None]) -> None:
        self.work = work
        self.future = future


class ServerUpstream:
    """A server as real ones behave: workers, a FIFO backlog, shared CPU cores, stalls.

    - ``workers`` requests are served at once; more wait in a FIFO backlog (a sync
      worker pool's accept queue), so latency is wait + service and throughput is
      flat past the knee; past ``workers + backlog`` it refuses (`OverloadError`).
    - A request holds its worker for ``service_time_s`` of waiting (I/O, a sleep)
      and then ``cpu_s`` of CPU work. With ``cores``, the requests in their CPU
      phase share that many CPUs (processor sharing: each runs at
      ``min(1, cores / running)``), so the CPU can saturate before the worker
      count does: the knee is then at about ``cores × (service + cpu) / cpu``.
    - With ``stall_every_s``, the whole server freezes now and then (a GC pause,
      CPU stolen by a neighbour) for ``stall_s`` (uniform in the range): every
      request in the server is slowed at once by the same amount, the correlated
      noise a window's median cannot average away.
    - ``error_rate`` requests fail after service with `UpstreamError` (a 500
      unrelated to load).
    - It may share a host with its client (``Scenario(host_cores=...)``): the
      server's busy CPU threads (at most ``cores``) and the client's one thread then
      share the host's cores, so a busy client slows the server's CPU phases and a
      busy server slows the client.

    Every random draw is seeded, so a run is deterministic in virtual time.

    Args:
        workers: Requests served at once.
        service_time_s: Time a request waits on I/O while it holds a worker (the
            median with ``tail_sigma``).
        cpu_s: CPU time a request needs after that, at full speed.
        per_item_s: Extra I/O time per item of a batch: a call with ``size`` items
            waits ``service_time_s + per_item_s × size``.
        cores: CPUs shared by the requests in their CPU phase (None: no CPU limit).
        backlog: Requests that may wait for a worker before it refuses.
        jitter: Relative uniform spread of each request's times, in [0, 1).
        tail_sigma: When > 0, lognormal times with this sigma instead of jitter.
        error_rate: Fraction of requests failing for reasons unrelated to load, in [0, 1).
        stall_every_s: Mean time between stalls (exponential), None for none.
        stall_s: ``(shortest, longest)`` stall, seconds.
        retry_after_s: The Retry-After a refusal names.
        seed: Seeds the randomness.
    """

    def __init__(
        self,
        *,
        workers: int,
        service_time_s: float,
        cpu_s: float = 0.0,
        per_item_s: float = 0.0,
        cores: float | None = None,
        backlog: int = 1024,
        jitter: float = 0.1,
        tail_sigma: float = 0.0,
        error_rate: float = 0.0,
        stall_every_s: float | None = None,
        stall_s: tuple[float, float] = (0.015, 0.07),
        retry_after_s: float | None = None,
        seed: int = 0,
    ) -> None:
        self._workers = check_int("workers", workers, low=1)
        self.service_time_s = check_float("service_time_s", service_time_s, low=0.0)
        self.cpu_s = check_float("cpu_s", cpu_s, low=0.0)
        self.per_item_s = check_float("per_item_s", per_item_s, low=0.0)
        if service_time_s + cpu_s <= 0:
            raise ValueError("service_time_s + cpu_s must be > 0")
        self.cores = None if cores is None else check_float("cores", cores, low=0.0, low_open=True)
        self.backlog = check_int("backlog", backlog, low=0)
        self.jitter = check_float("jitter", jitter, low=0.0, high=1.0, high_open=True)
        self.tail_sigma = check_float("tail_sigma", tail_sigma, low=0.0)
        self.error_rate = check_float("error_rate", error_rate, low=0.0, high=1.0, high_open=True)
        if stall_every_s is not None:
            check_float("stall_every_s", stall_every_s, low=0.0, low_open=True)
        self.stall_every_s = stall_every_s
        low, high = stall_s
        check_float("stall_s shortest", low, low=0.0)
        check_float("stall_s longest", high, low=low)
        self.stall_s = (low, high)
        if retry_after_s is not None:
            check_float("retry_after_s", retry_after_s, low=0.0)
        self.retry_after_s = retry_after_s
        self._random = random.Random(seed)
        self._stall_random = random.Random(seed + 7919)
        self._holding = 0  # requests holding a worker
        self._waiting: deque[asyncio.Future[None]] = deque()
        self._running: list[_Job] = []  # requests in their CPU phase
        self._host_cores: float | None = None  # cores of a host shared with a client (set by a scenario)
        self._guests = 0  # the client's CPU work on that host, running now (0 or 1)
        self._last = 0.0
        self._stalled: asyncio.Future[None] | None = None  # set while stalled; done when it ends
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.completed = 0
        self.refused = 0
        self.failed = 0
        self.stalls = 0

    @property
    def capacity(self) -> int:
        """The knee: the workers, or fewer when the CPU saturates first. Setting it sets the workers."""
        if self.cores is None or self.cpu_s == 0:
            return self._workers
        cpu_bound = self.cores * (self.service_time_s + self.cpu_s) / self.cpu_s
        return max(1, min(self._workers, math.floor(cpu_bound)))

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._workers = check_int("capacity", value, low=1)
        self._admit()

    @property
    def busy(self) -> int:
        """Requests in the server: holding a worker or waiting for one."""
        return self._holding + len(self._waiting)

    def _spread(self) -> float:
        if self.tail_sigma:
            return math.exp(self.tail_sigma * self._random.gauss(0.0, 1.0))
        return 1.0 + self.jitter * (2.0 * self._random.random() - 1.0)

    # -- workers (FIFO) ----------------------------------------------------

    def _admit(self) -> None:
        while self._waiting and self._holding < self._workers:
            future = self._waiting.popleft()
            if not future.done():
                self._holding += 1
                future.set_result(None)

    # -- the CPU (processor sharing) ---------------------------------------

    def _rate(self) -> float:
        if self._stalled is not None:
            return 0.0
        n = len(self._running)
        rate = 1.0 if self.cores is None or n <= self.cores else self.cores / n
        if self._host_cores is not None:
            # One host for the server and its guests: their threads share its cores.
            demand = (n if self.cores is None else min(n, self.cores)) + self._guests
            if demand > self._host_cores:
                rate *= self._host_cores / demand
        return rate

    def _bind(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is None:
            loop = self._loop = asyncio.get_running_loop()
            self._last = loop.time()
            if self.stall_every_s is not None:
                self._next_stall()
        return loop

    def _share_host(self, host_cores: float) -> None:
        """Put the server on a host of ``host_cores`` cores that a client shares."""
        self._host_cores = check_float("host_cores", host_cores, low=0.0, low_open=True)

    def _run_guest(self, work_s: float, advance: Callable[[float], None]) -> None:
        """Run ``work_s`` of the client's CPU work on the shared host, synchronously.

        The client's whole loop is busy meanwhile (``advance`` moves its clock on). Its
        one thread and the server's busy CPU threads share the host's cores: the guest
        runs at its share until the next CPU phase ends, then at its new share, and so
        on (no new CPU phase starts meanwhile: their I/O ends on the busy loop's timers).
        """
        assert self._host_cores is not None
        self._bind()
        self._advance()
        self._guests += 1
        try:
            while work_s > 1e-12:
                n = 0 if self._stalled is not None else len(self._running)
                rate = min(1.0, self._host_cores / (1 + (n if self.cores is None else min(n, self.cores))))
                step = work_s / rate
                server_rate = self._rate()
                if n and server_rate > 0:
                    step = min(step, min(job.work for job in self._running) / server_rate)
                advance(step)
                work_s -= step * rate
                self._advance()
                self._finish()
        finally:
            self._guests -= 1
            self._schedule()

    def _advance(self) -> None:
        assert self._loop is not None
        now = self._loop.time()
        done = (now - self._last) * self._rate()
        self._last = now
        if done > 0:
            for job in self._running:
                job.work -= done

    def _schedule(self) -> None:
        assert self._loop is not None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        rate = self._rate()
        if self._running and rate > 0:
            left = min(job.work for job in self._running)
            self._timer = self._loop.call_later(max(0.0, left / rate), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._advance()
        self._finish()
        self._schedule()

    def _finish(self) -> None:
        still: list[_Job] = []
        for job in self._running:
            if job.work <= 1e-9:
                if not job.future.done():
                    job.future.set_result(None)
            else:
                still.append(job)
        self._running = still

    # -- stalls --------------------------------------------------------------

    def _next_stall(self) -> None:
        assert self._loop is not None and self.stall_every_s is not None
        self._loop.call_later(self._stall_random.expovariate(1.0 / self.stall_every_s), self._stall)

    def _stall(self) -> None:
        assert self._loop is not None
        self._advance()
        self._stalled = self._loop.create_future()
        self.stalls += 1
        self._schedule()
        self._loop.call_later(self._stall_random.uniform(*self.stall_s), self._unstall)

    def _unstall(self) -> None:
        self._advance()
        stalled, self._stalled = self._stalled, None
        if stalled is not None and not stalled.done():
            stalled.set_result(None)
        self._schedule()
        self._next_stall()

    async def _through_stall(self) -> None:
        while self._stalled is not None:
            await asyncio.shield(self._stalled)

    async def _cpu(self, work: float) -> None:
        assert self._loop is not None
        self._advance()
        job = _Job(work, self._loop.create_future())
        self._running.append(job)
        self._schedule()
        try:
            await job.future
        finally:
            if not job.future.done():  # cancelled: leave the CPU
                self._advance()
                self._running.remove(job)
                self._schedule()

    async def __call__(self, size: float = 1.0) -> None:
        """Serve one request (of ``size`` items): wait for a worker, wait on I/O, run on the CPU;
        or refuse, or fail."""
        loop = self._bind()
        if self.busy >= self._workers + self.backlog:
            self.refused += 1
            raise OverloadError("simulated server full", retry_after_s=self.retry_after_s)
        if self._holding < self._workers and not self._waiting:
            self._holding += 1
        else:
            turn = loop.create_future()
            self._waiting.append(turn)
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():
                    self._holding -= 1  # granted, then cancelled before it ran
                    self._admit()
                raise
        try:
            spread = self._spread()
            io_s = self.service_time_s + self.per_item_s * size
            if io_s:
                await asyncio.sleep(io_s * spread)
            await self._through_stall()
            if self.cpu_s:
                await self._cpu(self.cpu_s * spread)
        finally:
            self._holding -= 1
            self._admit()
        if self.error_rate and self._random.random() < self.error_rate:
            self.failed += 1
            raise UpstreamError("simulated failure unrelated to load")
        self.completed += 1


class ConnectionWall:
    """A proxy in front of an upstream that refuses past ``max_connections`` at once (nginx
    ``limit_conn``): a fast 503, with no latency warning before it.

    Args:
        inner: The upstream behind the proxy.
        max_connections: Requests at once it lets through; one more is refused.
        refusal_s: How long a refusal takes.
    """

    def __init__(self, inner: Upstream, *, max_connections: int, refusal_s: float = 0.0005) -> None:
        self.inner = inner
        self._max = check_int("max_connections", max_connections, low=1)
        self.refusal_s = check_float("refusal_s", refusal_s, low=0.0)
        self.active = 0
        self.refused = 0

    @property
    def capacity(self) -> int:
        """The connection bound (the knee, if the upstream behind can serve that many)."""
        return self._max

    @capacity.setter
    def capacity(self, value: int) -> None:
        self._max = check_int("capacity", value, low=1)

    async def __call__(self) -> None:
        """Refuse past the bound, else pass the request through."""
        if self.active >= self._max:
            self.refused += 1
            if self.refusal_s:
                await asyncio.sleep(self.refusal_s)
            raise OverloadError("simulated proxy: too many connections")
        self.active += 1
        try:
            await self.inner()
        finally:
            self.active -= 1


class TokenBucketUpstream:
    """A rate limiter in front of an upstream that delays, then refuses (nginx ``limit_req``
    with ``burst`` and no ``nodelay``).

    Requests over ``rate_per_s`` are delayed until their turn while at most ``burst`` of
    them wait; past that they are refused at once (503). Latency rises before refusals
    start, so a latency-aware policy can stay below the refusals.

    Args:
        inner: The upstream behind the limiter.
        rate_per_s: Requests per second let through.
        burst: Requests that may wait for their turn.
        refusal_s: How long a refusal takes.
    """

    def __init__(self, inner: Upstream, *, rate_per_s: float, burst: int, refusal_s: float = 0.0005) -> None:
        self.inner = inner
        self.rate_per_s = check_float("rate_per_s", rate_per_s, low=0.0, low_open=True)
        self.burst = check_int("burst", burst, low=0)
        self.refusal_s = check_float("refusal_s", refusal_s, low=0.0)
        self._next_free = -math.inf  # when the next request may pass (a GCRA's theoretical arrival time)
        self.refused = 0

    @property
    def capacity(self) -> int:
        """The upstream's own capacity (the limiter is a rate, not a count)."""
        return self.inner.capacity

    @capacity.setter
    def capacity(self, value: int) -> None:
        self.inner.capacity = value

    async def __call__(self) -> None:
        """Wait for a turn (or be refused past the burst), then pass the request through."""
        now = asyncio.get_running_loop().time()
        interval = 1.0 / self.rate_per_s
        turn = max(now, self._next_free)
        if turn - now > self.burst * interval + 1e-9:
            self.refused += 1
            if self.refusal_s:
                await asyncio.sleep(self.refusal_s)
            raise OverloadError("simulated rate limiter: burst exceeded")
        self._next_free = turn + interval
        if turn > now:
            await asyncio.sleep(turn - now)
        await self.inner()
