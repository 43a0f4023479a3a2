"""Trial dispatch to remote serverless endpoints (RunPod's API shape by default).

- `JobClient`: submit, poll and cancel jobs on one endpoint, each API call
  governed; every state handled; the remote job cancelled whenever the
  caller stops waiting for it.
- `EndpointPool`: several endpoints, each with its own governor and
  `CircuitBreaker`; trials go where capacity is free (weighed by each
  endpoint's recent success rate), fail over on the endpoint's failures
  (never on the trial's own, `Fault`), drop endpoints that refuse the key,
  and fall back to a bounded local callable.
- `ProgressTracker` / `StudyProgress`: counts, best value and an ETA measured
  from observed durations; a `StudyProgress` is an `aiogovernor.Progress`.
- `LiveView` / `render_pool`: an optional rich live table of a pool (needs
  the ``rich`` extra; shows nothing without it).
- `optimize_remote`: an Optuna study driven by asyncio tasks (needs the
  ``optuna`` extra).

Needs the ``httpx`` extra. `aiogovernor.dispatch.testing` has a local
serverless server for tests and examples.
"""

from __future__ import annotations

from ._breaker import BreakerState as BreakerState
from ._breaker import CircuitBreaker as CircuitBreaker
from ._client import JobClient as JobClient
from ._client import JobClientStats as JobClientStats
from ._live import LiveView as LiveView
from ._live import render_pool as render_pool
from ._optuna import ConcurrentTPEWarning as ConcurrentTPEWarning
from ._optuna import RemoteStudyResult as RemoteStudyResult
from ._optuna import optimize_remote as optimize_remote
from ._pool import DispatchResult as DispatchResult
from ._pool import EndpointPool as EndpointPool
from ._pool import LocalFallback as LocalFallback
from ._progress import EndpointSnapshot as EndpointSnapshot
from ._progress import PoolSnapshot as PoolSnapshot
from ._progress import ProgressTracker as ProgressTracker
from ._progress import StudyProgress as StudyProgress
from ._protocol import RunPodProtocol as RunPodProtocol
from ._protocol import ServerlessProtocol as ServerlessProtocol
from ._states import AuthError as AuthError
from ._states import DispatchError as DispatchError
from ._states import EndpointError as EndpointError
from ._states import EndpointHealth as EndpointHealth
from ._states import Fault as Fault
from ._states import JobClassifier as JobClassifier
from ._states import JobError as JobError
from ._states import JobExpired as JobExpired
from ._states import JobFailed as JobFailed
from ._states import JobState as JobState
from ._states import JobStatus as JobStatus
from ._states import JobTimeout as JobTimeout
from ._states import TrialFailed as TrialFailed
from ._states import default_classify_job as default_classify_job

__all__ = [
    "AuthError",
    "BreakerState",
    "CircuitBreaker",
    "ConcurrentTPEWarning",
    "DispatchError",
    "DispatchResult",
    "EndpointError",
    "EndpointHealth",
    "EndpointPool",
    "EndpointSnapshot",
    "Fault",
    "JobClassifier",
    "JobClient",
    "JobClientStats",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobState",
    "JobStatus",
    "JobTimeout",
    "LiveView",
    "LocalFallback",
    "PoolSnapshot",
    "ProgressTracker",
    "RemoteStudyResult",
    "RunPodProtocol",
    "ServerlessProtocol",
    "StudyProgress",
    "TrialFailed",
    "default_classify_job",
    "optimize_remote",
    "render_pool",
]

# Old names, kept working with a DeprecationWarning.
_RENAMED = {
    # Two public classes named Progress with different shapes: the study's one is a
    # StudyProgress, an aiogovernor.Progress with the study's figures.
    "Progress": "StudyProgress",
}


def __getattr__(name: str) -> object:
    new = _RENAMED.get(name)
    if new is None:
        raise AttributeError(f"module 'aiogovernor.dispatch' has no attribute {name!r}")
    import warnings  # on the deprecated path only

    warnings.warn(
        f"aiogovernor.dispatch.{name} is deprecated; use aiogovernor.dispatch.{new}",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
