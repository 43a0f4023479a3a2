"""A governor's bounded history of decisions, kept as compact records.

A `Decision` with its whole `Window` is some 500 bytes of Python objects (two
dataclasses, a dozen boxed floats, a formatted reason); a governor keeping
100 of them weighs ~54 KB, and a process with one governor per upstream host
keeps thousands. Here each kept decision is one row of a few flat arrays
(numbers unboxed, small counts in two bytes) plus a shared reference to its
reason text, some 70 bytes; `Decision` objects are built again only when the
history is read. The latest decision is kept whole, so the one listeners were
given and ``stats().last_decision`` are the same object as the history's last.
"""

from __future__ import annotations

from array import array
from collections.abc import MutableSequence

from ._events import Decision, WindowSummary

__all__ = ["DecisionHistory"]

# Numbers per kept decision, by row: floats and integers.
_FLOATS = 3  # at, policy_limit, latency_p50_s
# Confidence, and the window's duration, mean call size, loop lag and loop pause, in single
# precision (about 7 digits).
_SMALLS = 5
_INTS = 9  # old_limit, new_limit, and the window's ok, overload, error, ignored, stale, peak, limit
_WINDOWED, _LIMIT_BOUND, _SIZED = 1, 2, 4  # flag bits

# Reason texts repeat ("not limit-bound", "limit-bound: +1", ...): one object per distinct
# text is shared by every record and governor that uses it. Bounded: a policy whose texts
# carry many numbers would otherwise grow it without end.
_REASONS: dict[str, str] = {}
_MAX_REASONS = 4096


def _shared(reason: str) -> str:
    shared = _REASONS.get(reason)
    if shared is not None:
        return shared
    if len(_REASONS) >= _MAX_REASONS:
        _REASONS.clear()
    _REASONS[reason] = reason
    return reason


class DecisionHistory:
    """The most recent ``size`` decisions of one governor, oldest first.

    Not thread-safe; the feedback loop that owns it appends under its gate's lock.

    Args:
        size: How many decisions to keep.
        governor: The governor's name (the same for every record: not stored per row).
        environment: Its environment.
    """

    __slots__ = (
        "_environment",
        "_flags",
        "_floats",
        "_governor",
        "_ints",
        "_last",
        "_len",
        "_next",
        "_reasons",
        "_size",
        "_smalls",
    )

    def __init__(self, size: int, *, governor: str, environment: str) -> None:
        self._size = size
        self._governor = governor
        self._environment = environment
        self._len = 0
        self._next = 0  # the row the next decision is written to
        self._last: Decision | None = None
        # Allocated at the first decision, at their full size: most governors never decide.
        self._floats: array[float] | None = None
        self._smalls: array[float] = array("f")
        self._ints: MutableSequence[int] = array("H")
        self._flags = bytearray()
        self._reasons: list[str] = []

    def __len__(self) -> int:
        return self._len

    @property
    def last(self) -> Decision | None:
        """The latest decision, whole (its `Window` included)."""
        return self._last

    def append(self, decision: Decision) -> None:
        """Keep ``decision``, forgetting the oldest one when full."""
        floats = self._floats
        if floats is None:
            size = self._size
            floats = self._floats = array("d", bytes(8 * _FLOATS * size))
            self._smalls = array("f", bytes(4 * _SMALLS * size))
            self._ints = array("H", bytes(2 * _INTS * size))
            self._flags = bytearray(size)
            self._reasons = [""] * size
        row = self._next
        size = self._size
        self._next = row + 1 if row + 1 < size else 0
        if self._len < size:
            self._len += 1
        self._last = decision
        w = decision.window
        f = row * _FLOATS
        floats[f] = decision.at
        floats[f + 1] = decision.policy_limit
        smalls = self._smalls
        s = row * _SMALLS
        smalls[s] = decision.confidence
        reason = decision.reason
        self._reasons[row] = _REASONS.get(reason) or _shared(reason)
        if w is None:
            self._flags[row] = 0
            values: tuple[int, ...] = (decision.old_limit, decision.new_limit, 0, 0, 0, 0, 0, 0, 0)
        else:
            floats[f + 2] = w.latency_p50_s
            smalls[s + 1] = w.end - w.start
            smalls[s + 2] = w.size_mean
            smalls[s + 3] = w.loop_lag_s
            smalls[s + 4] = w.loop_pause_s
            self._flags[row] = (
                _WINDOWED
                | (_LIMIT_BOUND if w.limit_bound else 0)
                | (_SIZED if (w.sized if isinstance(w, WindowSummary) else w.bands) else 0)
            )
            values = (
                decision.old_limit,
                decision.new_limit,
                w.ok,
                w.overload,
                w.error,
                w.ignored,
                w.stale_overload,
                w.peak_inflight,
                w.limit,
            )
        i = row * _INTS
        ints = self._ints
        try:
            ints[i : i + _INTS] = array(ints.typecode, values)  # type: ignore[attr-defined]
        except (OverflowError, AttributeError):
            self._write_ints(i, values)

    def _write_ints(self, i: int, values: tuple[int, ...]) -> None:
        while True:
            ints = self._ints
            try:
                if isinstance(ints, array):
                    ints[i : i + _INTS] = array(ints.typecode, values)
                else:
                    ints[i : i + _INTS] = values
                return
            except OverflowError:
                # A count or a limit past 65 535 (then past 2**63): wider integers from now on.
                narrow = isinstance(ints, array) and ints.typecode == "H"
                self._ints = array("q", ints) if narrow else list(ints)

    def _row(self, row: int) -> Decision:
        floats = self._floats
        assert floats is not None
        f = row * _FLOATS
        i = row * _INTS
        old, new, ok, overload, error, ignored, stale, peak, limit = self._ints[i : i + _INTS]
        flags = self._flags[row]
        at = floats[f]
        s = row * _SMALLS
        window = (
            WindowSummary(
                start=at - self._smalls[s + 1],
                end=at,  # a window closes when its decision is made
                ok=ok,
                overload=overload,
                error=error,
                ignored=ignored,
                stale_overload=stale,
                latency_p50_s=floats[f + 2],
                peak_inflight=peak,
                limit=limit,
                limit_bound=bool(flags & _LIMIT_BOUND),
                size_mean=self._smalls[s + 2],
                sized=bool(flags & _SIZED),
                loop_lag_s=self._smalls[s + 3],
                loop_pause_s=self._smalls[s + 4],
            )
            if flags & _WINDOWED
            else None
        )
        return Decision(
            governor=self._governor,
            environment=self._environment,
            at=at,
            old_limit=old,
            new_limit=new,
            policy_limit=floats[f + 1],
            reason=self._reasons[row],
            window=window,
            confidence=self._smalls[s],
        )

    def decisions(self) -> tuple[Decision, ...]:
        """The kept decisions, oldest first: the latest whole, the others with a `WindowSummary`."""
        n = self._len
        if n == 0:
            return ()
        first = (self._next - n) % self._size
        rows = [(first + k) % self._size for k in range(n - 1)]
        assert self._last is not None
        return (*(self._row(r) for r in rows), self._last)
