"""The standard scenarios: the models the default policy is tested and benchmarked on."""

from __future__ import annotations

from collections.abc import Callable

from aiogovernor._samples import WindowConfig
from aiogovernor._validate import check_float, check_int

from ._scenario import Client, Scenario
from ._servers import ConnectionWall, ServerUpstream, TokenBucketUpstream, Upstream
from ._upstreams import KneeUpstream, WallUpstream

__all__ = ["noisy_scenarios", "shared_wall_scenario", "standard_scenarios"]


def standard_scenarios(
    *, capacity: int = 16, service_time_s: float = 0.05, duration_s: float = 40.0, seed: int = 0
) -> dict[str, Scenario]:
    """The scenarios of aiogovernor's CI and control benchmark, by name.

    - ``knee`` / ``knee-high-start``: ``capacity`` workers, latency rising
      past the knee, started from a limit of 1 and of 10 × capacity;
    - ``wall``: 429 past ``capacity`` with no latency warning;
    - ``heavy-tail``: lognormal service times (sigma 0.5), larger windows;
    - ``flaky``: 5 % errors unrelated to load;
    - ``low-demand``: half as many callers as workers;
    - ``shift``: 2 × capacity, then capacity / 2, then 2 × capacity again;
    - ``shared``: four governors on one upstream of 2 × capacity, joining
      one by one and one leaving before the end.

    Steady state is measured from the 15th simulated second (scaled with
    ``duration_s``). Every model is seeded.

    Args:
        capacity: The knee of the single-client models.
        service_time_s: Latency below the knee.
        duration_s: Simulated seconds of the single-phase scenarios (the
            shift and shared scenarios run 1.5 times longer).
        seed: Another draw of every model's randomness (0: the standard one, which
            the golden files and CI's bounds are taken on). A closed loop is
            chaotic: one draw can be lucky or unlucky for a policy, so compare
            policies over several.
    """
    o = 100 * check_int("seed", seed, low=0)
    c = check_int("capacity", capacity, low=2)
    s = check_float("service_time_s", service_time_s, low=0.0, low_open=True)
    d = check_float("duration_s", duration_s, low=1.0)
    settle = 0.375 * d
    long = 1.5 * d
    many = Client(callers=max(50, 10 * c))
    return {
        "knee": Scenario(
            name="knee",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=1 + o),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "knee-high-start": Scenario(
            name="knee-high-start",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=1 + o),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=10 * c,
        ),
        "wall": Scenario(
            name="wall",
            upstream=lambda: WallUpstream(capacity=c, service_time_s=s, seed=2 + o),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "heavy-tail": Scenario(
            name="heavy-tail",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, tail_sigma=0.5, seed=3 + o),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
            window=WindowConfig(min_samples=50),
        ),
        "flaky": Scenario(
            name="flaky",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, error_rate=0.05, seed=4 + o),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "low-demand": Scenario(
            name="low-demand",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=5 + o),
            duration_s=d,
            settle_s=settle,
            clients=(Client(callers=c // 2),),
            initial_limit=1,
        ),
        "shift": Scenario(
            name="shift",
            upstream=lambda: KneeUpstream(capacity=2 * c, service_time_s=s, seed=6 + o),
            duration_s=long,
            settle_s=settle,
            clients=(Client(callers=max(100, 20 * c)),),
            capacity_schedule=((long / 3, max(1, c // 2)), (2 * long / 3, 2 * c)),
            initial_limit=1,
        ),
        "shared": Scenario(
            name="shared",
            upstream=lambda: KneeUpstream(capacity=2 * c, service_time_s=s, seed=7 + o),
            duration_s=long,
            settle_s=settle,
            clients=tuple(
                Client(callers=max(50, 4 * c), start_s=i * d / 15, stop_s=long * 0.9 if i == 0 else None)
                for i in range(4)
            ),
            initial_limit=1,
        ),
    }


def shared_wall_scenario(*, seed: int) -> Scenario:
    """Four governors of 64 callers join a 429 wall at 32 one by one; the first leaves early.

    A wall shared by governors that each hold about 8 permits, where a cut of
    ×0.9 is less than the one permit a refusal takes: what is measured is how
    fairly they share it (`ScenarioResult.fairness`) and how often they are
    refused. Run over several seeds: one draw can be lucky for a policy.

    Args:
        seed: The draw of the wall's service times and of the callers.
    """
    n = check_int("seed", seed, low=0)
    return Scenario(
        name="shared-wall",
        upstream=lambda: WallUpstream(capacity=32, service_time_s=0.05, seed=n),
        duration_s=60.0,
        settle_s=15.0,
        clients=tuple(
            Client(callers=64, start_s=i * 40 / 15, stop_s=54.0 if i == 0 else None) for i in range(4)
        ),
        initial_limit=1,
        seed=n,
    )


def noisy_scenarios(*, duration_s: float = 20.0, seed: int = 0) -> dict[str, Scenario]:
    """Models of real servers and a real client, with the noise the standard models lack.

    Each is shaped after a real server measured on loopback (the figures beside
    each say which); all use 200 closed-loop callers, as the real benchmark does.

    - ``backlog``: 8 sync workers, 40 ms each, a FIFO accept queue (gunicorn
      sync workers with a sleep): latency = wait + service, throughput flat past 8;
    - ``cpu-bound``: 8 sync workers, 27 ms of CPU each on 2 shared cores, the client
      spending 2 ms of CPU per response (gunicorn with CPU work): the knee is 2;
    - ``cpu-saturates``: 32 workers, 60 ms of I/O and 3 ms of CPU each on one core
      (a threaded Python server): the CPU saturates at about 21 busy workers;
    - ``proxy-wall``: a proxy answering 503 past 16 connections in front of a
      50 ms backend (nginx ``limit_conn``);
    - ``token-bucket``: 150 requests/s with a burst of 20 delayed, then refused,
      in front of a 50 ms backend (nginx ``limit_req``);
    - ``stalls``: 16 workers at 20 ms whose whole process freezes for 15-70 ms
      about 3 times a second (GC pauses, CPU steal), and a client whose loop
      pauses likewise;
    - ``busy-client``: 16 workers at 20 ms, a client spending 1 ms of CPU per
      response on its one event loop (which lags in proportion to its load) and
      pausing now and then;
    - ``flaky-5xx``: ``busy-client`` with 5 % of responses failing for reasons
      unrelated to load.
    - ``shared-host``: the client and a one-thread server (32 workers, 60 ms of I/O
      and 1.2 ms of CPU each) on one loaded host that gives the two of them 0.32 of
      a core; the client's CPU per response grows with its pooled connections
      (0.2 ms + 0.2 ms each), so goodput peaks near a limit of 8 and falls past it
      (the knee server with 32 workers, beside the benchmark, on this 2-core host);
    - ``shared-host-cpu``: 8 sync worker processes, 27 ms of CPU each, the client
      (3 ms + 0.06 ms per connection) sharing 1.9 cores with them: flat past 3
      (gunicorn with CPU work, beside the benchmark);
    - ``client-collapse``: 64 workers at 60 ms, the client's own CPU the bottleneck:
      1 ms per response plus 0.02 ms per idle connection per pooled connection
      (httpx's pool walk). Goodput rises with the limit up to about 32, and past it a
      lagging loop leaves connections idle, which makes each response cost more:
      the client collapses (to 0.3 of the peak at 40), and a collapse can outlast the
      load that caused it (the knee server with 32 or 64 workers on a quiet 2-core host).

    Steady state is measured from ``0.375 × duration_s``. Every model is seeded.

    Args:
        duration_s: Simulated seconds of each scenario.
        seed: Another draw of every model's randomness, as in `standard_scenarios`.
    """
    o = 100 * check_int("seed", seed, low=0)
    d = check_float("duration_s", duration_s, low=1.0)
    settle = 0.375 * d
    callers = (Client(callers=200),)

    def make(
        name: str,
        upstream: Callable[[], Upstream],
        *,
        client_cost_s: float = 0.0005,
        client_cost_per_connection_s: float = 0.0,
        client_cost_per_idle_pair_s: float = 0.0,
        host_cores: float | None = None,
        client_pause_every_s: float | None = None,
        seed: int = 0,
    ) -> Scenario:
        return Scenario(
            name=name,
            upstream=upstream,
            duration_s=d,
            settle_s=settle,
            clients=callers,
            initial_limit=1,
            client_cost_s=client_cost_s,
            client_cost_per_connection_s=client_cost_per_connection_s,
            client_cost_per_idle_pair_s=client_cost_per_idle_pair_s,
            host_cores=host_cores,
            client_pause_every_s=client_pause_every_s,
            seed=seed + o,
        )

    return {
        "backlog": make(
            "backlog",
            lambda: ServerUpstream(workers=8, service_time_s=0.04, cpu_s=0.001, cores=1, seed=11 + o),
        ),
        "cpu-bound": make(
            "cpu-bound",
            lambda: ServerUpstream(workers=8, service_time_s=0.0, cpu_s=0.027, cores=2, seed=12 + o),
            client_cost_s=0.002,
        ),
        "cpu-saturates": make(
            "cpu-saturates",
            lambda: ServerUpstream(workers=32, service_time_s=0.06, cpu_s=0.003, cores=1, seed=13 + o),
        ),
        "proxy-wall": make(
            "proxy-wall",
            lambda: ConnectionWall(
                ServerUpstream(workers=64, service_time_s=0.05, seed=14 + o), max_connections=16
            ),
        ),
        "token-bucket": make(
            "token-bucket",
            lambda: TokenBucketUpstream(
                ServerUpstream(workers=64, service_time_s=0.05, seed=15 + o), rate_per_s=150, burst=20
            ),
        ),
        "stalls": make(
            "stalls",
            lambda: ServerUpstream(workers=16, service_time_s=0.02, stall_every_s=0.33, seed=16 + o),
            client_pause_every_s=0.5,
            seed=16,
        ),
        "busy-client": make(
            "busy-client",
            lambda: ServerUpstream(workers=16, service_time_s=0.02, seed=17 + o),
            client_cost_s=0.0025,
            client_pause_every_s=0.5,
            seed=17,
        ),
        "flaky-5xx": make(
            "flaky-5xx",
            lambda: ServerUpstream(workers=16, service_time_s=0.02, error_rate=0.05, seed=18 + o),
            client_cost_s=0.0015,
            client_pause_every_s=0.5,
            seed=18,
        ),
        # Calibrated against fixed limits on the real rows (docs/control.md): the host's
        # cores are what the two processes got of a 2-core machine loaded by other work.
        "shared-host": make(
            "shared-host",
            lambda: ServerUpstream(workers=32, service_time_s=0.06, cpu_s=0.0012, cores=1, seed=19 + o),
            client_cost_s=0.0002,
            client_cost_per_connection_s=0.0002,
            host_cores=0.32,
            seed=19,
        ),
        "shared-host-cpu": make(
            "shared-host-cpu",
            lambda: ServerUpstream(workers=8, service_time_s=0.0, cpu_s=0.027, cores=8, seed=20 + o),
            client_cost_s=0.003,
            client_cost_per_connection_s=0.00006,
            host_cores=1.9,
            seed=20,
        ),
        # Calibrated against fixed limits on the quiet host's knee32 and knee64 rows
        # (docs/control.md, "A client that collapses").
        "client-collapse": make(
            "client-collapse",
            lambda: ServerUpstream(workers=64, service_time_s=0.06, cpu_s=0.0008, cores=1, seed=21 + o),
            client_cost_s=0.001,
            client_cost_per_idle_pair_s=0.00002,
            seed=21,
        ),
    }
