"""A store in a dict: for tests, and for state that should last only as long as the process."""

from __future__ import annotations

import builtins
import json

from aiogovernor._record import LearnedState

__all__ = ["MemoryStore"]


class MemoryStore:
    """Keeps learned state in memory, shared by every governor given this instance.

    Useful in tests and for governors that should learn within one process
    without touching the disk:

    ```python
    store = MemoryStore()
    a = Governor("api", store=store)
    b = Governor("api", store=store)   # starts where `a` left off, once `a` saved
    ```
    """

    def __init__(self) -> None:
        # A record a governor saved as text (`save_record`) is read into a `LearnedState` when
        # first loaded: until then it weighs its text, not a thousand decision objects.
        self._data: dict[str, dict[str, LearnedState | str]] = {}

    def _state(self, environment: str, name: str) -> LearnedState | None:
        entries = self._data.get(environment, {})
        state = entries.get(name)
        if isinstance(state, str):
            state = entries[name] = LearnedState.from_json(json.loads(state))
        return state

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``, if any."""
        return self._state(environment, name)

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Keep ``state`` for ``name`` in ``environment``."""
        self._data.setdefault(environment, {})[name] = state

    async def save_record(self, environment: str, name: str, record: str) -> None:
        """`save` of a record already turned into JSON text (what a governor hands its store).

        Kept as text until it is loaded, so a governor's save builds no objects.
        """
        self._data.setdefault(environment, {})[name] = record

    async def delete(self, environment: str, name: str) -> bool:
        """Forget ``name`` in ``environment``; return whether it was there."""
        entries = self._data.get(environment)
        if entries is None or name not in entries:
            return False
        del entries[name]
        if not entries:
            del self._data[environment]
        return True

    async def list(self, environment: str) -> dict[str, LearnedState]:
        """Every governor's state in ``environment``."""
        names = builtins.list(self._data.get(environment, {}))
        return {name: state for name in names if (state := self._state(environment, name)) is not None}

    async def environments(self) -> builtins.list[str]:
        """The environments holding any state, sorted."""
        return sorted(self._data)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryStore({sum(len(v) for v in self._data.values())} entries)"
