"""Learned state per environment: where what a governor learned is kept, so the next run starts there.

A governor keeps its learned limit (and latency floor, its policy's latency
baseline as `BaselineBand`, sample count, policy name, chunk size and its last
decisions as `KeptDecision`) per
``(environment, governor name)`` in a `StateStore`:

- `JsonFileStore`, the default: one JSON record per governor, in one SQLite
  file per environment under the user's state directory (``$AIOGOVERNOR_STATE_DIR``).
- `MemoryStore`: a dict, for tests and for state that dies with the process.
- `RedisStore`: shared by every process and host of a fleet (the ``redis`` extra).

This package holds stores only: the `StateStore` protocol, the record and
the governor's side of persistence live in the core, which never imports
this package (the default store is registered with the core by
``aiogovernor/__init__.py``). Inspect and reset state with
``python -m aiogovernor state ...``. The fleet-wide permit cap moved to
`aiogovernor.fleet`.
"""

from __future__ import annotations

import warnings
from typing import Any

from aiogovernor._names import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from aiogovernor._names import check_environment as check_environment
from aiogovernor._names import check_governor_name as check_governor_name
from aiogovernor._persistence import StateStore as StateStore
from aiogovernor._persistence import StateStoreError as StateStoreError
from aiogovernor._record import REASON_CODES as REASON_CODES
from aiogovernor._record import SCHEMA_VERSION as SCHEMA_VERSION
from aiogovernor._record import BaselineBand as BaselineBand
from aiogovernor._record import KeptDecision as KeptDecision
from aiogovernor._record import LearnedState as LearnedState

from ._json import JsonFileStore as JsonFileStore
from ._json import default_state_dir as default_state_dir
from ._memory import MemoryStore as MemoryStore
from ._redis import RedisStore as RedisStore

__all__ = [
    "BaselineBand",
    "JsonFileStore",
    "KeptDecision",
    "LearnedState",
    "MAX_NAME_LENGTH",
    "MemoryStore",
    "REASON_CODES",
    "RedisStore",
    "SCHEMA_VERSION",
    "StateStore",
    "StateStoreError",
    "check_environment",
    "check_governor_name",
    "default_state_dir",
]

_MOVED = {"FleetCeiling", "FleetPermit"}


def __getattr__(name: str) -> Any:
    # FleetCeiling is a gate, not a store: it lives in aiogovernor.fleet now. The old
    # names still resolve (imported here, on first use only) with a warning.
    if name in _MOVED:
        warnings.warn(
            f"aiogovernor.state.{name} moved to aiogovernor.fleet.{name}; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        from aiogovernor import fleet

        return getattr(fleet, name)
    raise AttributeError(f"module 'aiogovernor.state' has no attribute {name!r}")
