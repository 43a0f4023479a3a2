"""Validation helpers shared by every config object: clear errors, never silent clamps."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_bool", "check_bounds", "check_float", "check_int", "conforms"]

# (protocol, class) -> whether the class's instances implement the protocol.
_conforming: dict[tuple[type, type], bool] = {}


def conforms(value: object, protocol: type[Any]) -> bool:
    """``isinstance(value, protocol)`` for a ``runtime_checkable`` protocol, answered once per class.

    Such an isinstance looks up every member of the protocol on each call (some
    40 us, half the cost of building a governor). A class either has a protocol's
    members or not, so the answer is kept per class (an instance that adds or
    removes a member of its own is not looked at again).
    """
    key = (protocol, type(value))
    known = _conforming.get(key)
    if known is None:
        known = _conforming[key] = isinstance(value, protocol)
    return known


def check_int(name: str, value: object, *, low: int) -> int:
    """Return ``value`` if it is an integer >= ``low``, else raise ValueError naming it."""
    if type(value) is int and value >= low:  # the common case, first: every governor checks a dozen
        return value
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def check_bool(name: str, value: object) -> bool:
    """Return ``value`` if it is a bool, else raise TypeError naming it (``'no'`` is not False)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_float(
    name: str,
    value: object,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a float if it is a finite number in the range, else raise ValueError.

    The message names the parameter and the accepted range.
    """
    if (
        type(value) is float  # the common case, first: every governor checks a dozen
        and (value > low if low_open else value >= low)
        and (value < high if high_open else value <= high)
        and math.isfinite(value)
    ):
        return value
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok:
        try:
            v = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an int beyond a float (10**400): out of range, not a crash
            ok = False
        else:
            ok = math.isfinite(v) and (v > low if low_open else v >= low)
            ok = ok and (v < high if high_open else v <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open else "]"
        raise ValueError(f"{name} must be a finite number in {left}{low}, {high}{right}, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def check_bounds(min_limit: int, max_limit: int, initial_limit: float | None) -> None:
    """Check ``min_limit <= initial_limit <= max_limit`` with clear errors."""
    check_int("min_limit", min_limit, low=1)
    check_int("max_limit", max_limit, low=1)
    if min_limit > max_limit:
        raise ValueError(f"min_limit ({min_limit}) must not exceed max_limit ({max_limit})")
    if initial_limit is not None:
        check_float("initial_limit", initial_limit, low=min_limit, high=max_limit)
