"""The oracle: the best fixed limit for a scenario, found by a sweep."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from ._scenario import Scenario, run_scenario

__all__ = ["Oracle", "sweep_fixed"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Oracle:
    """The outcome of a fixed-limit sweep.

    Attributes:
        limit: The fixed limit with the best steady-state goodput at an
            overload rate within the bound.
        goodput: Its goodput (requests per second).
        goodputs: Every limit tried and its goodput.
    """

    limit: int
    goodput: float
    goodputs: Mapping[int, float]


def sweep_fixed(scenario: Scenario, limits: Iterable[int], *, max_overload_rate: float = 0.01) -> Oracle:
    """Run ``scenario`` once per fixed limit and keep the best.

    A limit whose steady state refuses more than ``max_overload_rate`` of its
    requests is not eligible (it would win goodput by hammering the upstream).

    Args:
        scenario: The model and demand.
        limits: The fixed limits to try, per client.
        max_overload_rate: The largest overload rate a winner may have.

    Raises:
        ValueError: If ``limits`` is empty or no limit is eligible.
    """
    goodputs: dict[int, float] = {}
    eligible: dict[int, float] = {}
    for limit in limits:
        result = run_scenario(scenario, limit)
        goodputs[limit] = result.goodput
        if result.overload_rate <= max_overload_rate:
            eligible[limit] = result.goodput
    if not goodputs:
        raise ValueError("limits must name at least one fixed limit")
    if not eligible:
        raise ValueError(f"no limit kept overload within {max_overload_rate:.1%}: {sorted(goodputs)}")
    best = max(eligible, key=lambda k: (eligible[k], -k))
    return Oracle(limit=best, goodput=eligible[best], goodputs=goodputs)
