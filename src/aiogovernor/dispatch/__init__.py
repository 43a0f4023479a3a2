"""Trial dispatch to remote serverless endpoints (RunPod's API shape by default).

- `JobClient`: submit, poll and cancel jobs on one endpoint, each API call
  governed; every state handled; the remote job cancelled whenever the
  caller stops waiting for it.
- `EndpointPool`: several endpoints, each with its own governor and
  `CircuitBreaker`; trials go where capacity is free (weighed by each
  endpoint's recent success rate), fail over on the endpoint's failures
  (never on the trial's own, `Fault`), drop endpoints that refuse the key,
  and fall back to a bounded local callable.
- `ProgressTracker` / `Progress`: counts, best value and an ETA measured
  from observed durations.
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
from ._progress import Progress as Progress
from ._progress import ProgressTracker as ProgressTracker
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
    "Progress",
    "ProgressTracker",
    "RemoteStudyResult",
    "RunPodProtocol",
    "ServerlessProtocol",
    "TrialFailed",
    "default_classify_job",
    "optimize_remote",
    "render_pool",
]
