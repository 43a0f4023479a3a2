"""How `real_upstreams.py` turns goodputs into ratios: pure functions, no servers, no event loop.

Kept apart so that the method can be read in one place and tested on made-up numbers.
Every ratio pairs a contender's repetition ``k`` with a denominator from repetition ``k``:

- **vs best fixed** (the benchmark's first ratio, kept): the best fixed limit is the sweep's
  limit with the best median goodput over the repetitions, among those whose median
  overload is at most 1 % (as the simulator's oracle chooses); repetition ``k``'s goodput is
  divided by that limit's goodput in the sweep's repetition ``k``. The same runs choose the
  limit and serve as the denominator, so the denominator is biased upward (the winner's
  curse: among limits whose goodputs differ by less than the noise, the one that got lucky
  wins) and every contender, even a copy of that limit, scores below 1 on average.
- **vs sweep max**: repetition ``k``'s goodput over the highest goodput of any fixed limit in
  the sweep's repetition ``k``: the most pessimistic of the three, the winner's curse at
  its strongest (shown because it is the figure a reader may assume).
- **vs twin** (held out): once the sweep has chosen the best fixed limit, ``Fixed(best)`` runs
  again as a contender (the "twin"), interleaved with the policies; repetition ``k``'s
  goodput is divided by the twin's in the same repetition. The twin's runs played no part in
  choosing the limit, so this denominator is an unbiased estimate of that limit's goodput,
  and it is measured beside the policies (same stretch of time, same rotation of the order).

The twin's own "vs best fixed" ratio is the benchmark's noise floor made visible: a fixed
limit judged against itself.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import TypeVar

__all__ = ["MAX_OVERLOAD", "best_fixed", "rotation", "same_rep_ratios", "summary", "sweep_max"]

T = TypeVar("T")


# The most overload (refused and timed-out requests, as a share of all) a fixed limit may have
# in the median repetition to be the best fixed limit: the simulator's oracle's rule
# (`aiogovernor.sim.sweep_fixed`). A limit that buys its goodput with refusals (a wall
# that answers 503 at once, and callers that retry) is not one a user would choose.
MAX_OVERLOAD = 0.01


def best_fixed(
    fixed: Mapping[int, Sequence[float]], overload: Mapping[int, Sequence[float]] | None = None
) -> int:
    """The limit with the best median goodput over the repetitions (ties: the smallest limit).

    With ``overload`` (each limit's overload share per repetition), only the limits whose
    median share is at most `MAX_OVERLOAD` compete, when there are any.
    """
    if not fixed:
        raise ValueError("no fixed limits were swept")
    limits = sorted(fixed)
    if overload is not None:
        within = [c for c in limits if statistics.median(overload[c]) <= MAX_OVERLOAD]
        limits = within or limits
    return max(limits, key=lambda c: statistics.median(fixed[c]))


def sweep_max(fixed: Mapping[int, Sequence[float]]) -> list[float]:
    """Each repetition's highest goodput over every swept limit."""
    reps = {len(runs) for runs in fixed.values()}
    if len(reps) != 1:
        raise ValueError(f"every swept limit needs the same number of repetitions, got {sorted(reps)}")
    return [max(runs[k] for runs in fixed.values()) for k in range(reps.pop())]


def same_rep_ratios(goodputs: Sequence[float], denominators: Sequence[float]) -> list[float]:
    """Repetition ``k``'s goodput over repetition ``k``'s denominator (nan where it is 0)."""
    if len(goodputs) != len(denominators):
        raise ValueError(f"{len(goodputs)} repetitions against {len(denominators)} denominators")
    return [g / d if d else math.nan for g, d in zip(goodputs, denominators, strict=True)]


def summary(ratios: Sequence[float]) -> tuple[float, float]:
    """Median and worst (lowest) of the repetitions' ratios."""
    return statistics.median(ratios), min(ratios)


def rotation(items: Sequence[T], rep: int, reps: int) -> list[T]:
    """The running order of repetition ``rep`` (0-based) of ``reps``: ``items`` rotated.

    Each repetition starts ``len(items) / reps`` places further on, so that over the
    repetitions each contender runs early and late, after different neighbours: what the
    previous run left behind (a server still busy, the client's heap) does not always hit
    the same contender.
    """
    if not 0 <= rep < reps:
        raise ValueError(f"repetition {rep} of {reps}")
    shift = (rep * len(items)) // reps
    return [*items[shift:], *items[:shift]]
