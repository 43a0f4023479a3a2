"""Other Python adaptive limiters, run in aiogovernor's simulated scenarios beside its own policies.

Each adapter is a `aiogovernor.sim.Gate`: the scenario runner drives it in place of a
Governor (``async with gate:`` around each request, one gate per client), and the request's
outcome reaches it as the exception leaving the block: `OverloadError` for a refusal (a 429 or
503), `UpstreamError` for a failure unrelated to load. Each adapter feeds its library the signals
that library takes, through the library's own API where it has one, and starts from the scenario's
initial limit where the library allows it. The ceiling a library asks for is 10 × the upstream's
capacity for all of them (the knee-high-start scenario's start).

Virtual time: gentlify and ace-concurrency read ``time.monotonic()`` / ``time.time()`` directly,
which under `VirtualTimeEventLoop` would make their windows and cool-downs last real seconds
(a 40 s scenario runs in under one). `virtual_clock()` replaces the ``time`` module those
library modules see with one whose clocks read the running loop's (virtual) time, for the length
of a run. adaptive-concurrency's `Controller` has no clock, and aimd-limiter reads the loop's clock
by default, so neither needs it.

This module is benchmark code, not part of aiogovernor; the libraries are in the ``bench``
dependency group (``pip install --group bench``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time as _real_time
from collections import deque
from collections.abc import Callable, Iterator
from importlib.metadata import version
from types import ModuleType, TracebackType
from typing import Any

from aiogovernor import OverloadError
from aiogovernor.sim import Gate, Scenario

__all__ = ["ADAPTERS", "gate_factory", "versions", "virtual_clock"]


# -- virtual time ------------------------------------------------------------


class _VirtualTimeModule:
    """Stands in for the ``time`` module: wall and monotonic clocks read the running loop's clock."""

    def __getattr__(self, name: str) -> Any:
        return getattr(_real_time, name)

    @staticmethod
    def _now() -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:  # no loop: outside a run
            return _real_time.monotonic()

    def time(self) -> float:
        return self._now()

    def monotonic(self) -> float:
        return self._now()

    def perf_counter(self) -> float:
        return self._now()


def _clocked_modules() -> list[ModuleType]:
    import ace.core.control
    import ace.core.limiters
    import gentlify._throttle

    return [gentlify._throttle, ace.core.control, ace.core.limiters]


@contextlib.contextmanager
def virtual_clock() -> Iterator[None]:
    """Point the clock-reading library modules at the event loop's clock while a run lasts."""
    modules = _clocked_modules()
    saved = [m.time for m in modules]  # type: ignore[attr-defined]
    shim = _VirtualTimeModule()
    for m in modules:
        m.time = shim  # type: ignore[attr-defined]
    try:
        yield
    finally:
        for m, t in zip(modules, saved, strict=True):
            m.time = t  # type: ignore[attr-defined]


# -- helpers -------------------------------------------------------------------


def _model(scenario: Scenario) -> tuple[int, float, int]:
    """``(capacity, service_time_s, initial_limit)`` of a scenario, read from a fresh upstream."""
    upstream = scenario.upstream()
    return upstream.capacity, _service_time(upstream), scenario.initial_limit or 1


def _service_time(upstream: object) -> float:
    """An upstream model's no-load latency: its own, or the one behind a proxy or a limiter."""
    inner = getattr(upstream, "inner", None)
    if inner is not None:
        return _service_time(inner)
    return float(getattr(upstream, "service_time_s", 0.0)) + float(getattr(upstream, "cpu_s", 0.0))


class _PerTask:
    """Per-request state of a gate entered by many tasks at once, keyed by the task."""

    def __init__(self) -> None:
        self._state: dict[asyncio.Task[Any], Any] = {}

    def put(self, value: Any) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._state[task] = value

    def pop(self) -> Any:
        task = asyncio.current_task()
        assert task is not None
        return self._state.pop(task)


