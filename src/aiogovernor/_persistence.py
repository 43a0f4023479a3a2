"""Persistence in the core: the store protocol, and a governor's side of it.

Two small protocols meet here, so that neither side imports the other:

- `StateStore` is what a store implements (`aiogovernor.state` holds the
  stores: a JSON file, memory, Redis). The core never imports a store.
- `Learner` is what persistence needs of a governor: its names, its policy,
  `reset_limit`, `add_listener` and its counts (`stats`). This module never imports
  the governor; `Persistence` is all the governor sees of it.

`GovernorPersistence` ties one learner to one store: the learned state is
loaded once, on the first slow-path acquire, saved after decisions (in the
background, debounced) and flushed on ``aclose``.

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
import builtins
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from ._record import LearnedState
from ._validate import check_float

if TYPE_CHECKING:
    from ._events import Decision, DecisionListener
    from .limits import LimitPolicy

__all__ = [
    "GovernorPersistence",
    "Learner",
    "Persistence",
    "StateStore",
    "StateStoreError",
    "bind_persistence",
    "resolve_store",
    "set_default_store_factory",
    "state_disabled",
]

logger = logging.getLogger("aiogovernor.state")

_TRUE = frozenset({"1", "true", "yes", "on"})


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

    async def load(self) -> None:
        """Load and apply the learned state once; concurrent callers wait for the first."""
        ...

    async def flush(self) -> None:
        """Save what is left now; never raises for a store failure."""
        ...


def state_disabled() -> bool:
    """Whether ``$AIOGOVERNOR_DISABLE_STATE`` turns persistence off."""
    return os.environ.get("AIOGOVERNOR_DISABLE_STATE", "").strip().lower() in _TRUE


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
    elif store is not None and not isinstance(store, StateStore):
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
) -> GovernorPersistence | None:
    """Validate the persistence settings and tie ``learner`` to its store; None when nothing is kept."""
    if max_age_s is not None:
        check_float("state_max_age_s", max_age_s, low=0.0)
    check_float("save_interval_s", save_interval_s, low=0.0)
    resolved = resolve_store(store)
    if resolved is None:
        return None
    return GovernorPersistence(learner, resolved, max_age_s=max_age_s, save_interval_s=save_interval_s)


class GovernorPersistence:
    """Ties one governor (a `Learner`) to a store; implements `Persistence`.

    The learned state is loaded once, by the first caller that takes the
    gate's slow path (the governor sends everyone there until `loaded`),
    so ``Governor.__init__`` stays synchronous and the fast path pays
    nothing. Saves run in a background task after decisions, at most one per
    ``save_interval_s`` (the last decision of a burst is saved too), and
    never on the permit path; `flush` saves what is left.
    """

    def __init__(
        self,
        governor: Learner,
        store: StateStore,
        *,
        max_age_s: float | None,
        save_interval_s: float,
        wall_clock: Callable[[], float] = time.time,
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
        self._scope: Any = None  # the cancel scope of the pending debounced save
        self._task: asyncio.Task[None] | None = None
        self._lock: Any = None
        self._last_save_at = -math.inf
        self._failing = False
        governor.add_listener(self._on_decision)

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
        """The state the governor started from, if one was loaded and used."""
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
        self._restored = state
        self._latency_floor_s = state.latency_floor_s
        self._restoring = True
        try:
            saved = f"{state.policy}, saved {max(0.0, age_s):.0f}s ago"
            gov.reset_limit(state.limit, reason=f"restored learned limit {state.limit:g} ({saved})")
        finally:
            self._restoring = False

    # -- saving -------------------------------------------------------------

    def snapshot(self) -> LearnedState:
        """What the governor knows now, as a record."""
        gov = self._governor
        base = self._restored
        seen = sum(gov.stats().counts.values())
        return LearnedState(
            limit=gov.policy.limit,
            policy=gov.policy.name,
            updated_at=self._wall_clock(),
            sample_count=(base.sample_count if base else 0) + seen,
            latency_floor_s=self._latency_floor_s,
            chunk_size=base.chunk_size if base else None,
        )

    def _on_decision(self, decision: Decision) -> None:
        if self._restoring:
            return
        w = decision.window
        if w is not None and w.count > 0 and w.ok > 0:
            floor = self._latency_floor_s
            if floor is None or w.latency_min_s < floor:
                self._latency_floor_s = w.latency_min_s
        self._dirty = True
        if not self._scheduled:
            self._schedule()

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
            self._task = loop.create_task(self._save_later(generation))
        self._scheduled = True

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

        if self._lock is None:
            self._lock = anyio.Lock()
        async with self._lock:
            if not self._dirty:
                return False
            gov = self._governor
            state = self.snapshot()
            self._dirty = False
            self._last_save_at = anyio.current_time()
            try:
                with anyio.CancelScope(shield=True):
                    await self._store.save(gov.environment, gov.name, state)
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
            if self._failing:
                self._failing = False
                logger.warning("learned state for %s[%s] is being saved again", gov.name, gov.environment)
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
        await self.save()
