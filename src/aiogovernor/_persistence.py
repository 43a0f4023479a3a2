"""Persistence in the core: the store protocol, and a governor's side of it.

Two small protocols meet here, so that neither side imports the other:

- `StateStore` is what a store implements (`aiogovernor.state` holds the
  stores: a JSON file, memory, Redis). The core never imports a store.
- `Learner` is what persistence needs of a governor: its names, its policy,
  `reset_limit`, `add_listener` and its counts (`stats`). This module never imports
  the governor; `Persistence` is all the governor sees of it.

`GovernorPersistence` ties one learner to one store: the learned state is
loaded once (by `aiogovernor.Governor.restore`, or on the first slow-path
acquire), saved after decisions (in the background, debounced) and flushed on
``aclose``. What it keeps: the limit, the latency floor, the policy's latency
baseline per call size (`BaselineBand`, restored for an hour), the size of an
attached chunker and the last decisions (`KeptDecision`).

A safety net for scripts that never call ``aclose``: a governor whose state
changed since its last save stays in `_unsaved` until it is saved, and an
exit hook (`_save_at_exit`) writes what is left through the stores that can
write without an event loop (`BlockingSave`: the JSON file store), in a
thread it waits for at most ``$AIOGOVERNOR_EXIT_SAVE_TIMEOUT_S`` (2 s by
default), so that a store that hangs never hangs the exit.

The default store (``store="default"``, a JSON file in the user's state
directory) lives in `aiogovernor.state`, above the core. Rather than reach up
for it, the core keeps a factory slot, `set_default_store_factory`, that the
package's ``__init__`` (the composition root, which sees every layer) fills
with a function importing the JSON file store on first use. So the arrow
points down, ``import aiogovernor`` stays light, and the default is the same
for every gate (async or threaded) that binds persistence through here.
"""

from __future__ import annotations

import asyncio
import atexit
import builtins
import contextlib
import dataclasses
import json
import logging
import math
import os
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, runtime_checkable

from ._env import getenv
from ._history import DecisionHistory
from ._record import BaselineBand, KeptDecision, LearnedState, record_text
from ._samples import Window
from ._validate import check_float, check_int, conforms

if TYPE_CHECKING:
    from ._chunking import Chunker
    from ._events import Decision, DecisionListener
    from .limits import LimitPolicy

__all__ = [
    "BASELINE_MAX_AGE_S",
    "BlockingSave",
    "GovernorPersistence",
    "KeptDecisions",
    "Learner",
    "Persistence",
    "RecordSave",
    "Rows",
    "StateStore",
    "StateStoreError",
    "bind_persistence",
    "resolve_store",
    "set_default_store_factory",
    "state_disabled",
]

logger = logging.getLogger("aiogovernor.state")

_TRUE = frozenset({"1", "true", "yes", "on"})

BASELINE_MAX_AGE_S = 3600.0
"""How old a kept latency baseline may be and still be restored (wall time, per size band).

Older, it is measured again: an upstream's no-load latency moves with the time of day,
its load and the host the client runs on, and a baseline that reads too low makes a
fresh upstream look congested."""


@runtime_checkable
class _KeepsBaseline(Protocol):
    """A policy that measures the upstream's no-load latency, and can start from a kept one."""

    def learned_baseline(self) -> tuple[tuple[float, float], ...]: ...

    def restore_baseline(self, references: tuple[tuple[float, float], ...]) -> None: ...


def _baseline_keeper(policy: object) -> _KeepsBaseline | None:
    """``policy``, or the policy it wraps (``inner``, as `ResourceCeiling`), if it keeps a baseline."""
    for _ in range(8):  # wrappers of wrappers, bounded
        if isinstance(policy, _KeepsBaseline):
            return policy
        policy = getattr(policy, "inner", None)
        if policy is None:
            break
    return None


class StateStoreError(Exception):
    """A store could not be read or written (an unwritable directory, Redis unreachable).

    Damaged content is not an error: a store logs a warning and reports no
    state. This exception is for failures the caller may want to act on; a
    governor logs it and carries on with what it has in memory.
    """


@runtime_checkable
class StateStore(Protocol):
    """Keeps `LearnedState` records per (environment, governor name).

    Every method is async; implementations must be safe to call from many
    tasks at once. Names are validated by the caller (`Governor`, the CLI)
    with `check_environment` and `check_governor_name`.
    """

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``, or None if there is none (or it is damaged)."""
        ...

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Keep ``state`` for ``name`` in ``environment``, replacing what was there.

        Raises:
            StateStoreError: When the state cannot be written.
        """
        ...

    async def delete(self, environment: str, name: str) -> bool:
        """Forget ``name`` in ``environment``; return whether there was anything to forget."""
        ...

    async def list(self, environment: str) -> dict[str, LearnedState]:
        """Every governor's state in ``environment``, by governor name."""
        ...

    async def environments(self) -> builtins.list[str]:
        """The environments holding any state, sorted."""
        ...

    async def aclose(self) -> None:
        """Release connections or files the store holds."""
        ...


