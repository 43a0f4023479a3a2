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

Two ways to give the shallow cut that drain back are measured too: Little's law's cut
whenever the baseline has crept above the lowest it read at a cut (``anchored``), and a drain of
every governor at once on the clock's beat (`DrainedCut`, after Envoy's periodic minimum
latency measurement and BBR's ProbeRTT), which needs the governors' clocks to agree.

    B=benchmarks/cut_depth.py
    .venv/bin/python benchmarks/control.py --draws 6 --policy "ratio^0.75=$B:power_75" \\
        --policy "ratio^0.5=$B:power_50" --policy "ratio^0.75, isolated=$B:power_75_isolated"
    .venv/bin/python benchmarks/control.py --draws 6 --policy "ratio^0.75 exit=$B:power_75_exit" \\
        --policy "ratio^0.5 exit=$B:power_50_exit"
    .venv/bin/python benchmarks/control.py --draws 6 --policy "r75=$B:power_75" \\
        --policy "r75 anchored 10%=$B:power_75_anchored" --policy "r75 anchored 5%=$B:power_75_anchored_5"
    .venv/bin/python benchmarks/control.py --draws 6 --policy "r75 drained 10s=$B:power_75_drained_10" \\
        --policy "r75 d10 to 3/4=$B:power_75_drained_10_quarter" \\
        --policy "r75 d5 to 3/4=$B:power_75_drained_5_quarter" --policy "d10 to 3/4=$B:drained_10_quarter"
    .venv/bin/python benchmarks/control.py --draws 6 --policy "r75 drained 10s=$B:power_75_drained_10" \\
        --policy "r75 d10 crept=$B:power_75_drained_10_crept" \\
        --policy "r75 d5 crept=$B:power_75_drained_5_crept" \\
        --policy "r75 d5 crept 5%=$B:power_75_drained_5_crept_5"
    .venv/bin/python benchmarks/control.py --draws 6 \\
        --policy "r75 d10 to 3/4=$B:power_75_drained_10_quarter" \\
        --policy "r75 d10 to 3/4, unaligned=$B:power_75_drained_10_quarter_unaligned"

and ``--late-joiner 10`` instead of ``--draws 6``; on real servers, through
``real_upstreams.py``'s ``--policy`` in the same form.

