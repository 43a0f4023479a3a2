"""Learned state per environment: what a governor learned, kept so the next run starts there.

A governor keeps its learned limit (and latency floor, sample count, policy
name) per ``(environment, governor name)`` in a `StateStore`:

- `JsonFileStore`, the default: one atomically written JSON file per
  environment under the user's state directory (``$AIOGOVERNOR_STATE_DIR``).
- `MemoryStore`: a dict, for tests and for state that dies with the process.
- `RedisStore`: shared by every process and host of a fleet (the ``redis`` extra).

`FleetCeiling` caps the permits held across a whole fleet (Redis leases that
expire when their holder dies), on top of each process's adaptive limit.
Inspect and reset state with ``python -m aiogovernor state ...``.
"""

from __future__ import annotations

from ._fleet import FleetCeiling as FleetCeiling
from ._fleet import FleetPermit as FleetPermit
from ._json import JsonFileStore as JsonFileStore
from ._json import default_state_dir as default_state_dir
from ._memory import MemoryStore as MemoryStore
from ._names import MAX_NAME_LENGTH as MAX_NAME_LENGTH
from ._names import check_environment as check_environment
from ._names import check_governor_name as check_governor_name
from ._protocol import StateStore as StateStore
from ._protocol import StateStoreError as StateStoreError
from ._record import SCHEMA_VERSION as SCHEMA_VERSION
from ._record import LearnedState as LearnedState
from ._redis import RedisStore as RedisStore

__all__ = [
    "FleetCeiling",
    "FleetPermit",
    "JsonFileStore",
    "LearnedState",
    "MAX_NAME_LENGTH",
    "MemoryStore",
    "RedisStore",
    "SCHEMA_VERSION",
    "StateStore",
    "StateStoreError",
    "check_environment",
    "check_governor_name",
    "default_state_dir",
]