@runtime_checkable
class BlockingSave(Protocol):
    """What a store offers to be written at interpreter exit, when no event loop runs.

    Optional: a store without it (Redis, memory) is not written at exit.
    """

    def save_blocking(self, environment: str, name: str, state: LearnedState) -> None:
        """`StateStore.save`, blocking the calling thread (called from a worker thread at exit).

        Raises:
            StateStoreError: When the state cannot be written.
        """
        ...


@runtime_checkable
class RecordSave(Protocol):
    """What a store offers to be given a record as JSON text rather than a `LearnedState`.

    Optional: a governor saves through it when its store has it (the JSON file store), so that
    the decisions it keeps are never built again as `KeptDecision` objects to be saved.
    """

    async def save_record(self, environment: str, name: str, record: str) -> None:
        """`StateStore.save` of the record ``record`` (what `LearnedState.to_json_text` writes).

        Raises:
            StateStoreError: When the record cannot be written.
        """
        ...


class Learner(Protocol):
    """What persistence needs of a governor; any gate (async or threaded) can offer it."""

    @property
    def name(self) -> str: ...

    @property
    def environment(self) -> str: ...

    @property
    def policy(self) -> LimitPolicy: ...

    def reset_limit(self, limit: float, *, reason: str) -> None: ...

    def add_listener(self, listener: DecisionListener) -> None: ...

    def stats(self) -> _Counted: ...


class _Counted(Protocol):
    @property
    def counts(self) -> Mapping[str, int]:
        """Finished units of work by outcome, since creation."""
        ...


class Persistence(Protocol):
    """All a governor sees of its persistence."""

    @property
    def store(self) -> StateStore:
        """Where the learned state is kept."""
        ...

    @property
    def loaded(self) -> bool:
        """Whether the learned state was loaded (and applied, if there was any)."""
        ...

    @property
    def restored(self) -> LearnedState | None:
        """The state the governor started from, if one was loaded and used (its ``history`` left empty)."""
        ...

    @property
    def restored_at(self) -> float | None:
        """When the state the governor started from was saved (wall time), if one was restored."""
        ...

    @property
    def chunker(self) -> Chunker | None:
        """The chunker attached, if any."""
        ...

    def attach_chunker(self, chunker: Chunker | None) -> None:
        """Keep ``chunker``'s size with the limit (None detaches, keeping its last size)."""
        ...

    async def load(self) -> None:
        """Load and apply the learned state once; concurrent callers wait for the first."""
        ...

    async def flush(self) -> None:
        """Save what is left now; never raises for a store failure."""
        ...


def state_disabled() -> bool:
    """Whether ``$AIOGOVERNOR_DISABLE_STATE`` turns persistence off."""
    return (getenv("AIOGOVERNOR_DISABLE_STATE") or "").strip().lower() in _TRUE


_default_store_factory: Callable[[], StateStore] | None = None


def set_default_store_factory(factory: Callable[[], StateStore]) -> None:
    """Name the store ``store="default"`` means (see the module's docstring)."""
    global _default_store_factory
    _default_store_factory = factory


def resolve_store(store: StateStore | Literal["default"] | None) -> StateStore | None:
    """The store a governor uses: the default store for ``"default"``, nothing when disabled."""
    if isinstance(store, str):
        if store != "default":
            raise ValueError(f"store must be a StateStore, None or 'default', got {store!r}")
    elif store is not None and not conforms(store, StateStore):
        raise TypeError(f"store must implement StateStore (load, save, delete, list, ...), got {store!r}")
    if store is None or state_disabled():
        return None
    if isinstance(store, str):
        if _default_store_factory is None:  # pragma: no cover - set by aiogovernor/__init__.py
            raise RuntimeError("no default store is registered")
        return _default_store_factory()
    return store


def bind_persistence(
    learner: Learner,
    store: StateStore | Literal["default"] | None,
    *,
    max_age_s: float | None,
    save_interval_s: float,
    history_size: int = 1000,
    kind: type[GovernorPersistence] | None = None,
    rows: Rows | None = None,
) -> GovernorPersistence | None:
    """Validate the persistence settings and tie ``learner`` to its store; None when nothing is kept.

    ``kind`` is the persistence class (a thread gate passes one whose saves
    and loads block); `GovernorPersistence` by default. ``rows`` gives the
    governor's own `DecisionHistory` (see `KeptDecisions`).
    """
    if max_age_s is not None:
        check_float("state_max_age_s", max_age_s, low=0.0)
    check_float("save_interval_s", save_interval_s, low=0.0)
    check_int("state_history_size", history_size, low=0)
    resolved = resolve_store(store)
    if resolved is None:
        return None
    return (kind or GovernorPersistence)(
        learner,
        resolved,
        max_age_s=max_age_s,
        save_interval_s=save_interval_s,
        history_size=history_size,
        rows=rows,
    )


