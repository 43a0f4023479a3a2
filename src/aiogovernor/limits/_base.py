"""The policy protocol: what the gate asks of a limit algorithm."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from aiogovernor._frozen import blank_of
from aiogovernor._samples import Window
from aiogovernor._validate import check_bounds, check_float

__all__ = ["Adjustment", "BoundedPolicy", "LimitPolicy"]


@dataclass(frozen=True, slots=True)
class Adjustment:
    """A policy's answer to one window: its new limit and why."""

    limit: float
    reason: str


_AdjustmentBlank = blank_of(Adjustment)
_new = object.__new__


def _adjustment(limit: float, reason: str) -> Adjustment:
    """``Adjustment(limit, reason)`` at a third of its constructor's cost (see `blank_of`)."""
    made: Any = _new(_AdjustmentBlank)
    made.limit = limit
    made.reason = reason
    made.__class__ = Adjustment
    return made  # type: ignore[no-any-return]


@runtime_checkable
class LimitPolicy(Protocol):
    """A limit algorithm: a plain object fed windows and asked for a limit.

    A policy knows nothing of asyncio: it can be driven with scripted windows
    and explicit timestamps, with no event loop at all. It keeps its limit as
    a float; the gate admits ``max(min_limit, floor(limit))`` permits.
    """

    @property
    def name(self) -> str:
        """A short name for logs and persisted state."""
        ...

    @property
    def limit(self) -> float:
        """The current limit."""
        ...

    @property
    def min_limit(self) -> int:
        """The smallest limit the policy will choose."""
        ...

    @property
    def max_limit(self) -> int:
        """The largest limit the policy will choose."""
        ...

    def reset(self, limit: float) -> None:
        """Start over from ``limit`` (clamped to the bounds), e.g. a learned value."""
        ...

    def update(self, window: Window) -> Adjustment:
        """Take one closed window and return the next limit."""
        ...


class BoundedPolicy:
    """Shared plumbing for policies: validated bounds and a clamped float limit.

    Subclasses implement `update`; they call `_clamp` on what they compute.
    """

    name = "bounded"

    def __init__(self, *, min_limit: int, max_limit: int, initial_limit: float | None) -> None:
        check_bounds(min_limit, max_limit, initial_limit)
        self._min_limit = min_limit
        self._max_limit = max_limit
        self._limit = float(initial_limit if initial_limit is not None else min_limit)

    @property
    def limit(self) -> float:
        """The current limit."""
        return self._limit

    @property
    def min_limit(self) -> int:
        """The smallest limit the policy will choose."""
        return self._min_limit

    @property
    def max_limit(self) -> int:
        """The largest limit the policy will choose."""
        return self._max_limit

    def reset(self, limit: float) -> None:
        """Start over from ``limit``, clamped to the bounds."""
        check_float("limit", limit, low=0.0, low_open=True)
        self._limit = self._clamp(limit)

    def _clamp(self, limit: float) -> float:
        return min(float(self._max_limit), max(float(self._min_limit), limit))

    def _set(self, limit: float, reason: str) -> Adjustment:
        self._limit = new = self._clamp(limit)
        return _adjustment(new, reason)

    def _hold(self, reason: str) -> Adjustment:
        return _adjustment(self._limit, reason)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(limit={self._limit:g}, "
            f"min_limit={self._min_limit}, max_limit={self._max_limit})"
        )


def gate_limit(limit: float, min_limit: int = 1) -> int:
    """The integer number of permits a float limit admits."""
    return max(min_limit, 1, math.floor(limit + 1e-9))