These subclass the default and override its private methods (`LatencyAIMD._cut`, reading
the ratio from the decision's reason, and `LatencyAIMD.update`): a measurement of an idea,
pinned to today's default, not an extension point.
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from collections.abc import Callable

from aiogovernor.limits import Adjustment, LatencyAIMD, Window

_LATENCY_CUT = re.compile(r"^latency p50 ([0-9.]+)x")


class ShallowCut(LatencyAIMD):
    """`LatencyAIMD` whose latency cuts go to ``limit / ratio ** power`` at the deepest."""

    def __init__(
        self,
        *,
        power: float,
        isolated: bool = False,
        slow_start_exit: bool = False,
        anchored: float | None = None,
    ) -> None:
        super().__init__()
        self._power = power
        self._isolated = isolated
        self._exit_only = slow_start_exit
        self._anchored = anchored
        self._lowest: float | None = None

    def _cut(self, target: float, window: Window, reason: str, *, ceiling: bool) -> Adjustment:
        # Refusals (ceiling=True) cut as before; so does a queue that lasted two windows
        # when ``isolated``. The floors still apply: the cut is the shallower of the two.
        found = _LATENCY_CUT.match(reason)
        baseline = self.baseline_s
        crept = False
        if self._anchored is not None and baseline is not None:
            lowest = baseline if self._lowest is None else min(self._lowest, baseline)
            self._lowest = lowest
            crept = baseline > lowest * (1.0 + self._anchored)
        if (
            not ceiling
            and found
            and not crept
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
    power: float, *, isolated: bool = False, slow_start_exit: bool = False, anchored: float | None = None
) -> Callable[[], LatencyAIMD]:
    return functools.partial(
        ShallowCut, power=power, isolated=isolated, slow_start_exit=slow_start_exit, anchored=anchored
    )


power_75 = _variant(0.75)
power_50 = _variant(0.5)
# Only for a cut whose window follows a window without queueing.
power_75_isolated = _variant(0.75, isolated=True)
# Only for the cut that ends slow start (the first decrease).
power_75_exit = _variant(0.75, slow_start_exit=True)
power_50_exit = _variant(0.5, slow_start_exit=True)
# Only while the baseline is within 10 % / 5 % of the lowest it read at a cut: a baseline that crept
# up (a standing queue it learned) gets Little's law's cut, which drains the queue.
power_75_anchored = _variant(0.75, anchored=0.10)
power_75_anchored_5 = _variant(0.75, anchored=0.05)


class DrainedCut(ShallowCut):
    """`ShallowCut` that drains its share of a queue every ``period_s``, on the clock's beat.

    What a cut as deep as Little's law does now and then at a shared upstream, done on
    purpose (Envoy's gradient controller and BBR's ProbeRTT measure the minimum latency
    again periodically): at each multiple of ``period_s`` on the clock, which governors on
    one clock pass together, the limit drops to ``depth`` × itself for two windows; the
    second, with the queue gone, is read as the no-load latency, and the limit returns.
    With ``crept``, only when the baseline rose that fraction above the lowest it read
    since the last drain; ``offset_s`` moves this governor's beats, as another host's
    clock would.
    """

    def __init__(
        self,
        *,
        power: float,
        period_s: float,
        depth: float = 0.5,
        crept: float | None = None,
        offset_s: float = 0.0,
    ) -> None:
        super().__init__(power=power)
        self._offset_s = offset_s
        self._period_s = period_s
        self._depth = depth
        self._crept = crept
        self._floor_s: float | None = None  # the lowest baseline since the last drain
        self._beat: int | None = None
        self._drain: tuple[float, int] | None = None  # (the limit to return to, windows left)

    def update(self, window: Window) -> Adjustment:
        # The drain's two windows are not shown to the default: its memories (goodput, what
        # was delivered, the window count) skip them, and an overload in them is not cut on.
        if self._drain is not None:
            resume, left = self._drain
            if left > 1:
                self._drain = (resume, left - 1)
                return self._hold("draining: the queue from before leaves")
            self._drain = None
            baseline = self.baseline_s
            self._floor_s = baseline
            if baseline is not None and window.ok >= 5 and not window.overload:
                # The window's median plus twice its noise is the most the no-load
                # latency can be; a baseline above that learned a queue.
                noise = window.latency_cv / window.ok**0.5
                drained = window.latency_p50_s * (1.0 + 2.0 * noise)
                if drained < baseline:
                    self._baseline.seed(drained)
                    self._floor_s = drained
                    return self._set(
                        resume, f"drained: baseline {baseline * 1000:.1f} -> {drained * 1000:.1f} ms"
                    )
            return self._set(resume, "drained: baseline holds")
        baseline = self.baseline_s
        if baseline is not None and (self._floor_s is None or baseline < self._floor_s):
            self._floor_s = baseline
        beat = math.floor((window.end + self._offset_s) / self._period_s)
        if self._beat is None:
            self._beat = beat
        elif beat != self._beat:
            self._beat = beat
            crept = self._crept is None or (
                baseline is not None
                and self._floor_s is not None
                and baseline > self._floor_s * (1 + self._crept)
            )
            if (
                self._resume is None
                and baseline is not None
                and crept
                and not self.in_slow_start
                and self.limit >= 4
            ):
                self._drain = (self.limit, 2)
                return self._set(self.limit * self._depth, f"drain every {self._period_s:g} s")
        return super().update(window)


# Little's law's cut or ratio^0.75's, with a drain of half the limit every 10 s / 5 s.
drained_10 = functools.partial(DrainedCut, power=1.0, period_s=10.0)
power_75_drained_10 = functools.partial(DrainedCut, power=0.75, period_s=10.0)
power_75_drained_5 = functools.partial(DrainedCut, power=0.75, period_s=5.0)
# Only when the baseline rose 10 % / 5 % above the lowest it read since the last drain.
power_75_drained_10_crept = functools.partial(DrainedCut, power=0.75, period_s=10.0, crept=0.10)
power_75_drained_5_crept = functools.partial(DrainedCut, power=0.75, period_s=5.0, crept=0.10)
power_75_drained_5_crept_5 = functools.partial(DrainedCut, power=0.75, period_s=5.0, crept=0.05)
# A shallower drain: to three quarters of the limit.
power_75_drained_10_quarter = functools.partial(DrainedCut, power=0.75, period_s=10.0, depth=0.75)
power_75_drained_5_quarter = functools.partial(DrainedCut, power=0.75, period_s=5.0, depth=0.75)
drained_10_quarter = functools.partial(DrainedCut, power=1.0, period_s=10.0, depth=0.75)


def power_75_drained_10_quarter_unaligned() -> DrainedCut:
    """``power_75_drained_10_quarter`` on four clocks that disagree: each beat 2.5 s after the last's."""
    offset_s = 2.5 * (next(_UNALIGNED) % 4)
    return DrainedCut(power=0.75, period_s=10.0, depth=0.75, offset_s=offset_s)


_UNALIGNED = itertools.count()
