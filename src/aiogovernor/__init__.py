"""aiogovernor: an asyncio-native concurrency governor.

An async semaphore whose limit a feedback loop resizes while work runs, so
that you stop hand-tuning concurrency:

```python
from aiogovernor import Governor

gov = Governor("uploads")
async with gov:
    await upload(item)
```

Layout (imports point down the list; ``tests/test_layers.py`` checks it):

- Integrations, public subpackages built on the core: `aiogovernor.httpx`,
  `aiogovernor.uploads`, `aiogovernor.dispatch`, `aiogovernor.fleet`
  (a Redis-wide permit cap), `aiogovernor.sim`, `aiogovernor.testing`, the
  CLI (``__main__``, ``_state_cli``, ``_demo``).
- The core, private modules re-exported here:
    - ``_governor``: `Governor`, the async gate (permits, FIFO waiters, the
      fast path), `Permit`, `GovernorStats`. It holds one of each of:
    - ``_feedback``: windows -> policy -> decision -> history and listeners;
      synchronous, no event loop.
    - ``_time_gates``: a pause (Retry-After) and the rate ceiling, owning
      their wake-ups.
    - ``_persistence``: the `aiogovernor.state.StateStore` protocol and a
      governor's side of it (load once, save after decisions); ``_record``
      and ``_names`` are what it keeps and how names are checked.
    - ``_map``, ``_attempt``, ``_retry``, ``_chunking``, ``_progress``: the
      maps, the one attempt loop (permit, call, classify, Retry-After,
      release, backoff) that the maps, httpx and uploads run, and the
      helpers around a permit.
    - ``_samples``, ``_events``, ``_classify``, ``_clock``, ``_validate``:
      the vocabulary every layer shares (outcomes, windows, decisions, time).
- Policies: `aiogovernor.limits` (plain objects fed windows; no event loop).
- Stores: `aiogovernor.state` (JSON file, memory, Redis); they implement the
  core's protocol and never import a gate.
"""

from __future__ import annotations

import sys as _sys

from ._chunking import AdaptiveChunker as AdaptiveChunker
from ._chunking import Chunker as Chunker
from ._classify import Classifier as Classifier
from ._classify import OverloadError as OverloadError
from ._classify import default_classify as default_classify
from ._env import getenv as _getenv
from ._events import Decision as Decision
from ._events import DecisionListener as DecisionListener
from ._events import WindowListener as WindowListener
from ._events import WindowSummary as WindowSummary
from ._governor import Governor as Governor
from ._governor import GovernorStats as GovernorStats
from ._governor import Permit as Permit
from ._map import MapOptions as MapOptions
from ._map import governed_batches as governed_batches
from ._map import governed_imap as governed_imap
from ._map import governed_imap_unordered as governed_imap_unordered
from ._map import governed_map as governed_map
from ._persistence import StateStore as _StateStore
from ._persistence import set_default_store_factory as _set_default_store_factory
from ._plot import PlotError as PlotError
from ._progress import Progress as Progress
from ._progress import ProgressCallback as ProgressCallback
from ._registry import live_governors as live_governors
from ._retry import Retry as Retry
from ._retry import RetryBudget as RetryBudget
from ._retry import parse_retry_after as parse_retry_after
from ._samples import Outcome as Outcome
from ._samples import WindowConfig as WindowConfig
from .limits import AIMD as AIMD
from .limits import Fixed as Fixed
from .limits import Gradient as Gradient
from .limits import LatencyAIMD as LatencyAIMD
from .limits import LimitPolicy as LimitPolicy
from .limits import Profile as Profile
from .limits import ResourceCeiling as ResourceCeiling
from .limits import ThroughputAIMD as ThroughputAIMD
from .limits import Vegas as Vegas
from .limits import profile as profile

_default_stores: dict[tuple[str | None, ...], _StateStore] = {}
# What `aiogovernor.state.default_state_dir` reads on this platform.
_STATE_DIR_VARIABLES = (
    ("AIOGOVERNOR_STATE_DIR", "LOCALAPPDATA", "USERPROFILE")
    if _sys.platform == "win32"
    else ("AIOGOVERNOR_STATE_DIR", "XDG_STATE_HOME", "HOME")
)


def _json_file_store() -> _StateStore:
    # This package's __init__ is the composition root, the one module that sees both the
    # core and the stores: it names the default store.
    # One store per state directory, not one per governor (resolving the directory costs
    # more than the rest of a governor): keyed by what `default_state_dir` reads.
    first, second, third = _STATE_DIR_VARIABLES
    key = (_getenv(first), _getenv(second), _getenv(third))
    store = _default_stores.get(key)
    if store is None:
        # Imported on the first governor that keeps state, so that `import aiogovernor`
        # pulls in no store (an import statement here would run on every governor).
        from .state import JsonFileStore

        store = _default_stores[key] = JsonFileStore()
    return store


_set_default_store_factory(_json_file_store)

__all__ = [
    "AIMD",
    "AdaptiveChunker",
    "Chunker",
    "Classifier",
    "Decision",
    "DecisionListener",
    "Fixed",
    "Governor",
    "GovernorStats",
    "Gradient",
    "LatencyAIMD",
    "LimitPolicy",
    "MapOptions",
    "Outcome",
    "OverloadError",
    "Permit",
    "PlotError",
    "Profile",
    "Progress",
    "ProgressCallback",
    "ResourceCeiling",
    "Retry",
    "RetryBudget",
    "ThroughputAIMD",
    "Vegas",
    "WindowConfig",
    "WindowListener",
    "WindowSummary",
    "__version__",
    "default_classify",
    "governed_batches",
    "governed_imap",
    "governed_imap_unordered",
    "governed_map",
    "live_governors",
    "parse_retry_after",
    "profile",
]

# Mechanism names that used to be exported here: old name -> (new home, attribute).
# They still work, with a DeprecationWarning naming the new home.
_MOVED = {
    "Adjustment": ("aiogovernor.limits", "Adjustment"),
    "Clock": ("aiogovernor.testing", "Clock"),
    "MapProgress": ("aiogovernor", "Progress"),
    "Sample": ("aiogovernor.limits", "Sample"),
    "Window": ("aiogovernor.limits", "Window"),
    "WindowAggregator": ("aiogovernor.limits", "WindowAggregator"),
    "loop_time": ("aiogovernor.testing", "loop_time"),
}


def __getattr__(name: str) -> object:
    # The version is read from the installed metadata on first use: importing
    # importlib.metadata would otherwise cost every `import aiogovernor` ~30 ms.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("aiogovernor")
        except PackageNotFoundError:  # pragma: no cover - running from a source tree
            return "0+unknown"
    moved = _MOVED.get(name)
    if moved is not None:
        # Imported here, on the deprecated path only: the new homes are imported on demand.
        import importlib
        import warnings

        module, attribute = moved
        warnings.warn(
            f"aiogovernor.{name} is deprecated; use {module}.{attribute}", DeprecationWarning, stacklevel=2
        )
        return getattr(importlib.import_module(module), attribute)
    raise AttributeError(f"module 'aiogovernor' has no attribute {name!r}")
