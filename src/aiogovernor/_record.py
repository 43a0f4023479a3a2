"""What a governor learned, as one frozen, schema-versioned record."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

__all__ = ["SCHEMA_VERSION", "LearnedState"]

SCHEMA_VERSION = 1
"""The version of the persisted record; a store refuses records of another version."""


def _finite(value: object) -> bool:
    """Whether ``value`` is a finite int or float (an int too large for a float is not)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # math.isfinite(10**400) raises instead of answering
        return False


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value: object) -> str:
    """``value`` for an error text, cut short: a 400-digit number says nothing more than its start."""
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _number(data: dict[str, Any], key: str, *, optional: bool = False) -> float | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not _finite(value):
        raise ValueError(f"field {key!r} must be a finite number, got {_shown(value)}")
    return float(value)  # type: ignore[arg-type]


def _integer(data: dict[str, Any], key: str, *, optional: bool = False) -> int | None:
    value = data.get(key)
    if value is None and optional:
        return None
    if not _is_int(value):
        raise ValueError(f"field {key!r} must be an integer, got {_shown(value)}")
    return value


@dataclass(frozen=True, slots=True, kw_only=True)
class LearnedState:
    """What one governor learned in one environment, as persisted by a `StateStore`.

    Attributes:
        limit: The policy's (float) limit when the state was saved.
        policy: The name of the policy that learned it.
        updated_at: Wall-clock time of the save, in seconds since the epoch
            (wall time, not loop time: it must mean something to the next process).
        sample_count: Units of work the governor has seen, over all runs.
        latency_floor_s: The lowest window latency seen (the upstream's
            unloaded latency), if any window closed.
        chunk_size: A learned batch size, for governors that adapt one.
        schema_version: The record's format version.

    Raises:
        ValueError: If a field has the wrong type or is out of range (a limit
            that is not a positive finite number, a count that is not an
            integer >= 0, a number too large for a float such as ``10**400``, ...).
    """

    limit: float
    policy: str
    updated_at: float
    sample_count: int = 0
    latency_floor_s: float | None = None
    chunk_size: int | None = None
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        # Every field is checked for its type as well as its range: a record is read back
        # from files and servers anyone can write, and a bad one must be refused here
        # (ValueError), not crash later with an OverflowError or a TypeError.
        if not (_finite(self.limit) and self.limit > 0):
            raise ValueError(f"limit must be a finite number > 0, got {_shown(self.limit)}")
        if not isinstance(self.policy, str) or not self.policy:
            raise ValueError(f"policy must be a non-empty string, got {_shown(self.policy)}")
        if not _finite(self.updated_at):
            raise ValueError(f"updated_at must be a finite number, got {_shown(self.updated_at)}")
        if not (_is_int(self.sample_count) and self.sample_count >= 0):
            raise ValueError(f"sample_count must be an integer >= 0, got {_shown(self.sample_count)}")
        if self.latency_floor_s is not None and not (
            _finite(self.latency_floor_s) and self.latency_floor_s >= 0
        ):
            raise ValueError(
                f"latency_floor_s must be a finite number >= 0, got {_shown(self.latency_floor_s)}"
            )
        if self.chunk_size is not None and not (_is_int(self.chunk_size) and self.chunk_size >= 1):
            raise ValueError(f"chunk_size must be an integer >= 1, got {_shown(self.chunk_size)}")
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema version {self.schema_version!r} (this aiogovernor reads {SCHEMA_VERSION})"
            )

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return {
            "schema_version": self.schema_version,
            "limit": self.limit,
            "policy": self.policy,
            "updated_at": self.updated_at,
            "sample_count": self.sample_count,
            "latency_floor_s": self.latency_floor_s,
            "chunk_size": self.chunk_size,
        }

    @classmethod
    def from_json(cls, data: object) -> LearnedState:
        """Parse a record written by `to_json`.

        Raises:
            ValueError: If ``data`` is not such a record, or has another schema version.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a learned state must be a JSON object, got {type(data).__name__}")
        version = _integer(data, "schema_version")
        if version != SCHEMA_VERSION:
            raise ValueError(f"unknown schema version {version!r} (this aiogovernor reads {SCHEMA_VERSION})")
        policy = data.get("policy")
        if not isinstance(policy, str):
            raise ValueError(f"field 'policy' must be a string, got {policy!r}")
        return cls(
            limit=_number(data, "limit"),  # type: ignore[arg-type]
            policy=policy,
            updated_at=_number(data, "updated_at"),  # type: ignore[arg-type]
            sample_count=_integer(data, "sample_count"),  # type: ignore[arg-type]
            latency_floor_s=_number(data, "latency_floor_s", optional=True),
            chunk_size=_integer(data, "chunk_size", optional=True),
            schema_version=version,
        )