class _ResizableSlots:
    """A FIFO semaphore whose size can change: holders above a lowered size finish, none is revoked."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.inflight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def acquire(self) -> None:
        if not self._waiters and self.inflight < self.size:
            self.inflight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()
            raise

    def release(self) -> None:
        self.inflight -= 1
        self.wake()

    def wake(self) -> None:
        while self._waiters and self.inflight < self.size:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self.inflight += 1
                waiter.set_result(None)


def _is_overload(exc: BaseException | None) -> bool:
    return isinstance(exc, OverloadError)


# -- gentlify -----------------------------------------------------------------


class GentlifyGate:
    """gentlify's `Throttle`, through its ``acquire()`` slot.

    gentlify only reacts to failures: ``failure_threshold`` (3) of them within
    ``failure_window`` (60 s) halve the concurrency, then after ``cooling_period`` (60 s) of
    successes it steps +1, once, towards the ceiling it fell from. It never probes above its
    start, so it starts at its ``max_concurrency`` (10 × capacity): started at 1 it would stay
    there. The ``failure_predicate`` counts only overloads (429/503), as its docs suggest for
    rate limits; its latency measurement only feeds the ETA. Its dispatch-interval pacing
    (``min_dispatch_interval``, 0.2 s by default: a rate limit of ~4 requests/s) is set to 0
    so that the comparison is of concurrency control. Other settings are its defaults.

    The limit traced is what its semaphore admits (permits held + free). Its halving only
    removes permits that are free at that instant, so while every permit is in use it lowers
    nothing: its reported ``concurrency`` falls to 1 while it still admits ~9c.
    """

    def __init__(self, scenario: Scenario) -> None:
        import gentlify

        capacity, _, _ = _model(scenario)
        ceiling = 10 * capacity
        self._throttle = gentlify.Throttle(
            max_concurrency=ceiling,
            initial_concurrency=ceiling,
            min_dispatch_interval=0.0,
            failure_predicate=_is_overload,
        )
        self._slots = _PerTask()

    @property
    def name(self) -> str:
        return f"gentlify {version('gentlify')}"

    @property
    def limit(self) -> int:
        # What its semaphore really admits: permits held plus permits free. Its own
        # ``snapshot().concurrency`` can read far lower, because its halving only removes
        # permits that are free at that instant, and a saturated semaphore has none.
        concurrency = self._throttle._concurrency
        return int(concurrency.in_flight + max(0, concurrency._semaphore._value))

    @property
    def nominal_limit(self) -> int:
        """The concurrency gentlify reports (``snapshot().concurrency``)."""
        return int(self._throttle.snapshot().concurrency)

    async def __aenter__(self) -> None:
        slot = self._throttle.acquire()
        await slot.__aenter__()
        self._slots.put(slot)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        return bool(await self._slots.pop().__aexit__(exc_type, exc, tb))


# -- ace-concurrency ------------------------------------------------------------


class AceGate:
    """ace-concurrency's `ACEAsyncioManager`: its `ACESemaphore` plus its AIMD control loop.

    ACE takes no per-request feedback at all: every 2 s (``adjustment_interval_seconds``),
    outside a 5 s cool-down, it reads host signals (CPU, memory, event-loop lag, queue depth)
    and halves the limit if one is over its threshold, else adds 2 when CPU and memory are low
    or utilisation is over 80 %. Its `SignalCollector` is replaced by one that reports an idle
    client host (CPU 10 %, memory 40 %, no loop lag: the real host's readings would measure
    the simulator itself, and are not deterministic) and, as the queue depth it documents,
    the number of callers waiting at the gate. Overloads, errors and latency are not fed to
    it because it has no input for them. Its limit starts at the scenario's, raised to its
    ``min_limit`` (5); its ``max_limit`` is 10 × capacity; its JSON decision log is silenced.
    """

    def __init__(self, scenario: Scenario) -> None:
        from ace.core.control import AIMDConfig
        from ace.core.logger import ACELogger
        from ace.core.signals import SignalCollector, SystemSignals
        from ace.integrations.asyncio_integration import ACEAsyncioManager

        capacity, _, initial = _model(scenario)
        gate = self

        class SimSignals(SignalCollector):  # type: ignore[misc]
            def __init__(self) -> None:
                pass  # the base primes psutil's CPU counter; nothing is read from the host

            async def collect_all_async(self) -> SystemSignals:
                return SystemSignals(
                    cpu_percent=10.0, memory_percent=40.0, event_loop_lag_ms=0.0, queue_depth=gate._waiting
                )

        config = AIMDConfig(initial_limit=max(5, min(initial, 10 * capacity)), max_limit=10 * capacity)
        logger = ACELogger(name="ace.aiogovernor-bench", log_level=logging.CRITICAL)
        self._manager = ACEAsyncioManager(config, logger=logger, signal_collector=SimSignals())
        self._waiting = 0
        self._control = asyncio.get_running_loop().create_task(self._manager.__aenter__())

    @property
    def name(self) -> str:
        return f"ace-concurrency {version('ace-concurrency')}"

    @property
    def limit(self) -> int:
        return int(self._manager.semaphore.get_stats()["limit"])

    async def __aenter__(self) -> None:
        self._waiting += 1
        try:
            await self._manager.semaphore.acquire()
        finally:
            self._waiting -= 1

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._manager.semaphore.__aexit__(exc_type, exc, tb)


# -- adaptive-concurrency --------------------------------------------------------


class AdaptiveConcurrencyGate:
    """adaptive-concurrency's `Controller` (the decision logic of ``arun_adaptive``), on one item per batch.

    Its runner is a work-queue dispatcher that keeps ``workers`` batches in flight and re-reads
    ``workers`` on every completion; this gate does the same for the scenario's callers, and
    reports each request to ``Controller.observe()`` as an `Observation` of one item: its
    latency when it succeeded; a failed batch at the minimum batch size when it was refused
    (which cuts workers × 0.7); a failure that is not a tuning signal when it is a plain error
    (what its ``bisect_on_failure`` makes of a failing single item). Batch size is pinned at 1.
    Its documented 429 path, `RateLimiter.report_breach()`, is not used: it pauses every worker
    for 60 s (doubling) by default, longer than a scenario. Workers start at the scenario's
    initial limit; ``max_workers`` is 10 × capacity; other settings are its defaults.
    """

    def __init__(self, scenario: Scenario) -> None:
        from adaptive_concurrency import AdaptiveConfig, Controller

        capacity, _, initial = _model(scenario)
        config = AdaptiveConfig(
            workers=min(initial, 10 * capacity),
            max_workers=10 * capacity,
            batch_size=1,
            max_batch_size=1,
            min_batch_size=1,
        )
        self._ctl = Controller(config)
        self._slots = _ResizableSlots(self._ctl.setting.workers)
        self._requests = _PerTask()
        self._loop = asyncio.get_running_loop()

    @property
    def name(self) -> str:
        return f"adaptive-concurrency {version('adaptive-concurrency')}"

    @property
    def limit(self) -> int:
        return int(self._ctl.setting.workers)

    async def __aenter__(self) -> None:
        await self._slots.acquire()
        self._requests.put((self._ctl.setting, self._loop.time()))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        from adaptive_concurrency import Observation

        setting, started = self._requests.pop()
        elapsed = self._loop.time() - started
        ok = exc is None
        observation = Observation(setting, 1, elapsed, ok, size_fault=_is_overload(exc))
        self._ctl.observe(observation)
        self._slots.size = self._ctl.setting.workers
        self._slots.release()


# -- aimd-limiter ----------------------------------------------------------------


class AimdLimiterGate:
    """aimd-limiter's `AIMDAsyncLimiter`: AIMD with slow start on a request *rate*, not on concurrency.

    Each request takes a permit paced at the current rate; a success marks it
    ``mark_success()`` (+1 request/s, or doubling in slow start), an overload
    ``mark_failure()`` (× 0.5), and a plain error marks nothing, as its manual-permit pattern
    does for errors other than the one it marks. It does not take latency. Nothing bounds the
    number in flight, so its "limit" in the trace is the number of requests in flight (the
    concurrency its rate amounts to). The rate starts at the scenario's initial limit converted
    by Little's law (initial limit / service time) and is capped at 10 × capacity / service time;
    its slow-start threshold is its default (half the cap) or the start, whichever is higher.
    It reads the event loop's clock itself.
    """

    def __init__(self, scenario: Scenario) -> None:
        from aimd_limiter import AIMDAsyncLimiter

        capacity, service_time_s, initial = _model(scenario)
        max_rate = 10 * capacity / service_time_s
        initial_rate = min(initial / service_time_s, max_rate)
        self._limiter = AIMDAsyncLimiter(
            max_rate, initial_rate=initial_rate, slow_start_threshold=max(initial_rate, max_rate / 2)
        )
        self._permits = _PerTask()
        self._inflight = 0

    @property
    def name(self) -> str:
        return f"aimd-limiter {version('aimd-limiter')} (rate)"

    @property
    def limit(self) -> int:
        return self._inflight

    @property
    def rate(self) -> float:
        return float(self._limiter.current_rate)

    async def __aenter__(self) -> None:
        permit = await self._limiter.acquire()
        self._inflight += 1
        self._permits.put(permit)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        permit = self._permits.pop()
        self._inflight -= 1
        if exc is None:
            await permit.mark_success()
        elif _is_overload(exc):
            await permit.mark_failure()


# Short names for tables, and what each adapter is built from.
ADAPTERS: dict[str, Callable[[Scenario], Gate]] = {
    "gentlify": GentlifyGate,
    "ace-concurrency": AceGate,
    "adaptive-concurrency": AdaptiveConcurrencyGate,
    "aimd-limiter (rate)": AimdLimiterGate,
}


def gate_factory(name: str, scenario: Scenario) -> Callable[[], Gate]:
    """A zero-argument factory of fresh gates of adapter ``name`` for ``scenario`` (one per client)."""
    adapter = ADAPTERS[name]
    return lambda: adapter(scenario)


def versions() -> dict[str, str]:
    """The installed version of each library."""
    return {name.split()[0]: version(name.split()[0]) for name in ADAPTERS}
