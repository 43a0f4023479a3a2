"""A client and a server on one host: the client's CPU per response grows with its pooled
connections, and its CPU work and the server's share the host's cores (virtual time)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from aiogovernor.sim import Client, ConnectionWall, Gate, KneeUpstream, Scenario, ServerUpstream, run_scenario


def _scenario(upstream: object, *, callers: int = 2, **client: object) -> Scenario:
    return Scenario(
        name="host",
        upstream=lambda: upstream,  # type: ignore[arg-type,return-value]
        duration_s=3.0,
        settle_s=1.0,
        clients=(Client(callers=callers),),
        **client,  # type: ignore[arg-type]
    )


def _cpu_server() -> ServerUpstream:
    return ServerUpstream(workers=8, service_time_s=0.0, cpu_s=0.01, cores=1, jitter=0.0)


def test_client_and_server_share_the_host_cores() -> None:
    # 10 ms of server CPU and 10 ms of client CPU per request. Each on a core of its own,
    # they overlap (two requests in flight): 100/s. On one shared core: 20 ms each, 50/s.
    apart = run_scenario(_scenario(_cpu_server(), client_cost_s=0.01), 2)
    shared = run_scenario(_scenario(_cpu_server(), client_cost_s=0.01, host_cores=1.0), 2)
    assert apart.goodput == pytest.approx(100, rel=0.05)
    assert shared.goodput == pytest.approx(50, rel=0.05)
    # Half a core for the two of them: half as much again. Behind a proxy it is the same host.
    half = run_scenario(
        _scenario(ConnectionWall(_cpu_server(), max_connections=8), client_cost_s=0.01, host_cores=0.5), 2
    )
    assert half.goodput == pytest.approx(25, rel=0.05)


def test_client_cost_grows_with_its_pooled_connections() -> None:
    # A 50 ms upstream with no CPU: L callers at a fixed limit of L could do L / 0.05 per
    # second, but the client spends 1 ms + 1 ms per pooled connection (L) on each response.
    def goodput(limit: int) -> float:
        server = ServerUpstream(workers=64, service_time_s=0.05, jitter=0.0)
        scenario = _scenario(server, callers=limit, client_cost_s=0.001, client_cost_per_connection_s=0.001)
        return run_scenario(scenario, limit).goodput

    assert goodput(2) == pytest.approx(2 / 0.054, rel=0.05)  # upstream-bound: 50 ms + 2 x 2 ms
    assert goodput(16) == pytest.approx(1 / 0.017, rel=0.05)  # client-bound, 17 ms a response
    assert goodput(32) == pytest.approx(1 / 0.033, rel=0.05)  # more connections, less goodput


def test_shared_host_settings_are_checked() -> None:
    server = ServerUpstream(workers=1, service_time_s=0.1)
    with pytest.raises(ValueError, match="host_cores"):
        _scenario(server, host_cores=0.0)
    with pytest.raises(ValueError, match="client_cost_per_connection_s"):
        _scenario(server, client_cost_per_connection_s=-0.001)
    # Only a ServerUpstream models the server's CPU.
    with pytest.raises(ValueError, match="host_cores needs a ServerUpstream"):
        run_scenario(_scenario(KneeUpstream(capacity=4, service_time_s=0.05), host_cores=1.0), 2)


class _Shrinking:
    """A gate admitting 32 at once for the first second, then 4 (a limit that came down)."""

    name = "shrinking"

    def __init__(self) -> None:
        self.inside = 0

    @property
    def limit(self) -> int:
        return 32 if asyncio.get_running_loop().time() < 1.0 else 4

    async def __aenter__(self) -> None:
        # The limit moves with the clock, not on an event: poll (cheap in virtual time).
        while self.inside >= self.limit:  # noqa: ASYNC110
            await asyncio.sleep(0.001)
        self.inside += 1

    async def __aexit__(self, *exc: object) -> None:
        self.inside -= 1


def test_the_pool_keeps_its_connections_until_the_limit_comes_down() -> None:
    def goodput(gate: Callable[[], Gate] | int) -> float:
        server = ServerUpstream(workers=64, service_time_s=0.05, jitter=0.0)
        scenario = Scenario(
            name="pool",
            upstream=lambda: server,
            duration_s=3.0,
            settle_s=2.0,
            clients=(Client(callers=32),),
            client_cost_s=0.001,
            client_cost_per_connection_s=0.001,
        )
        return run_scenario(scenario, gate).goodput

    # After the drop to 4 the pool keeps 4 + 2 connections (idle ones beyond are closed):
    # 7 ms a response, so the 4 in flight set the pace (4 / 57 ms). Had it kept all 32, each
    # response would cost 33 ms and the client would set it: 30/s at most.
    assert goodput(_Shrinking) == pytest.approx(4 / 0.057, rel=0.05)
