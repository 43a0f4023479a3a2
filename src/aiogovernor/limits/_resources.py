"""`ResourceCeiling`: host CPU and memory as a ceiling, with hysteresis, around any policy."""

from __future__ import annotations

from collections.abc import Callable

from aiogovernor._samples import Window
from aiogovernor._validate import check_float

from ._base import Adjustment, LimitPolicy

__all__ = ["ResourceCeiling", "ResourceReading", "psutil_reading"]

ResourceReading = Callable[[], tuple[float, float]]
"""Returns host ``(cpu_percent, memory_percent)`` without blocking."""


def psutil_reading() -> ResourceReading:
    """A non-blocking reader of host CPU and memory percent, through psutil.

    CPU is ``psutil.cpu_percent(interval=None)``: the use since the previous
    call, so it never sleeps inside the event loop.

    Raises:
        ImportError: When psutil is missing (``pip install aiogovernor[resources]``).
    """
    try:
        import psutil
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("ResourceCeiling needs psutil: pip install 'aiogovernor[resources]'") from exc
    psutil.cpu_percent(interval=None)  # the first call only starts the measurement

    def read() -> tuple[float, float]:
        return float(psutil.cpu_percent(interval=None)), float(psutil.virtual_memory().percent)

    return read


class ResourceCeiling:
    """Wrap a policy so that host CPU or memory caps its limit, with hysteresis.

    Every window the inner policy decides first; then the host reading
    (taken without blocking) may override it:

    - above a *high* threshold the limit shrinks by ``shrink_ratio`` per
      window, and keeps shrinking until the reading falls below the
      *target* (hysteresis: it does not flap around one threshold);
    - between target and high the limit may not grow;
    - below target the inner policy's decision stands.

    The inner policy is reset to the capped limit, so it resumes from there.
    Decisions name the signals that drove them.

    Args:
        inner: The policy to cap.
        cpu_target_percent: CPU above which the limit may not grow (None: CPU not read).
        cpu_high_percent: CPU above which it shrinks; defaults to midway from target to 100.
        memory_target_percent: Memory above which the limit may not grow (None: memory not read).
        memory_high_percent: Memory above which it shrinks; defaults to midway from target to 100.
        shrink_ratio: Multiplier per hot window, in [0.5, 1).
        read: Returns ``(cpu_percent, memory_percent)``; defaults to `psutil_reading`.
    """

    def __init__(
        self,
        inner: LimitPolicy,
        *,
        cpu_target_percent: float | None = 80.0,
        cpu_high_percent: float | None = None,
        memory_target_percent: float | None = 85.0,
        memory_high_percent: float | None = None,
        shrink_ratio: float = 0.9,
        read: ResourceReading | None = None,
    ) -> None:
        if not isinstance(inner, LimitPolicy):
            raise TypeError(f"inner must implement LimitPolicy, got {inner!r}")
        if cpu_target_percent is None and memory_target_percent is None:
            raise ValueError("set cpu_target_percent or memory_target_percent (or both)")
        if read is not None and not callable(read):
            raise TypeError(f"read must be a callable returning (cpu, memory) percent, got {read!r}")
        self._inner = inner
        self._cpu = _thresholds("cpu", cpu_target_percent, cpu_high_percent)
        self._memory = _thresholds("memory", memory_target_percent, memory_high_percent)
        self._shrink = check_float("shrink_ratio", shrink_ratio, low=0.5, high=1.0, high_open=True)
        self._read = read or psutil_reading()
        self._hot = False

    @property
    def name(self) -> str:
        """The inner policy's name, marked."""
        return f"{self._inner.name}+resources"

    @property
    def inner(self) -> LimitPolicy:
        """The wrapped policy."""
        return self._inner

    @property
    def limit(self) -> float:
        """The current limit."""
        return self._inner.limit

    @property
    def min_limit(self) -> int:
        """The inner policy's floor."""
        return self._inner.min_limit

    @property
    def max_limit(self) -> int:
        """The inner policy's ceiling."""
        return self._inner.max_limit

    @property
    def hot(self) -> bool:
        """Whether the host is over a high threshold and not yet back under the target."""
        return self._hot

    def reset(self, limit: float) -> None:
        """Reset the inner policy."""
        self._inner.reset(limit)

    def update(self, window: Window) -> Adjustment:
        """Let the inner policy decide, then cap its answer by the host reading."""
        old = self._inner.limit
        adjustment = self._inner.update(window)
        cpu, memory = self._read()
        signals = []
        high = above = False
        for label, value, limits in (("cpu", cpu, self._cpu), ("memory", memory, self._memory)):
            if limits is None:
                continue
            target, high_at = limits
            if value >= high_at:
                high = True
                signals.append(f"{label} {value:.0f}% >= {high_at:g}%")
            elif value >= target:
                above = True
                signals.append(f"{label} {value:.0f}% >= {target:g}%")
        if high:
            self._hot = True
        elif not above:
            self._hot = False
        if self._hot:
            new = min(adjustment.limit, old * self._shrink)
            reason = f"{', '.join(signals)}: x{self._shrink:g} (inner: {adjustment.reason})"
        elif above and adjustment.limit > old:
            new = old
            reason = f"{', '.join(signals)}: no growth (inner: {adjustment.reason})"
        else:
            return adjustment
        self._inner.reset(max(new, self._inner.min_limit))
        return Adjustment(self._inner.limit, reason)

    def __repr__(self) -> str:
        return f"ResourceCeiling({self._inner!r}, cpu={self._cpu}, memory={self._memory})"


def _thresholds(label: str, target: float | None, high: float | None) -> tuple[float, float] | None:
    if target is None:
        if high is not None:
            raise ValueError(f"{label}_high_percent needs {label}_target_percent")
        return None
    target = check_float(f"{label}_target_percent", target, low=0.0, high=100.0, low_open=True)
    high = (target + 100.0) / 2 if high is None else high
    return target, check_float(f"{label}_high_percent", high, low=target, high=100.0)