# -- the exit hook ---------------------------------------------------------------

# Governors whose state changed since their last save, held strongly: a governor made by a
# script and dropped without `aclose` (its loop gone, its debounced save cancelled) must
# still be here for the exit hook. One leaves as soon as a save catches up with it.
_unsaved: dict[int, GovernorPersistence] = {}
_exit_hook = threading.Lock()
_exit_hook_registered = False
if hasattr(os, "register_at_fork"):
    # A forked child did not learn what its parent did: its exit must not write it.
    os.register_at_fork(after_in_child=_unsaved.clear)
DEFAULT_EXIT_SAVE_TIMEOUT_S = 2.0


def _exit_timeout_s() -> float:
    raw = os.environ.get("AIOGOVERNOR_EXIT_SAVE_TIMEOUT_S", "").strip()
    try:
        value = float(raw) if raw else DEFAULT_EXIT_SAVE_TIMEOUT_S
    except ValueError:
        value = DEFAULT_EXIT_SAVE_TIMEOUT_S
    return value if math.isfinite(value) and value >= 0 else DEFAULT_EXIT_SAVE_TIMEOUT_S


def _register_exit_hook() -> None:
    # Registered on the first unsaved change, not on import: `atexit` runs hooks last in,
    # first out, and this one must run before the hooks of the stores (registered when
    # their module was imported, before any governor could use them), which close their
    # files, and before `logging`'s, which closes the handlers it logs to.
    global _exit_hook_registered
    with _exit_hook:
        if not _exit_hook_registered:
            atexit.register(_save_at_exit)
            _exit_hook_registered = True


def _save_at_exit() -> None:
    """Write the state of every governor left unsaved, within the exit timeout; log at debug."""
    pending = [p for p in list(_unsaved.values()) if p._dirty]
    _unsaved.clear()
    if not pending:
        return
    writable = [p for p in pending if isinstance(p.store, BlockingSave)]
    for p in pending:
        if p not in writable:
            logger.debug(
                "%s: not saved at exit (%r cannot write without an event loop; call 'await gov.aclose()')",
                p.label,
                p.store,
            )
    if not writable:
        return
    timeout_s = _exit_timeout_s()
    saved: list[str] = []

    def write() -> None:
        for p in writable:
            if p.save_blocking():
                saved.append(p.label)

    # In a daemon thread the exit waits for at most `timeout_s`: a store that hangs (a
    # stalled network file system, a lock never released) is left behind, never waited on.
    worker = threading.Thread(target=write, name="aiogovernor-save-at-exit", daemon=True)
    try:
        worker.start()
    except RuntimeError as exc:  # no new thread at this stage of the exit
        logger.debug("learned state not saved at exit: %s", exc)
        return
    worker.join(timeout_s)
    if worker.is_alive():
        logger.debug(
            "saving learned state at exit took longer than %.1fs: gave up (saved so far: %s)",
            timeout_s,
            ", ".join(saved) or "none",
        )
    else:
        logger.debug("saved learned state at exit: %s", ", ".join(saved) or "none")


def _drop_oldest(entries: str, count: int) -> str:
    """``entries`` (comma-separated JSON arrays of numbers and words) without the first ``count``."""
    pos = -1
    for _ in range(count):
        pos = entries.find("],[", pos + 1)
        if pos < 0:
            return ""
    return entries[pos + 2 :] if count else entries


def _takes_records(store: object, plain: str = "save", record: str = "save_record") -> bool:
    """Whether to save through ``store``'s method ``record`` (a record's text) rather than ``plain``.

    ``save_record`` (`RecordSave`) for ``save``; the JSON file store's ``save_record_blocking``
    for ``save_blocking``. Not when a subclass overrides ``plain`` alone: it expects every save
    to come through it.
    """
    if record == "save_record" and not isinstance(store, RecordSave):
        return False
    owners: dict[str, type] = {}
    for cls in type(store).__mro__:
        for method in (plain, record):
            if method in vars(cls):
                owners.setdefault(method, cls)
    return record in owners and issubclass(owners[record], owners.get(plain, object))


def _decoded(entries: str) -> tuple[KeptDecision, ...]:
    """Entries written by `DecisionHistory.entries` (or restored ones, checked when read) as objects."""
    return tuple(KeptDecision(*entry) for entry in json.loads(f"[{entries}]")) if entries else ()


_OWN_RING = 100  # the decisions a ring of our own holds (a governor that shares none with us)
_BLOCK = 100  # decisions of text compressed together (zlib: some 5x to 15x smaller)
_NEVER = -math.inf
_NO_BANDS: dict[tuple[float, float], float] = {}


