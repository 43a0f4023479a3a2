"""What a governor learned, as one frozen, schema-versioned record, with its recent decisions."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

__all__ = ["REASON_CODES", "SCHEMA_VERSION", "BaselineBand", "KeptDecision", "LearnedState", "record_text"]

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


REASON_CODES = ("up", "down", "overload", "hold", "reset")
"""What drove a kept decision, in one word: the limit rose, fell (on latency or
throughput), fell with overloads in its window, held, or was set by hand."""


def _field(value: object, what: str, *, integer: bool, optional: bool = False) -> Any:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int if integer else int | float):
        raise ValueError(f"{what} must be {'an integer' if integer else 'a number'}, got {value!r}")
    if not integer and not math.isfinite(value):
        raise ValueError(f"{what} must be finite, got {value!r}")
    if value < 0:
        raise ValueError(f"{what} must be >= 0, got {value!r}")
    return value if integer else float(value)


@dataclass(frozen=True, slots=True)
class KeptDecision:
    """One decision as it is kept in a `LearnedState`'s history: compact, in wall time.

    Stored as one JSON array, ``[at, old_limit, new_limit, reason, latency_p50_s,
    ok, overload, peak_inflight]``, so a thousand of them stay small.

    Attributes:
        at: Wall-clock time of the decision, seconds since the epoch.
        old_limit: The gate's limit before.
        new_limit: The gate's limit after.
        reason: One of `REASON_CODES`.
        latency_p50_s: The window's median latency (None without a window or
            a successful sample).
        ok: Successful units of work in the window.
        overload: Overloaded units of work in the window.
        peak_inflight: The most permits held at once in the window.
    """

    at: float
    old_limit: int
    new_limit: int
    reason: str
    latency_p50_s: float | None = None
    ok: int = 0
    overload: int = 0
    peak_inflight: int = 0
    # Its JSON text, made on first use: a save re-encodes every kept decision otherwise,
    # and a thousand of them cost a millisecond or more of the event loop's time per save.
    _text: str | None = field(default=None, init=False, repr=False, compare=False)

    def json_text(self) -> str:
        """`to_json` as JSON text (encoded once)."""
        text = self._text
        if text is None:
            text = json.dumps(self.to_json(), allow_nan=False, separators=(",", ":"))
            object.__setattr__(self, "_text", text)
        return text

    def to_json(self) -> list[Any]:
        """The entry as a JSON-ready array."""
        return [
            self.at,
            self.old_limit,
            self.new_limit,
            self.reason,
            self.latency_p50_s,
            self.ok,
            self.overload,
            self.peak_inflight,
        ]

    @classmethod
    def from_json(cls, data: object) -> KeptDecision:
        """Parse an entry written by `to_json`.

        Raises:
            ValueError: If ``data`` is not such an entry.
        """
        if not isinstance(data, list) or len(data) != 8:
            raise ValueError(f"a kept decision must be an array of 8 fields, got {data!r}")
        at, old, new, reason, p50, ok, overload, peak = data
        if reason not in REASON_CODES:
            raise ValueError(f"unknown decision reason {reason!r}")
        return cls(
            _field(at, "a decision's time", integer=False),
            _field(old, "a decision's old limit", integer=True),
            _field(new, "a decision's new limit", integer=True),
            reason,
            _field(p50, "a decision's p50 latency", integer=False, optional=True),
            _field(ok, "a decision's ok count", integer=True),
            _field(overload, "a decision's overload count", integer=True),
            _field(peak, "a decision's peak in flight", integer=True),
        )


@dataclass(frozen=True, slots=True)
class BaselineBand:
    """The upstream's no-load latency at one call size, as a policy measured it.

    Stored as one JSON object, ``{"size": 175.0, "latency_s": 0.195, "measured_at":
    1764491234.5}``: calls that carry no size are size 1. A governor restores the bands
    measured within the last hour (see `aiogovernor.Governor`'s learned state), so a
    restored governor starts at its learned limit without measuring the baseline again.

    Attributes:
        size: The mean size of the calls measured (items or bytes, as the calls said).
        latency_s: Their no-load latency, in seconds.
        measured_at: When it was last measured, wall time (seconds since the epoch).
    """

    size: float
    latency_s: float
    measured_at: float

    def __post_init__(self) -> None:
        if not (_finite(self.size) and self.size >= 1):
            raise ValueError(f"a baseline band's size must be a finite number >= 1, got {_shown(self.size)}")
        if not (_finite(self.latency_s) and self.latency_s > 0):
            raise ValueError(
                f"a baseline band's latency_s must be a finite number > 0, got {_shown(self.latency_s)}"
            )
        if not _finite(self.measured_at):
            raise ValueError(
                f"a baseline band's measured_at must be a finite number, got {_shown(self.measured_at)}"
            )

    def to_json(self) -> dict[str, float]:
        """The band as a JSON-ready object."""
        return {"size": self.size, "latency_s": self.latency_s, "measured_at": self.measured_at}

    @classmethod
    def from_json(cls, data: object) -> BaselineBand:
        """Parse a band written by `to_json`.

        Raises:
            ValueError: If ``data`` is not such a band.
        """
        if not isinstance(data, dict):
            raise ValueError(f"a baseline band must be a JSON object, got {type(data).__name__}")
        return cls(
            size=_number(data, "size"),  # type: ignore[arg-type]
            latency_s=_number(data, "latency_s"),  # type: ignore[arg-type]
            measured_at=_number(data, "measured_at"),  # type: ignore[arg-type]
        )


def _baseline(data: object) -> tuple[BaselineBand, ...]:
    # Absent in records written before the baseline was kept: none, not an error.
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ValueError(f"field 'latency_baseline' must be an array, got {type(data).__name__}")
    return tuple(BaselineBand.from_json(entry) for entry in data)


def _history(data: object) -> tuple[KeptDecision, ...]:
    # Absent in records written before decisions were kept: no history, not an error.
    if data is None:
        return ()
    if not isinstance(data, list):
        raise ValueError(f"field 'history' must be an array, got {type(data).__name__}")
    return tuple(KeptDecision.from_json(entry) for entry in data)


def record_text(state: LearnedState, history: str) -> str:
    """``state``'s JSON text (as `LearnedState.to_json_text` writes it) with ``history`` as its history.

    ``history`` is the kept decisions' entries (`KeptDecision.json_text`), comma-separated,
    oldest first; ``state.history`` is not read.

    Raises:
        ValueError: If a number is not finite.
    """
    head = json.dumps(state._head(), allow_nan=False)
    return f'{head[:-1]}, "history": [{history}]}}'


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
        chunk_size: The chunk (batch) size learned by the chunker attached to
            the governor (`aiogovernor.Governor.attach_chunker`), if any.
        latency_baseline: The policy's no-load latency per call size
            (`BaselineBand`), when its policy measures one (the default does).
        history: The most recent decisions, oldest first (bounded by the
            governor's ``state_history_size``).
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
    latency_baseline: tuple[BaselineBand, ...] = ()
    history: tuple[KeptDecision, ...] = ()
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
        if not isinstance(self.latency_baseline, tuple) or not all(
            isinstance(b, BaselineBand) for b in self.latency_baseline
        ):
            raise ValueError(
                f"latency_baseline must be a tuple of BaselineBand, got {_shown(self.latency_baseline)}"
            )
        if self.schema_version != SCHEMA_VERSION:
            raise ValueError(
                f"unknown schema version {self.schema_version!r} (this aiogovernor reads {SCHEMA_VERSION})"
            )

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-ready dict."""
        return {**self._head(), "history": [d.to_json() for d in self.history]}

    def to_json_text(self) -> str:
        """The record as JSON text, the same as ``json.dumps(to_json())`` reads back.

        Cheaper for a store to call: each kept decision is encoded once, not at every save.

        Raises:
            ValueError: If a number is not finite.
        """
        return record_text(self, ",".join(d.json_text() for d in self.history))

    def _head(self) -> dict[str, Any]:
        return {
            "schema_version": self.schema_version,
            "limit": self.limit,
            "policy": self.policy,
            "updated_at": self.updated_at,
            "sample_count": self.sample_count,
            "latency_floor_s": self.latency_floor_s,
            "chunk_size": self.chunk_size,
            "latency_baseline": [b.to_json() for b in self.latency_baseline],
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
            latency_baseline=_baseline(data.get("latency_baseline")),
            history=_history(data.get("history")),
            schema_version=version,
        )
