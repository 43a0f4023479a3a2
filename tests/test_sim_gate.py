"""The runner's Gate hook: another limiter driven in place of a Governor, on the same scenarios."""

from __future__ import annotations

import asyncio
from types import TracebackType

import pytest

from aiogovernor import Governor, OverloadError
from aiogovernor.limits import Fixed
from aiogovernor.sim import Gate, run_scenario, standard_scenarios

SCENARIOS = standard_scenarios(capacity=8, duration_s=8.0)


class SemaphoreGate:
    """A fixed asyncio.Semaphore that counts the outcomes it sees."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._semaphore = asyncio.Semaphore(limit)
        self.outcomes: dict[str, int] = {"ok": 0, "overload": 0, "error": 0}

    @property
    def name(self) -> str:
        return f"semaphore({self._limit})"

    @property
    def limit(self) -> int:
        return self._limit

    async def __aenter__(self) -> SemaphoreGate:
        await self._semaphore.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._semaphore.release()
        kind = "overload" if isinstance(exc, OverloadError) else "error" if exc is not None else "ok"
        self.outcomes[kind] += 1


def test_a_governor_is_a_gate() -> None:
    assert isinstance(Governor("g", Fixed(1)), Gate)
    assert isinstance(SemaphoreGate(1), Gate)


def test_a_fixed_gate_matches_a_fixed_limit() -> None:
    knee = SCENARIOS["knee"]
    gates: list[SemaphoreGate] = []

    def make() -> SemaphoreGate:
        gates.append(SemaphoreGate(8))
        return gates[-1]

    by_gate = run_scenario(knee, make)
    by_int = run_scenario(knee, 8)
    assert len(gates) == 1
    assert by_gate.policy == "semaphore(8)"
    assert by_gate.decision_times == ()
    assert {limits for _, limits in by_gate.trace} == {(8,)}
    assert by_gate.goodput == pytest.approx(by_int.goodput, rel=0.02)
    assert by_gate.latency_p99_s == pytest.approx(by_int.latency_p99_s, rel=0.05)
    assert gates[0].outcomes["ok"] == by_gate.requests


def test_outcomes_reach_the_gate_as_exceptions() -> None:
    gates: list[SemaphoreGate] = []

    def make() -> SemaphoreGate:
        gates.append(SemaphoreGate(12))
        return gates[-1]

    wall = run_scenario(SCENARIOS["wall"], make)
    assert wall.overload_rate > 0
    assert gates[0].outcomes["overload"] > 0
    flaky = run_scenario(SCENARIOS["flaky"], make)
    assert flaky.error_rate > 0
    assert gates[1].outcomes["error"] > 0
    assert sum(gates[1].outcomes.values()) == flaky.requests


def test_one_gate_per_client() -> None:
    shared = SCENARIOS["shared"]
    made: list[SemaphoreGate] = []

    def make() -> SemaphoreGate:
        made.append(SemaphoreGate(4))
        return made[-1]

    result = run_scenario(shared, make)
    assert len(made) == len(shared.clients)
    assert len(result.shares) == len(shared.clients)


def test_a_factory_of_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match="LimitPolicy or Gate"):
        run_scenario(SCENARIOS["knee"], lambda: object())  # type: ignore[arg-type, return-value]