class Rows(Protocol):
    """Where a governor keeps its decisions (its `Feedback`)."""

    def decision_rows(self) -> DecisionHistory | None:
        """The governor's `DecisionHistory`, None before its first decision."""
        ...


class KeptDecisions:
    """The latest ``size`` decisions of one governor, as its saved record keeps them.

    Nothing is kept per decision that the governor's own `DecisionHistory`
    already holds: the record's entries for those are written at each save
    straight from its compact rows (`DecisionHistory.entries`: the few numbers of
    a `KeptDecision`, as JSON text, building no object). The ring tells us each
    decision it is about to forget (`forgotten`); only those (a governor keeps 100,
    its record 1 000 by default) and the decisions restored from the store are
    kept here, as their JSON text (some 45 bytes a decision), which a save joins to
    the rest as it is; every 100 of them are compressed into a block (zlib, 5 to 15 times
    smaller: these arrays repeat themselves), unpacked at each save (some 10 µs a block).
    A decision's wall time is its time on the governor's clock moved by the latest
    decision's distance to the wall clock (the wall time itself for a decision made
    with no clock to read: no event loop).

    A governor that shares no ring (``rows`` None: the thread gate, whose decisions
    reach its persistence later, on another thread) gets a ring of its own here.

    Args:
        size: How many decisions the record keeps (``state_history_size``), >= 1.
        rows: The governor's ring of decisions (None until its first decision).
        governor: The governor's name, for a ring of our own.
        environment: Its environment, likewise.
    """

    __slots__ = (
        "_offset",
        "_older",
        "_older_count",
        "_own",
        "_packed",
        "_packed_count",
        "_ring",
        "_rows",
        "_size",
        "_skipped",
        "_walls",
    )

    def __init__(
        self,
        size: int,
        rows: Rows | None,
        *,
        governor: str,
        environment: str,
    ) -> None:
        self._size = size
        self._rows = rows
        self._own: DecisionHistory | None = None
        if rows is None:
            self._own = DecisionHistory(min(size, _OWN_RING), governor=governor, environment=environment)
            self._own.on_forget(self)
        self._ring = self._own  # the ring read, once it exists (told to hand us what it forgets)
        # The ring's decisions numbered in `_skipped` are restores: not saved. The decisions
        # kept that the ring forgot (and those restored from the store) are in `_older`, as text.
        self._skipped: tuple[int, ...] = ()
        self._older = ""
        self._older_count = 0
        # Older still: blocks of `_older`'s text compressed (zlib), oldest first, with how
        # many entries each holds. `_packed_count` is their sum; `_older_count` counts all.
        self._packed: tuple[tuple[int, bytes], ...] = ()
        self._packed_count = 0
        self._offset = 0.0  # wall time minus the governor's clock, at the latest decision
        # The wall time of each ring decision made when its clock read no time (no event loop).
        self._walls: dict[int, float] | None = None

    def _current(self) -> DecisionHistory | None:
        ring = self._ring
        if ring is None and self._rows is not None:
            ring = self._ring = self._rows.decision_rows()
            if ring is not None:
                ring.on_forget(self)
        return ring

    def add(self, decision: Decision, wall_now: float, *, restored: bool) -> None:
        """Keep ``decision`` (just made; a restore is kept out of the record)."""
        if self._own is not None:
            self._own.append(decision)
        ring = self._current()
        if ring is None or ring.last is not decision:
            return  # pragma: no cover - the governor keeps every decision before telling us
        number = ring.count - 1
        if restored:
            self._skipped = (*self._skipped, number)
        elif math.isfinite(decision.at):
            self._offset = wall_now - decision.at
        else:
            if self._walls is None:
                self._walls = {}
            self._walls[number] = wall_now

    def forgotten(self, history: DecisionHistory, number: int) -> None:
        """The ring forgets a decision: keep its entry as text (unless a restore, or too old to keep)."""
        walls = self._walls
        if number in self._skipped:
            self._skipped = tuple(n for n in self._skipped if n != number)
        else:
            # Inside the governor's decision: a figure that cannot be written costs the record
            # that one entry, never the decision.
            try:
                text, _ = history.entries(number, number + 1, offset=self._offset, walls=walls)
            except ValueError:
                text = ""
            if text:
                self._older = f"{self._older},{text}" if self._older else text
                self._older_count += 1
                self._trim(len(history) - 1 - len(self._skipped), slack=32)
                if self._older_count - self._packed_count >= _BLOCK:
                    self._pack()
        if walls is not None and walls.pop(number, None) is not None and not walls:
            self._walls = None

    def _pack(self) -> None:
        """Compress the text kept so far into a block: 45 B a decision becomes 3 to 10."""
        count = self._older_count - self._packed_count
        self._packed = (*self._packed, (count, zlib.compress(self._older.encode(), 1)))
        self._packed_count += count
        self._older = ""

    def _trim(self, newer: int, slack: int = 0) -> None:
        """Forget the oldest texts past ``size`` with ``newer`` decisions after them.

        A block goes whole, once all its entries are past it (`entries` leaves out the
        rest); the text not packed yet is cut once more than ``slack`` are past it: each cut
        copies the text.
        """
        excess = self._older_count + newer - self._size
        while self._packed and self._packed[0][0] <= excess:
            count = self._packed[0][0]
            self._packed = self._packed[1:]
            self._packed_count -= count
            self._older_count -= count
            excess -= count
        if not self._packed and excess > slack:
            self._older = _drop_oldest(self._older, min(excess, self._older_count))
            self._older_count = max(0, self._older_count - excess)

    def _older_text(self, newer: int) -> str:
        """All the text kept apart, unpacked, oldest first, without what is past ``size``."""
        parts = [zlib.decompress(block).decode() for _, block in self._packed]
        if self._older:
            parts.append(self._older)
        text = ",".join(parts)
        excess = self._older_count + newer - self._size
        return _drop_oldest(text, excess) if excess > 0 else text

    def _newer(self) -> tuple[str, int]:
        """The ring's decisions the record keeps (its restores left out, the latest ``size``), as text."""
        ring = self._current()
        if ring is None:
            return "", 0
        recorded = len(ring) - len(self._skipped)
        first = ring.count - len(ring) + max(0, recorded - self._size)
        text, count = ring.entries(first, offset=self._offset, walls=self._walls, skipped=self._skipped)
        if count > self._size:  # a restore among the rows left out above
            text, count = _drop_oldest(text, count - self._size), self._size
        return text, count

    def restore(self, history: tuple[KeptDecision, ...]) -> None:
        """Keep the decisions of a saved record, older than any kept so far."""
        if not history:
            return
        # One block, older than any kept so far (a block of its own whatever its size).
        text = ",".join(d.json_text() for d in history)
        self._packed = ((len(history), zlib.compress(text.encode(), 1)), *self._packed)
        self._packed_count += len(history)
        self._older_count += len(history)
        self._trim(self._newer()[1])

    def entries(self) -> tuple[str, int]:
        """The kept decisions' entries as JSON text (comma-separated, oldest first), and how many.

        Raises:
            ValueError: If a figure cannot be written (a time or a latency that is not finite).
        """
        newer, count = self._newer()
        self._trim(count)
        older = self._older_text(count)
        total = min(self._size, self._older_count + count)
        if older and newer:
            return f"{older},{newer}", total
        return older or newer, total


