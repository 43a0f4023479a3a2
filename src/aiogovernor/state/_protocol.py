"""The store protocol: where learned state is kept."""

from __future__ import annotations

import builtins
from typing import Protocol, runtime_checkable

from ._record import LearnedState

__all__ = ["StateStore", "StateStoreError"]


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
