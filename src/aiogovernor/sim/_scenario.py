"""The scenario runner: a policy (or a fixed limit) against an upstream model, in virtual time."""

from __future__ import annotations

import asyncio
import math
import random
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, runtime_checkable

from aiogovernor._classify import OverloadError
from aiogovernor._events import Decision
from aiogovernor._governor import Governor
from aiogovernor._samples import WindowConfig
from aiogovernor._validate import check_float, check_int
from aiogovernor.limits import Fixed, LimitPolicy

from ._loop import VirtualTimeEventLoop, run_virtual
from ._servers import ConnectionWall, ServerUpstream, TokenBucketUpstream, Upstream
from ._upstreams import UpstreamError

__all__ = ["Client", "Gate", "Scenario", "ScenarioResult", "jain_index", "run_scenario"]


@runtime_checkable
class Gate(Protocol):
    """What the scenario runner drives per client: a `Governor`, or an adapter standing in for one.

    The hook for comparing other limiters on the same scenarios: a factory given to
    `run_scenario` may return a gate instead of a `LimitPolicy`. All of a client's
    callers enter its one gate at once (``async with gate:``), so per-request state
    belongs to the task (a context variable or a dict keyed by the task). The request's
    outcome reaches ``__aexit__`` as its exception: `OverloadError` for a refusal,
    `UpstreamError` for a failure unrelated to load, none for a success; the gate must
    let it propagate (return a falsy value).

    Attributes:
        name: What results and tables call it.
        limit: Its concurrency limit now, sampled into the trace.
    """

    @property
    def name(self) -> str: ...

    @property
    def limit(self) -> int: ...

    async def __aenter__(self) -> object: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None: ...


PolicyFactory = Callable[[], LimitPolicy | Gate]


