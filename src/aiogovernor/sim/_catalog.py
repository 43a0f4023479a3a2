"""The standard scenarios: the models the default policy is tested and benchmarked on."""

from __future__ import annotations

from aiogovernor._samples import WindowConfig
from aiogovernor._validate import check_float, check_int

from ._scenario import Client, Scenario
from ._upstreams import KneeUpstream, WallUpstream

__all__ = ["standard_scenarios"]


def standard_scenarios(
    *, capacity: int = 16, service_time_s: float = 0.05, duration_s: float = 40.0
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
    """
    c = check_int("capacity", capacity, low=2)
    s = check_float("service_time_s", service_time_s, low=0.0, low_open=True)
    d = check_float("duration_s", duration_s, low=1.0)
    settle = 0.375 * d
    long = 1.5 * d
    many = Client(callers=max(50, 10 * c))
    return {
        "knee": Scenario(
            name="knee",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=1),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "knee-high-start": Scenario(
            name="knee-high-start",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=1),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=10 * c,
        ),
        "wall": Scenario(
            name="wall",
            upstream=lambda: WallUpstream(capacity=c, service_time_s=s, seed=2),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "heavy-tail": Scenario(
            name="heavy-tail",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, tail_sigma=0.5, seed=3),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
            window=WindowConfig(min_samples=50),
        ),
        "flaky": Scenario(
            name="flaky",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, error_rate=0.05, seed=4),
            duration_s=d,
            settle_s=settle,
            clients=(many,),
            initial_limit=1,
        ),
        "low-demand": Scenario(
            name="low-demand",
            upstream=lambda: KneeUpstream(capacity=c, service_time_s=s, seed=5),
            duration_s=d,
            settle_s=settle,
            clients=(Client(callers=c // 2),),
            initial_limit=1,
        ),
        "shift": Scenario(
            name="shift",
            upstream=lambda: KneeUpstream(capacity=2 * c, service_time_s=s, seed=6),
            duration_s=long,
            settle_s=settle,
            clients=(Client(callers=max(100, 20 * c)),),
            capacity_schedule=((long / 3, max(1, c // 2)), (2 * long / 3, 2 * c)),
            initial_limit=1,
        ),
        "shared": Scenario(
            name="shared",
            upstream=lambda: KneeUpstream(capacity=2 * c, service_time_s=s, seed=7),
            duration_s=long,
            settle_s=settle,
            clients=tuple(
                Client(callers=max(50, 4 * c), start_s=i * d / 15, stop_s=long * 0.9 if i == 0 else None)
                for i in range(4)
            ),
            initial_limit=1,
        ),
    }
