"""One reading of every live governor's `stats()`, as the exporters publish it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aiogovernor import _registry
from aiogovernor._registry import Governor  # either gate: the async one or the thread gate
from aiogovernor._samples import Outcome

__all__ = ["DIRECTIONS", "OUTCOMES", "Reading", "read_live"]

OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)
DIRECTIONS: tuple[str, ...] = ("up", "down", "hold")


@dataclass(frozen=True, slots=True, kw_only=True)
class Reading:
    """What the exporters publish for one (environment, governor name).

    Two live governors with the same name and environment (a script that
    made one twice) would give two series with the same labels, which a
    Prometheus server rejects: they are published as one, summed (the pause
    is the longer of the two).
    """

    governor: str
    environment: str
    limit: int
    inflight: int
    waiting: int
    paused_s: float
    outcomes: Mapping[str, int]
    decisions: Mapping[str, int]
    members: tuple[Governor, ...]


def read_live() -> list[Reading]:
    """Read `Governor.stats` of every live governor once, grouped by (environment, name).

    A governor whose stats cannot be read here (see below) is left out.
    """
    readings: dict[tuple[str, str], Reading] = {}
    for governor in _registry.live_governors():
        try:
            s = governor.stats()
        except RuntimeError:
            # Its clock cannot be read from this thread: paused on an event loop that has
            # ended, or on trio (whose clock is read in trio's own thread). Left out of this
            # reading rather than failing the whole collection.
            continue
        key = (s.environment, s.name)
        seen = readings.get(key)
        if seen is None:
            readings[key] = Reading(
                governor=s.name,
                environment=s.environment,
                limit=s.limit,
                inflight=s.inflight,
                waiting=s.waiting,
                paused_s=s.paused_for_s,
                outcomes={o: s.counts.get(o, 0) for o in OUTCOMES},
                decisions={d: s.decisions_by_direction.get(d, 0) for d in DIRECTIONS},
                members=(governor,),
            )
        else:
            readings[key] = Reading(
                governor=s.name,
                environment=s.environment,
                limit=seen.limit + s.limit,
                inflight=seen.inflight + s.inflight,
                waiting=seen.waiting + s.waiting,
                paused_s=max(seen.paused_s, s.paused_for_s),
                outcomes={o: seen.outcomes[o] + s.counts.get(o, 0) for o in OUTCOMES},
                decisions={d: seen.decisions[d] + s.decisions_by_direction.get(d, 0) for d in DIRECTIONS},
                members=(*seen.members, governor),
            )
    return sorted(readings.values(), key=lambda r: (r.environment, r.governor))
