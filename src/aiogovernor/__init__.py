"""aiogovernor: an asyncio-native concurrency governor.

An async semaphore whose limit a feedback loop resizes while work runs, so
that you stop hand-tuning concurrency::

    from aiogovernor import Governor

    gov = Governor("uploads")
    async with gov:
        await upload(item)
"""

from __future__ import annotations

from ._chunking import AdaptiveChunker as AdaptiveChunker
from ._chunking import Chunker as Chunker
from ._classify import Classifier as Classifier
from ._classify import OverloadError as OverloadError
from ._classify import default_classify as default_classify
from ._events import Decision as Decision
from ._events import DecisionListener as DecisionListener
from ._governor import Governor as Governor
from ._governor import GovernorStats as GovernorStats
from ._governor import Permit as Permit
from ._map import MapOptions as MapOptions
from ._map import governed_batches as governed_batches
from ._map import governed_imap as governed_imap
from ._map import governed_imap_unordered as governed_imap_unordered
from ._map import governed_map as governed_map
from ._progress import Progress as Progress
from ._progress import ProgressCallback as ProgressCallback
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
    "Profile",
    "Progress",
    "ProgressCallback",
    "ResourceCeiling",
    "Retry",
    "RetryBudget",
    "ThroughputAIMD",
    "Vegas",
    "WindowConfig",
    "__version__",
    "default_classify",
    "governed_batches",
    "governed_imap",
    "governed_imap_unordered",
    "governed_map",
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
