"""A governor's bounded history of decisions, kept as compact records.

A `Decision` with its whole `Window` is some 500 bytes of Python objects (two
dataclasses, a dozen boxed floats, a formatted reason); a governor keeping
100 of them weighs ~54 KB, and a process with one governor per upstream host
keeps thousands. Here each kept decision is one row of a few flat arrays, some
29 bytes: the time and the median latency unboxed in double precision, the
policy's float limit as its part past the new limit in single precision, the
confidence to 1/65 535 in two bytes, four counts and limits in one byte each
while they fit (wider when one does not), a flag byte and a two-byte code for
its reason text. The window's
error, ignored and stale-overload counts get columns of their own only once a
window has one: most governors' windows never do.

What a row can be told from its neighbours is not stored: a decision's old
limit is the previous one's new limit, a window's limit is the decision's old
limit, and a window opens where the previous window closed. A row that breaks
one of these keeps the broken value aside, exactly. The window's mean call
size and the client loop's lag and pauses are kept (in single precision) only
once a window has reported one. `Decision` objects are built again only when
the history is read. The latest decision is kept whole, so the one listeners
were given and ``stats().last_decision`` are the same object as the history's last.

A governor's saved record reads its latest decisions from these rows too (`entries`: the
few numbers a record keeps, written as JSON text, building no `Decision`), and is told each
decision just before the ring forgets it (`on_forget`), so that it keeps apart only what
it keeps longer (see `aiogovernor._persistence.KeptDecisions`). Decisions are numbered
from 0 in the order appended (`count`).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import MutableSequence, Sequence
from typing import Any, Protocol

from ._events import Decision, WindowSummary

__all__ = ["DecisionHistory", "ForgetListener"]

# Numbers per kept decision, by row.
_FLOATS = 2  # at, latency_p50_s, in double precision
# The policy's float limit is kept as its part past the new (integer) limit, in single
# precision: most often a fraction, and a figure shown, never read back into a decision.
_INTS = 4  # new_limit, and the window's ok, overload, peak
# The window's error, ignored and stale-overload counts, in columns made when a window first
# has one (most governors' windows have none): what a row without them reads.
_RARE = 3
# The window's confidence, in [0, 1], is kept as a multiple of 1 / this (in two bytes).
_CONFIDENCE = 65535
_NO_RARE = (0, 0, 0)
# The window's size_mean, loop_lag_s and loop_pause_s, in single precision, each in a column
# of its own made when a window first reports it, and what a row without it reads.
_NO_SMALLS = (1.0, 0.0, 0.0)
# Past any time or latency (seconds): a figure beyond is not finite, or not one.
_NEVER_S = 1e15
# Flag bits.
_WINDOWED, _LIMIT_BOUND, _SIZED, _ASIDE = 1, 2, 4, 8
_EMPTY_FLOATS: array[float] = array("f")
_EMPTY_INTS: MutableSequence[int] = array("B")
_EMPTY_FLAGS = bytearray()


class ForgetListener(Protocol):
    """Told each decision a `DecisionHistory` forgets (an object, not a callable: no bound method kept)."""

    def forgotten(self, history: DecisionHistory, number: int, /) -> None:
        """``history`` forgets its decision ``number`` (see `DecisionHistory.count`) when this returns."""


class _Reasons:
    """Reason texts by two-byte code, shared by every governor's history.

    Texts repeat ("not limit-bound", "limit-bound: +1", ...): each distinct text in use
    is kept once and rows keep its code. A code is counted by the rows that use it and
    freed with the last one, so a policy whose texts carry numbers does not grow the
    table without end. Histories of thread gates write from several threads: a lock.
    """

    __slots__ = ("_code_of", "_free", "_lock", "_released", "_texts", "_uses")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._code_of: dict[str, int] = {}
        self._texts: list[str] = []
        self._uses: list[int] = []
        self._free: list[int] = []
        # Codes of histories that were collected, released at the next `swap` (a finalizer
        # must not take the lock: it may run inside the locked section, on the same thread).
        self._released: list[MutableSequence[int]] = []

    def text(self, code: int) -> str:
        return self._texts[code]

    def swap(self, reason: str, old: int | None) -> int:
        """The code for ``reason``, counted once more; ``old`` (a row's previous code) once less."""
        with self._lock:
            if self._released:
                while self._released:
                    for released in self._released.pop():
                        self._drop(released)
            code = self._code_of.get(reason)
            if code is None:
                if self._free:
                    code = self._free.pop()
                    self._texts[code] = reason
                    self._uses[code] = 0
                else:
                    code = len(self._texts)
                    self._texts.append(reason)
                    self._uses.append(0)
                self._code_of[reason] = code
            self._uses[code] += 1
            if old is not None:
                self._drop(old)
            return code

    def _drop(self, code: int) -> None:
        uses = self._uses[code] - 1
        self._uses[code] = uses
        if uses == 0:
            del self._code_of[self._texts[code]]
            self._texts[code] = ""
            self._free.append(code)

    def release(self, codes: MutableSequence[int]) -> None:
        """Count ``codes`` once less, later (safe from a finalizer)."""
        self._released.append(codes)

    def __len__(self) -> int:
        return len(self._code_of)


_REASONS = _Reasons()


def _written(values: MutableSequence[int], i: int, row: tuple[int, ...]) -> MutableSequence[int]:
    """``values`` (or a wider copy, returned) with ``row`` written from index ``i``."""
    while True:
        try:
            if isinstance(values, array):
                values[i : i + len(row)] = array(values.typecode, row)
            else:
                values[i : i + len(row)] = row
            return values
        except OverflowError:
            # A count or a limit past 255, 65 535, then 2**64: wider integers from now on.
            values = _widen(values)


def _widen(values: MutableSequence[int]) -> MutableSequence[int]:
    """The same integers in a wider array: one byte, then two, then eight, then a list."""
    typecode = values.typecode if isinstance(values, array) else ""
    if typecode == "B":
        return array("H", values)
    if typecode == "H":
        return array("q", values)
    if typecode == "q":
        return list(values)
    raise OverflowError("an integer too large for any kept row")


class DecisionHistory:
    """The most recent ``size`` decisions of one governor, oldest first.

    Not thread-safe; the feedback loop that owns it appends under its gate's lock.

    Args:
        size: How many decisions to keep.
        governor: The governor's name (the same for every record: not stored per row).
        environment: Its environment.
    """

    __slots__ = (
        "_aside",
        "_base_at",
        "_base_new",
        "_codes",
        "_confidence",
        "_count",
        "_environment",
        "_flags",
        "_floats",
        "_governor",
        "_ints",
        "_last",
        "_last_at",
        "_last_new",
        "_len",
        "_next",
        "_on_forget",
        "_past",
        "_rare",
        "_size",
        "_smalls",
    )

    def __init__(self, size: int, *, governor: str, environment: str) -> None:
        self._size = size
        self._governor = governor
        self._environment = environment
        self._len = 0
        self._count = 0  # decisions appended since it was made (the next one's sequence number)
        self._next = 0  # the row the next decision is written to
        self._last: Decision | None = None
        # Told each decision about to be forgotten, while its row can still be read (a saved
        # record keeps more decisions than the history: see `aiogovernor._persistence`).
        self._on_forget: ForgetListener | None = None
        # Allocated at the first decision, at their full size: most governors never decide.
        # Until then, empty ones shared by every history (never written to).
        self._floats: array[float] | None = None
        self._confidence: MutableSequence[int] = _EMPTY_INTS
        self._past: array[float] = _EMPTY_FLOATS  # policy_limit - new_limit
        self._ints: MutableSequence[int] = _EMPTY_INTS
        self._flags = _EMPTY_FLAGS
        self._codes: MutableSequence[int] = _EMPTY_INTS
        self._smalls: list[array[float] | None] | None = None  # made when a window first reports one
        self._rare: MutableSequence[int] | None = None  # made when a window first has one (`_RARE`)
        # Rows whose old limit, window limit or window start are not what their neighbours
        # say: row -> (old_limit, window limit, window start), exactly.
        self._aside: dict[int, tuple[int, int, float]] | None = None
        # What the oldest kept row follows: the new limit and the last window's close of the
        # rows already forgotten (or, before any was, what the first rows said).
        self._base_new = 0
        self._base_at = 0.0
        # The same for the next row: the latest new limit and the latest window's close.
        self._last_new: int | None = None
        self._last_at: float | None = None

    def __len__(self) -> int:
        return self._len

    @property
    def count(self) -> int:
        """How many decisions were appended, forgotten ones included: the next one's sequence number.

        The kept decisions are numbered ``count - len(self)`` (the oldest) to ``count - 1``.
        """
        return self._count

    def __reduce__(self) -> tuple[Any, ...]:
        # A copy (copy.deepcopy, pickle) counts its own uses of the shared reason codes.
        return (_rebuilt, (self._size, self._governor, self._environment, self.decisions()))

    def __del__(self, _reasons: _Reasons = _REASONS) -> None:
        # Bound as a default: at the interpreter's exit the module's globals may be gone first.
        if getattr(self, "_floats", None) is not None:
            _reasons.release(self._codes[: self._len])

    def on_forget(self, listener: ForgetListener | None) -> None:
        """Call ``listener.forgotten(self, number)`` before each decision is forgotten (None: no one)."""
        self._on_forget = listener

    @property
    def size(self) -> int:
        """How many decisions it keeps at most."""
        return self._size

    @property
    def last(self) -> Decision | None:
        """The latest decision, whole (its `Window` included)."""
        return self._last

    def append(self, decision: Decision) -> None:
        """Keep ``decision``, forgetting the oldest one when full."""
        floats = self._floats
        size = self._size
        if floats is None:
            floats = self._floats = array("d", [0.0]) * (_FLOATS * size)
            self._confidence = array("H", [0]) * size
            self._past = array("f", [0.0]) * size
            self._ints = array("B", [0]) * (_INTS * size)
            self._flags = bytearray(size)
            self._codes = array("H", [0]) * size
        row = self._next
        full = self._len == size
        if full and self._on_forget is not None:
            forgotten = self._count - size  # the oldest, in the row written next
            self._on_forget.forgotten(self, forgotten)
        self._next = row + 1 if row + 1 < size else 0
        self._count += 1
        if full:
            self._forget(row)
        else:
            self._len += 1
        self._last = decision
        w = decision.window
        old = decision.old_limit
        if self._last_new is None:
            self._base_new = self._last_new = old
        f = row * _FLOATS
        floats[f] = at = decision.at
        # Kept to 1/65 535 in two bytes: a value outside [0, 1] reads back as the nearer end, NaN as 0.
        confidence = decision.confidence
        clamped = min(confidence, 1.0) if confidence >= 0.0 else 0.0
        self._confidence[row] = round(clamped * _CONFIDENCE)
        new = decision.new_limit
        self._past[row] = decision.policy_limit - new
        if w is None:
            flags = 0
            floats[f + 1] = 0.0
            values: tuple[int, ...] = (new, 0, 0, 0)
            rare = _NO_RARE
            aside = old != self._last_new
            limit, start = old, 0.0
            if self._smalls is not None:
                self._write_smalls(row, _NO_SMALLS)
        else:
            start = w.start
            if self._last_at is None:
                self._base_at = self._last_at = start
            floats[f + 1] = w.latency_p50_s
            flags = (
                _WINDOWED
                | (_LIMIT_BOUND if w.limit_bound else 0)
                | (_SIZED if (w.sized if isinstance(w, WindowSummary) else w.bands) else 0)
            )
            values = (new, w.ok, w.overload, w.peak_inflight)
            rare = (w.error, w.ignored, w.stale_overload)
            limit = w.limit
            aside = old != self._last_new or limit != old or start != self._last_at
            extra = (w.size_mean, w.loop_lag_s, w.loop_pause_s)
            if self._smalls is not None or extra != _NO_SMALLS:
                self._write_smalls(row, extra)
            self._last_at = at
        self._last_new = new
        if aside:
            flags |= _ASIDE
            if self._aside is None:
                self._aside = {}
            self._aside[row] = (old, limit, start)
        self._flags[row] = flags
        code = _REASONS.swap(decision.reason, self._codes[row] if full else None)
        try:
            self._codes[row] = code
        except OverflowError:  # more than 65 536 distinct texts in use in the process
            self._codes = _widen(self._codes)
            self._codes[row] = code
        i = row * _INTS
        try:
            self._ints[i : i + _INTS] = array(self._ints.typecode, values)  # type: ignore[attr-defined]
        except (OverflowError, AttributeError):
            self._ints = _written(self._ints, i, values)
        if self._rare is not None or rare != _NO_RARE:
            if self._rare is None:
                self._rare = array("B", [0]) * (_RARE * self._size)
            self._rare = _written(self._rare, row * _RARE, rare)

    def _write_smalls(self, row: int, values: tuple[float, float, float]) -> None:
        smalls = self._smalls
        if smalls is None:
            smalls = self._smalls = [None, None, None]
        for k, value in enumerate(values):
            column = smalls[k]
            if column is None:
                if value == _NO_SMALLS[k]:
                    continue
                column = smalls[k] = array("f", [_NO_SMALLS[k]]) * self._size
            column[row] = value

    def _forget(self, row: int) -> None:
        """The oldest row is about to be overwritten: what the next one follows is now its figures."""
        self._base_new = self._ints[row * _INTS]
        if self._flags[row] & _WINDOWED:
            assert self._floats is not None
            self._base_at = self._floats[row * _FLOATS]
        if self._aside is not None:
            self._aside.pop(row, None)
            if not self._aside:
                self._aside = None

    def decisions(self) -> tuple[Decision, ...]:
        """The kept decisions, oldest first: the latest whole, the others with a `WindowSummary`."""
        n = self._len
        if n == 0:
            return ()
        assert self._last is not None
        size = self._size
        first = (self._next - n) % size
        prev_new, prev_at = self._base_new, self._base_at
        kept = []
        for k in range(n - 1):
            decision, prev_new, prev_at = self._row((first + k) % size, prev_new, prev_at)
            kept.append(decision)
        kept.append(self._last)
        return tuple(kept)

    def entries(
        self,
        first: int,
        stop: int | None = None,
        *,
        offset: float,
        walls: dict[int, float] | None = None,
        skipped: tuple[int, ...] = (),
    ) -> tuple[str, int]:
        """The kept decisions numbered ``first`` to ``stop`` (excluded) as a saved record's entries.

        JSON text, comma-separated, oldest first, one `aiogovernor.state.KeptDecision` array
        each (``[at, old_limit, new_limit, reason, latency_p50_s, ok, overload, peak_inflight]``),
        read from the rows and written straight as text: a save writes the latest ones again
        each time, and ``json.dumps`` of their numbers (rounded) costs three times as much.
        ``at`` is the decision's time plus ``offset`` (or ``walls[number]`` when given), to
        the millisecond; the latency to the microsecond, null without a window or an ok
        sample: the values ``round(x, 3)`` and ``round(x, 6)`` read back as.
        Decisions numbered in ``skipped`` are left out. Returns the text and how many it holds.

        Raises:
            ValueError: If a time or a latency is not finite.
        """
        n = self._len
        count = self._count
        start = max(first, count - n)
        stop = count if stop is None else min(stop, count)
        if start >= stop:
            return "", 0
        floats = self._floats
        assert floats is not None
        size = self._size
        ints, flags_of, aside, rare = self._ints, self._flags, self._aside, self._rare
        row = ((self._next - n) % size + start - (count - n)) % size
        # The decision before the first one read: its new limit is the first one's old limit.
        prev_new = self._base_new if start == count - n else ints[((row - 1) % size) * _INTS]
        out: list[str] = []
        for number in range(start, stop):
            i = row * _INTS
            new = ints[i]
            flags = flags_of[row]
            if number not in skipped:
                old = aside[row][0] if flags & _ASIDE and aside is not None else prev_new
                if walls is not None and number in walls:
                    at = walls[number]
                else:
                    at = floats[row * _FLOATS] + offset
                if not 0.0 <= at < _NEVER_S:  # "%.3f" would write nan, inf or a time before the epoch
                    if not at < 0.0:
                        raise ValueError(f"a decision's time is not finite: {at!r}")
                    at = 0.0
                if flags & _WINDOWED:
                    ok = ints[i + 1]
                    overload = ints[i + 2] + (0 if rare is None else rare[row * _RARE + 2])
                    reason = (
                        "up" if new > old else ("overload" if overload else "down") if new < old else "hold"
                    )
                    if ok:
                        p50 = floats[row * _FLOATS + 1]
                        if not 0.0 <= p50 < _NEVER_S:
                            raise ValueError(f"a decision's latency is not finite: {p50!r}")
                        out.append(
                            f'[{at:.3f},{old},{new},"{reason}",{p50:.6f},{ok},{overload},{ints[i + 3]}]'
                        )
                    else:
                        out.append(f'[{at:.3f},{old},{new},"{reason}",null,0,{overload},{ints[i + 3]}]')
                else:
                    out.append(f'[{at:.3f},{old},{new},"reset",null,0,0,0]')
            prev_new = new
            row = row + 1 if row + 1 < size else 0
        return ",".join(out), len(out)

    def _row(self, row: int, prev_new: int, prev_at: float) -> tuple[Decision, int, float]:
        """Row ``row`` as a `Decision`, given the new limit and window close before it; and its own."""
        floats = self._floats
        assert floats is not None
        f = row * _FLOATS
        i = row * _INTS
        new, ok, overload, peak = self._ints[i : i + _INTS]
        rare = self._rare
        error, ignored, stale = _NO_RARE if rare is None else rare[row * _RARE : (row + 1) * _RARE]
        flags = self._flags[row]
        at = floats[f]
        if flags & _ASIDE:
            assert self._aside is not None
            old, limit, start = self._aside[row]
        else:
            old, limit, start = prev_new, prev_new, prev_at
        window = None
        if flags & _WINDOWED:
            size_mean, lag, pause = (
                _NO_SMALLS
                if self._smalls is None
                else [_NO_SMALLS[k] if c is None else c[row] for k, c in enumerate(self._smalls)]
            )
            window = WindowSummary(
                start=start,
                end=at,  # a window closes when its decision is made
                ok=ok,
                overload=overload,
                error=error,
                ignored=ignored,
                stale_overload=stale,
                latency_p50_s=floats[f + 1],
                peak_inflight=peak,
                limit=limit,
                limit_bound=bool(flags & _LIMIT_BOUND),
                size_mean=size_mean,
                sized=bool(flags & _SIZED),
                loop_lag_s=lag,
                loop_pause_s=pause,
            )
            prev_at = at
        decision = Decision(
            governor=self._governor,
            environment=self._environment,
            at=at,
            old_limit=old,
            new_limit=new,
            policy_limit=new + self._past[row],
            reason=_REASONS.text(self._codes[row]),
            window=window,
            confidence=self._confidence[row] / _CONFIDENCE,
        )
        return decision, new, prev_at


def _rebuilt(size: int, governor: str, environment: str, decisions: Sequence[Decision]) -> DecisionHistory:
    history = DecisionHistory(size, governor=governor, environment=environment)
    for decision in decisions:
        history.append(decision)
    return history
