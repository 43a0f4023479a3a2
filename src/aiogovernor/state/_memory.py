"""A store in a dict: for tests, and for state that should last only as long as the process."""

from __future__ import annotations

import builtins

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
        self._data: dict[str, dict[str, LearnedState]] = {}

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``, if any."""
        return self._data.get(environment, {}).get(name)

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Keep ``state`` for ``name`` in ``environment``."""
        self._data.setdefault(environment, {})[name] = state

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
        return dict(self._data.get(environment, {}))

    async def environments(self) -> builtins.list[str]:
        """The environments holding any state, sorted."""
        return sorted(self._data)

    async def aclose(self) -> None:
        """Nothing to release."""

    def __repr__(self) -> str:
        return f"MemoryStore({sum(len(v) for v in self._data.values())} entries)"
