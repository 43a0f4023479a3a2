"""A latency cut shallower than Little's law: measured, and not kept in the default.

`LatencyAIMD` cuts a window whose median latency reads ``ratio`` × its baseline to
``limit / ratio`` (Little's law: the concurrency the upstream served without a queue). Past
a knee whose latency grows faster than the work in flight (the simulator's knee grows as
``(busy / capacity) ** 1.5``) that lands below the knee, so a gentler cut,
``limit / ratio ** power`` with ``power`` < 1, keeps a single governor nearer its best. These
variants measure that; docs/control.md ("A shallower latency cut") has the figures and why the
default keeps Little's law. At a shared upstream a cut that deep is also what drains the
queue now and then, so that every governor sees the no-load latency again: with shallow
cuts a standing queue stays, every governor's baseline creeps up with it, the governors
together hold far more than the upstream serves, and the one whose baseline rose least
reads the most queueing and gives way until it is starved.

    B=benchmarks/cut_depth.py
    .venv/bin/python benchmarks/control.py --draws 6 --policy "ratio^0.75=$B:power_75" \\
        --policy "ratio^0.5=$B:power_50" --policy "ratio^0.75, isolated=$B:power_75_isolated"
    .venv/bin/python benchmarks/control.py --draws 6 --policy "ratio^0.75 exit=$B:power_75_exit" \\
        --policy "ratio^0.5 exit=$B:power_50_exit"

and ``--late-joiner 10`` instead of ``--draws 6``.

This subclasses the default and overrides a private method (`LatencyAIMD._cut`), reading the
ratio from the decision's reason: it is a measurement of an idea, pinned to today's default,
not an extension point.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from aiogovernor.limits import Adjustment, LatencyAIMD, Window

_LATENCY_CUT = re.compile(r"^latency p50 ([0-9.]+)x")


class ShallowCut(LatencyAIMD):
    """`LatencyAIMD` whose latency cuts go to ``limit / ratio ** power`` at the deepest."""

    def __init__(self, *, power: float, isolated: bool = False, slow_start_exit: bool = False) -> None:
        super().__init__()
        self._power = power
        self._isolated = isolated
        self._exit_only = slow_start_exit

    def _cut(self, target: float, window: Window, reason: str, *, ceiling: bool) -> Adjustment:
        # Refusals (ceiling=True) cut as before; so does a queue that lasted two windows
        # when ``isolated``. The floors still apply: the cut is the shallower of the two.
        found = _LATENCY_CUT.match(reason)
        if (
            not ceiling
            and found
            and not (self._isolated and self._streak > 1)
            and (self.in_slow_start or not self._exit_only)
        ):
            limit = self.limit
            ratio = float(found.group(1))
            shallow = max(limit / ratio**self._power, limit * 0.5)
            if shallow > target:
                target = shallow
                reason += f": shallow cut, ratio^{self._power:g}"
        return super()._cut(target, window, reason, ceiling=ceiling)


def _variant(
    power: float, *, isolated: bool = False, slow_start_exit: bool = False
) -> Callable[[], LatencyAIMD]:
    return functools.partial(ShallowCut, power=power, isolated=isolated, slow_start_exit=slow_start_exit)


power_75 = _variant(0.75)
power_50 = _variant(0.5)
# Only for a cut whose window follows a window without queueing.
power_75_isolated = _variant(0.75, isolated=True)
# Only for the cut that ends slow start (the first decrease).
power_75_exit = _variant(0.75, slow_start_exit=True)
power_50_exit = _variant(0.5, slow_start_exit=True)
