"""The variants of the delivered floor measured before one was kept in the default.

BBR estimates the concurrency a path holds without a queue as the best delivery rate seen
times the lowest latency seen. Here, each limit-bound window's successful calls per second
times `LatencyAIMD.baseline_s` is the concurrency that window delivered, and a latency cut
stops at the highest of the last ``keep`` windows'. With ``cap``, the floor never keeps more
than ``cap`` of the limit, so that every latency cut is still a multiplicative one; with
``deeper_than``, it applies only to windows whose median read over that many times the
baseline (before the client's loop lag is taken off); with ``isolated``, only when the
window before did not queue. Each variant is built on the default without its own delivered
floor (``delivered_floor_windows=0``). The default keeps ``deeper_than=1.5,
isolated=True``, the depth read less the client's loop lag (`LatencyAIMD`'s
``delivered_floor_windows``). docs/control.md, "The delivered floor", has every variant's
figures and what each cost:

    B=benchmarks/delivered_floor.py
    .venv/bin/python benchmarks/control.py --draws 6 --policy "no delivered floor=$B:no_floor" \\
        --policy "every cut=$B:every_cut" --policy "this window=$B:this_window" \\
        --policy "slow start exit=$B:slow_start_exit" --policy "at most 0.8=$B:at_most_80" \\
        --policy "at most 0.85=$B:at_most_85" --policy "deeper than 1.3=$B:deeper_than_13" \\
        --policy "deeper than 1.5=$B:deeper_than_15" --policy "isolated 1.3=$B:isolated_13" \\
        --policy "isolated 1.5=$B:isolated_15"

and the same contenders with ``--late-joiner 10`` instead of ``--draws 6``.

This subclasses the default and overrides a private method (`LatencyAIMD._cut`): it is a
measurement of an idea, pinned to today's default, not an extension point.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from aiogovernor.limits import Adjustment, LatencyAIMD, Window


class DeliveredFloor(LatencyAIMD):
    """`LatencyAIMD` whose latency cuts stop at the concurrency delivered lately."""

    def __init__(
        self,
        *,
        keep: int = 3,
        cap: float = 1.0,
        slow_start_only: bool = False,
        deeper_than: float = 1.0,
        isolated: bool = False,
    ) -> None:
        super().__init__(delivered_floor_windows=0)
        self._keep = keep
        self._cap = cap
        self._slow_start_only = slow_start_only
        self._deeper_than = deeper_than
        self._isolated = isolated
        self._floor_memory: list[float] = []
        self._ratio = 1.0

    def update(self, window: Window) -> Adjustment:
        baseline = self.baseline_s
        self._ratio = window.latency_p50_s / baseline if baseline else 1.0
        if baseline and window.limit_bound and window.ok >= 5:
            self._floor_memory.append(window.throughput * baseline)
            del self._floor_memory[: -self._keep]
        return super().update(window)

    def _cut(self, target: float, window: Window, reason: str, *, ceiling: bool) -> Adjustment:
        # Refusals (ceiling=True) cut as before: only a latency cut stops at the floor.
        if (
            not ceiling
            and self._floor_memory
            and (self.in_slow_start or not self._slow_start_only)
            and self._ratio > self._deeper_than
            and not (self._isolated and self._streak > 1)
        ):
            floor = min(max(self._floor_memory), self.limit * self._cap)
            if floor > target:
                target = floor
                reason += f": delivered {floor:.1f}"
        return super()._cut(target, window, reason, ceiling=ceiling)


def _variant(**options: Any) -> Callable[[], LatencyAIMD]:
    return functools.partial(DeliveredFloor, **options)


def no_floor() -> LatencyAIMD:
    """The default without its delivered floor: what each variant is measured against."""
    return LatencyAIMD(delivered_floor_windows=0)


# Every latency cut stops at the best of the last three windows' delivered concurrency,
# or of the cutting window's alone, or only the cut that ends slow start.
every_cut = _variant()
this_window = _variant(keep=1)
slow_start_exit = _variant(slow_start_only=True)
# As every_cut, but the floor never keeps more than this share of the limit.
at_most_80 = _variant(cap=0.8)
at_most_85 = _variant(cap=0.85)
# Only for windows that read over this many times the baseline.
deeper_than_13 = _variant(deeper_than=1.3)
deeper_than_15 = _variant(deeper_than=1.5)
# And only when the window before did not queue: 1.5 is the rule the default keeps.
isolated_13 = _variant(deeper_than=1.3, isolated=True)
isolated_15 = _variant(deeper_than=1.5, isolated=True)
