"""The governor's side of persistence: restore once, save after decisions (debounced), flush on close."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from ._protocol import StateStore
from ._record import LearnedState

if TYPE_CHECKING:
    from aiogovernor._events import Decision
    from aiogovernor._governor import Governor

__all__ = ["GovernorPersistence", "resolve_store", "state_disabled"]

logger = logging.getLogger("aiogovernor.state")

_TRUE = frozenset({"1", "true", "yes", "on"})


def state_disabled() -> bool:
    """Whether ``$AIOGOVERNOR_DISABLE_STATE`` turns persistence off."""
    return os.environ.get("AIOGOVERNOR_DISABLE_STATE", "").strip().lower() in _TRUE


def resolve_store(store: StateStore | Literal["default"] | None) -> StateStore | None:
    """The store a governor uses: the JSON file store for ``"default"``, nothing when disabled."""
    if isinstance(store, str):
        if store != "default":
            raise ValueError(f"store must be a StateStore, None or 'default', got {store!r}")
    elif store is not None and not isinstance(store, StateStore):
        raise TypeError(f"store must implement StateStore (load, save, delete, list, ...), got {store!r}")
    if store is None or state_disabled():
        return None
    if isinstance(store, str):
        from ._json import JsonFileStore

        return JsonFileStore()
    return store


class GovernorPersistence:
    """Ties one governor to a store.

    The learned state is loaded once, by the first caller that takes the
    gate's slow path (the governor sends everyone there until it is loaded),
    so ``Governor.__init__`` stays synchronous and the fast path pays
    nothing. Saves run in a background task after decisions, at most one per
    ``save_interval_s`` (the last decision of a burst is saved too), and
    never on the permit path; `flush` saves what is left.
    """

    def __init__(
        self,
        governor: Governor,
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
    def restored(self) -> LearnedState | None:
        """The state the governor started from, if one was loaded and used."""
        return self._restored

    # -- loading ------------------------------------------------------------

    async def load(self) -> None:
        """Load and apply the learned state once; concurrent callers wait for the first."""
        import anyio

        gov = self._governor
        while gov._state_pending:
            if self._loading is not None:
                await self._loading.wait()
                continue
            event = self._loading = anyio.Event()
            try:
                self._apply(await self._fetch())
                gov._state_ready()
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
        seen = sum(gov._counts().values())
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
                delay = self._last_save_at + self._save_interval_s - anyio.current_time()
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