@dataclass(frozen=True, slots=True, kw_only=True)
class Client:
    """One governor and the callers behind it, present from ``start_s`` to ``stop_s``.

    Attributes:
        callers: Closed-loop callers: each sends its next request as soon as
            the last one ends (after ``retry_delay_s`` when refused).
        start_s: When the client joins.
        stop_s: When it leaves (None: at the end).
    """

    callers: int
    start_s: float = 0.0
    stop_s: float | None = None

    def __post_init__(self) -> None:
        check_int("callers", self.callers, low=1)
        check_float("start_s", self.start_s, low=0.0)
        if self.stop_s is not None:
            check_float("stop_s", self.stop_s, low=self.start_s, low_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    """An upstream model, the demand on it, and how long to watch.

    Attributes:
        name: A short name for tables and golden files.
        upstream: Makes a fresh upstream model for each run (seeded inside).
        duration_s: Simulated seconds.
        clients: The governors sharing the upstream; one by default.
        capacity_schedule: ``(at_s, capacity)`` changes applied while it runs.
        settle_s: Steady-state figures (goodput, overload, latency, oscillation)
            are taken from here to the end of the first capacity phase.
        initial_limit: Where each policy starts (`LimitPolicy.reset`);
            None keeps the policy's own start.
        retry_delay_s: How long a refused caller waits before trying again.
        trace_every_s: How often the limits are sampled into the trace.
        window: The governors' window rules.
        client_cost_s: Client CPU spent on each response while its permit is held
            (parsing, the HTTP client's own work): the client's event loop is busy
            for that long and every other task waits, so the loop lags in
            proportion to the load.
        client_cost_per_connection_s: Client CPU added to each response's cost per
            connection in the client's pool (its HTTP client walks every pooled
            connection on every response, as httpx's pool does). The pool opens a
            connection per request in flight and keeps it; idle ones beyond the
            limit plus a margin (``limit + max(2, limit // 4)``) are closed after
            each response, as `GovernedTransport` does. At a steady limit L a
            response costs about ``client_cost_s + L × client_cost_per_connection_s``.
        client_cost_per_idle_pair_s: Client CPU added to each response's cost per idle
            connection per pooled connection: for each idle connection httpx's pool
            rebuilds a list of all of them. A connection counts as idle from the
            moment its response is done until the caller woken for its permit sends
            the next request (at most the limit's worth: connections kept beyond the
            limit do not count). While the client's loop keeps up that is zero or
            one; a loop that lags leaves many idle at once, each response then costs
            more, and the loop lags further. Past a point (about 32 connections at
            60 ms on the host it was calibrated on) the client collapses, and a
            collapse can outlast the load that caused it: a metastable state.
        host_cores: The client and the server share one host with this many cores
            (None: each has its own). The client's one thread (its cost per response
            and its pauses) and the server's busy CPU threads (up to the server's
            ``cores``) share them: a busy client slows the server's CPU work and a
            busy server slows the client. Less than one on a host loaded by other
            work. The upstream must be a `ServerUpstream` (alone, or behind a
            `ConnectionWall` or `TokenBucketUpstream`).
        client_pause_every_s: Mean time between pauses of the client's whole loop
            (its garbage collector, CPU stolen from it); None for none.
        client_pause_s: ``(shortest, longest)`` client pause, seconds.
        seed: Seeds the client-side noise.
    """

    name: str
    upstream: Callable[[], Upstream]
    duration_s: float
    clients: tuple[Client, ...] = (Client(callers=200),)
    capacity_schedule: tuple[tuple[float, int], ...] = ()
    settle_s: float = 0.0
    initial_limit: int | None = None
    retry_delay_s: float = 0.05
    trace_every_s: float = 0.25
    window: WindowConfig | None = None
    client_cost_s: float = 0.0
    client_cost_per_connection_s: float = 0.0
    client_cost_per_idle_pair_s: float = 0.0
    host_cores: float | None = None
    client_pause_every_s: float | None = None
    client_pause_s: tuple[float, float] = (0.015, 0.07)
    seed: int = 0

    def __post_init__(self) -> None:
        check_float("duration_s", self.duration_s, low=0.0, low_open=True)
        check_float("client_cost_s", self.client_cost_s, low=0.0)
        check_float("client_cost_per_connection_s", self.client_cost_per_connection_s, low=0.0)
        check_float("client_cost_per_idle_pair_s", self.client_cost_per_idle_pair_s, low=0.0)
        if self.host_cores is not None:
            check_float("host_cores", self.host_cores, low=0.0, low_open=True)
        if self.client_pause_every_s is not None:
            check_float("client_pause_every_s", self.client_pause_every_s, low=0.0, low_open=True)
        check_float("client_pause_s shortest", self.client_pause_s[0], low=0.0)
        check_float("client_pause_s longest", self.client_pause_s[1], low=self.client_pause_s[0])
        check_float("settle_s", self.settle_s, low=0.0, high=self.duration_s, high_open=True)
        check_float("retry_delay_s", self.retry_delay_s, low=0.0)
        check_float("trace_every_s", self.trace_every_s, low=0.0, low_open=True)
        if not self.clients:
            raise ValueError("clients must name at least one Client")
        if self.initial_limit is not None:
            check_int("initial_limit", self.initial_limit, low=1)
        previous = 0.0
        for at_s, capacity in self.capacity_schedule:
            check_float("capacity_schedule time", at_s, low=previous, high=self.duration_s)
            check_int("capacity_schedule capacity", capacity, low=1)
            previous = at_s

    def phases(self, first_capacity: int) -> list[tuple[float, float, int]]:
        """``(start_s, end_s, capacity)`` of each capacity phase."""
        starts = [(0.0, first_capacity), *self.capacity_schedule]
        ends = [at for at, _ in self.capacity_schedule] + [self.duration_s]
        return [(s, e, c) for (s, c), e in zip(starts, ends, strict=True)]


@dataclass(frozen=True, slots=True, kw_only=True)
class ScenarioResult:
    """What one run of a scenario measured. Steady state runs from ``settle_s`` to the first change.

    Attributes:
        scenario: The scenario's name.
        policy: The first client's policy name (or gate name).
        goodput: Successful requests per second in steady state, all clients.
        overload_rate: Refusals as a fraction of requests, in steady state.
        error_rate: Plain failures as a fraction of requests, in steady state.
        latency_p50_s: Median latency of successful requests, in steady state.
        latency_p99_s: 99th percentile latency of successful requests, in steady state.
        mean_limit: Time-averaged limit of the first client, in steady state.
        oscillation: Coefficient of variation of that limit, in steady state.
        trace: ``(t, limit of each client)`` every ``trace_every_s``.
        decision_times: When the first client's windows closed (empty for a `Gate`
            that is not a `Governor`).
        shares: Successful requests per client over the time all were present.
        fairness: Jain's index of ``shares`` (1 = equal).
        phases: ``(start_s, end_s, capacity)`` of each capacity phase.
        requests: Requests sent, all clients, whole run.
    """

    scenario: str
    policy: str
    goodput: float
    overload_rate: float
    error_rate: float
    latency_p50_s: float
    latency_p99_s: float
    mean_limit: float
    oscillation: float
    trace: tuple[tuple[float, tuple[int, ...]], ...]
    decision_times: tuple[float, ...]
    shares: tuple[int, ...]
    fairness: float
    phases: tuple[tuple[float, float, int], ...]
    requests: int = field(default=0)

    def limits(self, client: int = 0) -> list[tuple[float, int]]:
        """The trace of one client's limit."""
        return [(t, limits[client]) for t, limits in self.trace]

    def convergence_s(
        self, target: float, *, band: float = 0.2, start_s: float = 0.0, end_s: float | None = None
    ) -> float | None:
        """Seconds after ``start_s`` until the first client's limit stays within ``band`` of ``target``.

        It must stay inside ``[(1 - band) × target, (1 + band) × target]`` up to
        ``end_s`` (the run's end by default). None if it never settles.
        """
        end_s = self.phases[-1][1] if end_s is None else end_s
        low, high = (1 - band) * target, (1 + band) * target
        settled: float | None = None
        for t, limit in self.limits():
            if t < start_s or t > end_s:
                continue
            inside = low <= limit <= high
            settled = (t if settled is None else settled) if inside else None
        return None if settled is None else settled - start_s

    def windows_between(self, start_s: float, end_s: float) -> int:
        """How many of the first client's windows closed in ``(start_s, end_s]``."""
        return sum(1 for t in self.decision_times if start_s < t <= end_s)

    def summary(self) -> dict[str, object]:
        """The headline figures, rounded, as plain JSON-ready values (for golden files)."""
        return {
            "scenario": self.scenario,
            "policy": self.policy,
            "goodput": round(self.goodput, 1),
            "overload_rate": round(self.overload_rate, 4),
            "error_rate": round(self.error_rate, 4),
            "latency_p50_ms": round(self.latency_p50_s * 1000, 1),
            "latency_p99_ms": round(self.latency_p99_s * 1000, 1),
            "mean_limit": round(self.mean_limit, 2),
            "oscillation": round(self.oscillation, 3),
            "fairness": round(self.fairness, 3),
            "shares": list(self.shares),
            "requests": self.requests,
        }


def jain_index(shares: Sequence[float]) -> float:
    """Jain's fairness index: 1 when every share is equal, 1/n when one takes all."""
    if not shares:
        raise ValueError("shares must not be empty")
    total = sum(shares)
    squares = sum(s * s for s in shares)
    return 1.0 if squares == 0 else total * total / (len(shares) * squares)


def _gate(policy: PolicyFactory | int, scenario: Scenario, index: int) -> Gate:
    made: object = Fixed(policy) if isinstance(policy, int) else policy()
    if isinstance(made, LimitPolicy):
        if scenario.initial_limit is not None:
            made.reset(scenario.initial_limit)
        # No store: a learned limit from an earlier run would make runs depend on the user's
        # state folder (and the runs would write to it).
        return Governor(f"client-{index}", made, environment="sim", window=scenario.window, store=None)
    if isinstance(made, Gate):
        return made
    raise TypeError(f"policy must be an int or a factory of LimitPolicy or Gate, got {made!r}")


def run_scenario(scenario: Scenario, policy: PolicyFactory | int) -> ScenarioResult:
    """Run ``scenario`` with ``policy`` in virtual time and measure it.

    Args:
        scenario: The model and demand.
        policy: A zero-argument factory of a fresh policy per client (a policy
            class works), or an int for a fixed limit per client. The factory may
            instead return a `Gate` (an adapter for another limiter): the runner
            then drives it in place of a `Governor`, called once per client inside
            the virtual-time loop, and the gate starts where it chooses
            (``initial_limit`` and ``window`` apply to policies only).

    Returns:
        A frozen `ScenarioResult`. Runs are deterministic: the same scenario and
        policy give the same result.
    """
    return run_virtual(_run(scenario, policy))


async def _run(scenario: Scenario, policy_spec: PolicyFactory | int) -> ScenarioResult:
    loop = asyncio.get_running_loop()
    upstream = scenario.upstream()
    phases = scenario.phases(upstream.capacity)
    steady_from, steady_to = scenario.settle_s, phases[0][1]
    n = len(scenario.clients)
    governors = [_gate(policy_spec, scenario, i) for i in range(n)]
    decision_times: list[float] = []

    def on_decision(decision: Decision) -> None:
        decision_times.append(decision.at)

    first = governors[0]
    if isinstance(first, Governor):
        first.add_listener(on_decision)
    # Shares are counted while every client is present.
    share_from = max(c.start_s for c in scenario.clients)
    share_to = min(scenario.duration_s, *(c.stop_s or scenario.duration_s for c in scenario.clients))
    shares = [0] * n
    latencies: list[float] = []
    counts = [0, 0, 0]  # ok, overload, error in steady state
    requests = 0
    delay = scenario.retry_delay_s
    cost = scenario.client_cost_s
    per_connection = scenario.client_cost_per_connection_s
    per_idle_pair = scenario.client_cost_per_idle_pair_s
    pooled = per_connection or per_idle_pair
    noisy = cost or pooled or scenario.client_pause_every_s
    if noisy and not isinstance(loop, VirtualTimeEventLoop):
        raise RuntimeError("client-side noise needs a VirtualTimeEventLoop (run_scenario makes one)")
    host = None if scenario.host_cores is None else _host_server(upstream, scenario.host_cores)
    inflight = [0] * n  # each client's requests in flight
    pools = [0] * n  # each client's open connections

    def busy(seconds: float) -> None:
        # The client's loop does CPU work: nothing else runs, and the clock moves on
        # (further when the server's CPU work competes for the same cores).
        assert isinstance(loop, VirtualTimeEventLoop)
        if host is None:
            loop.advance(seconds)
        else:
            host._run_guest(seconds, loop.advance)

    async def caller(i: int, stop_s: float) -> None:
        nonlocal requests
        gov = governors[i]
        while (now := loop.time()) < stop_s:
            started = now
            try:
                async with gov:
                    started = loop.time()
                    inflight[i] += 1
                    pools[i] = max(pools[i], inflight[i])
                    try:
                        await upstream()
                    finally:
                        if pooled:
                            # Idle: permits handed back whose callers, woken, have not yet sent
                            # their next request (this request's connection is still busy).
                            idle = max(0, min(pools[i], gov.limit) - inflight[i])
                            busy(cost + (per_connection + per_idle_pair * idle) * pools[i])
                        elif cost:
                            busy(cost)
                        inflight[i] -= 1
                        limit = gov.limit
                        pools[i] = max(inflight[i], min(pools[i], limit + max(2, limit // 4)))
            except OverloadError:
                outcome = 1
            except UpstreamError:
                outcome = 2
            else:
                outcome = 0
            requests += 1
            end = loop.time()
            if steady_from <= end < steady_to:
                counts[outcome] += 1
                if outcome == 0:
                    latencies.append(end - started)
            if outcome == 0 and share_from <= end < share_to:
                shares[i] += 1
            if outcome == 1:
                await asyncio.sleep(delay)

    async def client(i: int) -> None:
        spec = scenario.clients[i]
        await asyncio.sleep(spec.start_s)
        stop_s = scenario.duration_s if spec.stop_s is None else spec.stop_s
        await asyncio.gather(*(caller(i, stop_s) for _ in range(spec.callers)))

    trace: list[tuple[float, tuple[int, ...]]] = []

    async def tracer() -> None:
        while (now := loop.time()) <= scenario.duration_s:
            trace.append((round(now, 6), tuple(g.limit for g in governors)))
            await asyncio.sleep(scenario.trace_every_s)

    async def shifter() -> None:
        for at_s, capacity in scenario.capacity_schedule:
            await asyncio.sleep(at_s - loop.time())
            upstream.capacity = capacity

    async def pauser() -> None:
        every = scenario.client_pause_every_s
        if every is None:
            return
        rng = random.Random(scenario.seed)
        while True:
            await asyncio.sleep(rng.expovariate(1.0 / every))
            if loop.time() >= scenario.duration_s:
                return
            busy(rng.uniform(*scenario.client_pause_s))

    await asyncio.gather(tracer(), shifter(), pauser(), *(client(i) for i in range(n)))

    steady = [limits[0] for t, limits in trace if steady_from <= t < steady_to]
    mean_limit = statistics.fmean(steady) if steady else math.nan
    oscillation = statistics.pstdev(steady) / mean_limit if steady and mean_limit > 0 else 0.0
    total = sum(counts)
    latencies.sort()
    return ScenarioResult(
        scenario=scenario.name,
        policy=first.policy.name if isinstance(first, Governor) else first.name,
        goodput=counts[0] / (steady_to - steady_from),
        overload_rate=counts[1] / total if total else 0.0,
        error_rate=counts[2] / total if total else 0.0,
        latency_p50_s=_quantile(latencies, 0.5),
        latency_p99_s=_quantile(latencies, 0.99),
        mean_limit=mean_limit,
        oscillation=oscillation,
        trace=tuple(trace),
        decision_times=tuple(decision_times),
        shares=tuple(shares),
        fairness=jain_index(shares),
        phases=tuple(phases),
        requests=requests,
    )


def _host_server(upstream: Upstream, host_cores: float) -> ServerUpstream:
    """The server that shares the client's host: the upstream, or the one behind its proxies."""
    server: object = upstream
    while isinstance(server, (ConnectionWall, TokenBucketUpstream)):
        server = server.inner
    if not isinstance(server, ServerUpstream):
        raise ValueError(
            "host_cores needs a ServerUpstream (alone, or behind a ConnectionWall or "
            f"TokenBucketUpstream), got {upstream!r}"
        )
    server._share_host(host_cores)
    return server


def _quantile(ordered: list[float], q: float) -> float:
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