class GovernorPersistence:
    """Ties one governor (a `Learner`) to a store; implements `Persistence`.

    The learned state is loaded once, by the first caller that takes the
    gate's slow path (the governor sends everyone there until `loaded`),
    so ``Governor.__init__`` stays synchronous and the fast path pays
    nothing. Saves run in a background task after decisions, at most one per
    ``save_interval_s`` (the last decision of a burst is saved too), and
    never on the permit path; `flush` saves what is left.
    """

    __slots__ = (
        "_baseline_at",
        "_chunk_size",
        "_chunker",
        "_dirty",
        "_failing",
        "_generation",
        "_governor",
        "_history",
        "_history_size",
        "_last_save_at",
        "_latency_floor_s",
        "_loaded",
        "_loading",
        "_lock",
        "_loop",
        "_max_age_s",
        "_record_save",
        "_restored",
        "_restoring",
        "_rows",
        "_save_interval_s",
        "_saved_chunk_size",
        "_saved_seen",
        "_scheduled",
        "_scope",
        "_seen",
        "_store",
        "_task",
        "_wall_clock",
    )

    def __init__(
        self,
        governor: Learner,
        store: StateStore,
        *,
        max_age_s: float | None,
        save_interval_s: float,
        history_size: int = 1000,
        wall_clock: Callable[[], float] = time.time,
        rows: Rows | None = None,
    ) -> None:
        self._governor = governor
        self._store = store
        self._max_age_s = max_age_s
        self._save_interval_s = save_interval_s
        self._wall_clock = wall_clock
        self._loading: Any = None  # an anyio.Event while a load is in progress
        self._restored: LearnedState | None = None
        self._restoring = False
        self._loaded = False
        self._latency_floor_s: float | None = None
        self._dirty = False
        self._scheduled = False
        self._generation = 0  # bumped by each schedule and by flush: an older save task is void
        self._scope: Any = None  # the cancel scope of the pending debounced save (trio)
        # On asyncio, the pending debounced save is a timer (a task, a cancel scope and a sleep
        # weigh ~2 KB, held by every governor with unsaved changes), and then the save's task.
        self._task: asyncio.TimerHandle | asyncio.Task[bool] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of that timer
        self._lock: Any = None
        self._last_save_at = _NEVER
        self._failing = False
        # When each kept (size, latency) baseline pair was measured (wall time): a pair the
        # policy still holds unchanged keeps its time; a new one is stamped at the save.
        self._baseline_at: dict[tuple[float, float], float] = _NO_BANDS  # replaced, never changed
        self._chunker: Chunker | None = None
        self._chunk_size: int | None = None  # the latest chunk size known (restored or seen)
        self._saved_chunk_size: int | None = None
        # The kept decisions, made at the first one (most governors never decide).
        self._history_size = history_size
        self._rows = rows
        self._history: KeptDecisions | None = None
        self._seen = 0  # units of work seen, as of the last snapshot
        self._saved_seen = 0  # ... as of the last save
        self._record_save: bool | None = None  # whether the store takes a record's text (`RecordSave`)
        governor.add_listener(self._on_decision)

    def _kept(self) -> KeptDecisions | None:
        """The kept decisions (made now if none were yet); None when none are kept."""
        if self._history is None and self._history_size:
            gov = self._governor
            self._history = KeptDecisions(
                self._history_size, self._rows, governor=gov.name, environment=gov.environment
            )
        return self._history

    @property
    def label(self) -> str:
        """``name[environment]``, for logs."""
        return f"{self._governor.name}[{self._governor.environment}]"

    @property
    def store(self) -> StateStore:
        """The store."""
        return self._store

    @property
    def loaded(self) -> bool:
        """Whether the learned state was loaded (and applied, if there was any)."""
        return self._loaded

    @property
    def restored(self) -> LearnedState | None:
        """The state the governor started from, if one was loaded and used (its ``history`` left empty).

        The decisions restored are kept with the record (`KeptDecisions`), once.
        """
        return self._restored

    # -- loading ------------------------------------------------------------

    async def load(self) -> None:
        """Load and apply the learned state once; concurrent callers wait for the first."""
        import anyio

        while not self._loaded:
            if self._loading is not None:
                await self._loading.wait()
                continue
            event = self._loading = anyio.Event()
            try:
                self._apply(await self._fetch())
                self._loaded = True
            finally:
                # A cancelled loader leaves the state pending: the next caller retries.
                self._loading = None
                event.set()

    async def _fetch(self) -> LearnedState | None:
        gov = self._governor
        try:
            return await self._store.load(gov.environment, gov.name)
        except Exception as exc:
            logger.warning(
                "cannot load learned state for %s[%s] from %r (%s); starting from the default limit",
                gov.name,
                gov.environment,
                self._store,
                exc,
            )
            return None

    def _apply(self, state: LearnedState | None) -> None:
        if state is None:
            return
        gov = self._governor
        age_s = self._wall_clock() - state.updated_at
        if self._max_age_s is not None and age_s > self._max_age_s:
            logger.info(
                "%s[%s]: learned state is %.0fs old (max %.0fs); starting from the default limit",
                gov.name,
                gov.environment,
                age_s,
                self._max_age_s,
            )
            return
        # Kept without its decisions: the record keeps them (as text, `KeptDecisions.restore`),
        # and a thousand `KeptDecision` objects would weigh some 170 KB for as long as we live.
        self._restored = dataclasses.replace(state, history=()) if state.history else state
        self._latency_floor_s = state.latency_floor_s
        self._restore_baseline(state)
        if state.chunk_size is not None:
            self._chunk_size = self._saved_chunk_size = state.chunk_size
            self._resize_chunker()
        history = self._kept() if state.history else None
        if history is not None:
            history.restore(state.history)  # older than anything decided in this process
        self._restoring = True
        try:
            saved = f"{state.policy}, saved {max(0.0, age_s):.0f}s ago"
            gov.reset_limit(state.limit, reason=f"restored learned limit {state.limit:g} ({saved})")
        finally:
            self._restoring = False

    def _restore_baseline(self, state: LearnedState) -> None:
        """Give the policy the baseline bands measured recently enough (`BASELINE_MAX_AGE_S`)."""
        keeper = _baseline_keeper(self._governor.policy)
        if keeper is None or not state.latency_baseline or keeper.learned_baseline():
            return  # nothing kept, or this run measured its own already
        now = self._wall_clock()
        max_age_s = BASELINE_MAX_AGE_S
        if self._max_age_s is not None:
            max_age_s = min(max_age_s, self._max_age_s)
        # A time in the future (another host's clock) counts by its distance too.
        fresh = [b for b in state.latency_baseline if abs(now - b.measured_at) <= max_age_s]
        if not fresh:
            logger.info("%s: learned latency baseline over %.0fs old: measured again", self.label, max_age_s)
            return
        keeper.restore_baseline(tuple((b.size, b.latency_s) for b in fresh))
        self._baseline_at = {(b.size, b.latency_s): b.measured_at for b in fresh}

    def _baseline_bands(self, now: float) -> tuple[BaselineBand, ...]:
        keeper = _baseline_keeper(self._governor.policy)
        if keeper is None:
            return ()
        kept = self._baseline_at
        self._baseline_at = {pair: kept.get(pair, now) for pair in keeper.learned_baseline()}
        return tuple(BaselineBand(size, latency, at) for (size, latency), at in self._baseline_at.items())

    # -- saving -------------------------------------------------------------

    @property
    def restored_at(self) -> float | None:
        """When the state the governor started from was saved (wall time), if one was restored."""
        return self._restored.updated_at if self._restored is not None else None

    # -- the chunk size -----------------------------------------------------

    @property
    def chunker(self) -> Chunker | None:
        """The chunker attached, if any."""
        return self._chunker

    def attach_chunker(self, chunker: Chunker | None) -> None:
        """Keep ``chunker``'s size with the limit; None detaches the one attached (its size is kept).

        An attached chunker with a ``reset(size)`` method (`aiogovernor.AdaptiveChunker`)
        starts from the learned size: now if one is known, else when the state is loaded.
        """
        previous = self._chunker
        if previous is not None and previous is not chunker:
            self._note_chunk_size(previous.size)
        self._chunker = chunker
        if chunker is not None:
            self._resize_chunker()

    def _resize_chunker(self) -> None:
        chunker, size = self._chunker, self._chunk_size
        if chunker is None or size is None:
            return
        reset = getattr(chunker, "reset", None)
        if callable(reset) and chunker.size != size:
            reset(size)

    def _note_chunk_size(self, size: int) -> None:
        if size != self._chunk_size:
            self._chunk_size = size
        if size != self._saved_chunk_size:
            self._mark_dirty()

    # -- saving -------------------------------------------------------------

    def snapshot(self) -> LearnedState:
        """What the governor knows now, as a record."""
        head, entries = self._snapshot_parts()
        if not entries:
            return head
        return dataclasses.replace(head, history=_decoded(entries))

    def _snapshot_parts(self) -> tuple[LearnedState, str]:
        """What the governor knows now: the record without its history, and the history's entries as text."""
        gov = self._governor
        base = self._restored
        # At exit, a paused governor's clock may be gone with its loop: keep the last count.
        with contextlib.suppress(Exception):
            self._seen = sum(gov.stats().counts.values())
        if self._chunker is not None:
            self._chunk_size = self._chunker.size
        now = self._wall_clock()
        head = LearnedState(
            limit=gov.policy.limit,
            policy=gov.policy.name,
            updated_at=now,
            sample_count=(base.sample_count if base else 0) + self._seen,
            latency_floor_s=self._latency_floor_s,
            chunk_size=self._chunk_size,
            latency_baseline=self._baseline_bands(now),
        )
        return head, self._history.entries()[0] if self._history is not None else ""

    def _on_decision(self, decision: Decision) -> None:
        w = decision.window
        # Decisions given to listeners carry the whole window (a kept summary has no minimum).
        if not self._restoring and isinstance(w, Window) and w.count > 0 and w.ok > 0:
            floor = self._latency_floor_s
            if floor is None or w.latency_min_s < floor:
                self._latency_floor_s = w.latency_min_s
        history = self._kept()
        if history is not None:
            history.add(decision, self._wall_clock(), restored=self._restoring)
        if not self._restoring:
            self._mark_dirty()

    def _mark_dirty(self) -> None:
        self._dirty = True
        if id(self) not in _unsaved:
            _unsaved[id(self)] = self
            if not _exit_hook_registered:
                _register_exit_hook()
        if not self._scheduled or self._pending_elsewhere():
            self._schedule()

    def _pending_elsewhere(self) -> bool:
        """Whether the pending save's timer is on a loop other than the running one.

        A loop that ended (``asyncio.run`` returned) with a save pending never fires its
        timer: the next loop must schedule the save again, not wait for it.
        """
        if self._loop is None:
            return False
        try:
            return asyncio.get_running_loop() is not self._loop
        except RuntimeError:
            return False

    def _schedule(self) -> None:
        self._generation += 1
        generation = self._generation
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            try:
                import trio

                trio.lowlevel.spawn_system_task(self._save_later, generation)
            except (ImportError, RuntimeError):
                return  # no event loop at all: `flush` saves it
        else:
            # Capped: see `_save_later`.
            delay = min(self._save_interval_s, self._last_save_at + self._save_interval_s - loop.time())
            self._task = loop.call_later(max(delay, 0.0), self._save_due, loop, generation)
            self._loop = loop
        self._scheduled = True

    def _save_due(self, loop: asyncio.AbstractEventLoop, generation: int) -> None:
        """The debounced save's timer fired (asyncio): save, unless flushed or scheduled again since."""
        if generation != self._generation:
            return  # void: its successor's timer may be pending
        self._task = self._loop = None
        self._scheduled = False
        task = self._task = loop.create_task(self.save())
        task.add_done_callback(self._save_done)

    def _save_done(self, task: asyncio.Task[bool]) -> None:
        if self._task is task:
            self._task = None  # a finished task is not kept
        if not task.cancelled():
            task.exception()  # retrieved: `save` logs its own failures

    async def _save_later(self, generation: int) -> None:
        import anyio

        if generation != self._generation:
            return  # flushed before it started
        try:
            with anyio.CancelScope() as scope:
                self._scope = scope
                # Capped: the last save's time may come from another run's clock (trio's
                # clocks start at a random offset), which must not put this save off.
                delay = min(
                    self._save_interval_s, self._last_save_at + self._save_interval_s - anyio.current_time()
                )
                if delay > 0:
                    await anyio.sleep(delay)
        finally:
            if generation == self._generation:
                self._scope = None
                self._scheduled = False
        if not scope.cancel_called and generation == self._generation:
            await self.save()

    async def save(self) -> bool:
        """Save now if anything changed since the last save; return whether it was written."""
        import anyio

        lock = self._lock
        if lock is None:
            lock = self._lock = anyio.Lock()
        try:
            async with lock:
                return await self._save_locked()
        finally:
            # An idle lock is dropped (it weighs ~0.8 KB, and a governor saves once per interval
            # at most); one handed on to a waiting save stays held, so it is kept.
            if self._lock is lock and not lock.locked():
                self._lock = None

    async def _save_locked(self) -> bool:
        import anyio

        if not self._dirty and self._moved_since_save():
            self._dirty = True
        if not self._dirty:
            return False
        gov = self._governor
        store = self._store
        if self._record_save is None:
            self._record_save = _takes_records(store)
        state, entries = self._snapshot_parts()
        self._dirty = False
        self._last_save_at = anyio.current_time()
        try:
            with anyio.CancelScope(shield=True):
                if self._record_save:
                    # The history's entries as they are: each kept decision encoded once.
                    record = record_text(state, entries)
                    await cast("RecordSave", store).save_record(gov.environment, gov.name, record)
                else:
                    if entries:
                        state = dataclasses.replace(state, history=_decoded(entries))
                    await store.save(gov.environment, gov.name, state)
        except Exception as exc:
            self._dirty = True
            if not self._failing:
                self._failing = True
                logger.warning(
                    "cannot save learned state for %s[%s] to %r (%s); carrying on in memory",
                    gov.name,
                    gov.environment,
                    self._store,
                    exc,
                )
            return False
        except BaseException:
            # Cancelled all the same (asyncio.run cancels what is left as the loop ends, and
            # a shield guards only against cancel scopes): not saved, so the exit hook must.
            self._dirty = True
            raise
        self._saved(state)
        return True

    def _moved_since_save(self) -> bool:
        """Whether what moves without a decision (the chunk size, work counted) moved since the last save."""
        if self._chunker is not None and self._chunker.size != self._saved_chunk_size:
            return True
        try:
            return sum(self._governor.stats().counts.values()) != self._saved_seen
        except Exception:  # a governor whose clock is gone with its loop
            return False

    def _saved(self, state: LearnedState) -> None:
        self._saved_chunk_size = state.chunk_size
        self._saved_seen = self._seen
        if not self._dirty:
            _unsaved.pop(id(self), None)
        if self._failing:
            self._failing = False
            logger.warning("learned state for %s is being saved again", self.label)

    def save_blocking(self) -> bool:
        """Save what is left now, blocking (the exit hook, in a worker thread); return whether written.

        Only for stores that can (`BlockingSave`); never raises: a failure is logged at debug.
        """
        store = self._store
        if not self._dirty or not isinstance(store, BlockingSave):
            return False
        gov = self._governor
        try:
            if _takes_records(store, "save_blocking", "save_record_blocking"):
                state, entries = self._snapshot_parts()  # the record's text, its decisions as they are
                self._dirty = False
                save_record = store.save_record_blocking  # type: ignore[attr-defined]
                save_record(gov.environment, gov.name, record_text(state, entries))
            else:
                state = self.snapshot()
                self._dirty = False
                store.save_blocking(gov.environment, gov.name, state)
        except Exception as exc:
            self._dirty = True
            logger.debug("cannot save learned state for %s at exit (%s)", self.label, exc)
            return False
        self._saved(state)
        return True

    async def flush(self) -> None:
        """Cancel the pending debounced save and save what is left now."""
        if self._scheduled:
            # Void the pending save at once, not when its task wakes: a decision from
            # here on schedules a save of its own.
            self._generation += 1
            self._scheduled = False
            if self._scope is not None:
                self._scope.cancel()
                self._scope = None
            if isinstance(self._task, asyncio.TimerHandle):
                if not self._pending_elsewhere():
                    self._task.cancel()  # (another loop's timer is void by the generation)
                self._task = self._loop = None
        await self.save()
