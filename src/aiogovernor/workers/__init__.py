"""On-demand local worker processes, and a Redis Streams queue for fleets.

- `WorkerPool`: worker processes of one or more `WorkerType`, spawned when
  work arrives (up to each type's governor limit), reaped when idle,
  recycled after a number of jobs or an age without stranding a job,
  replaced when they die; ``pool.run``, ``pool.submit``, ``pool.map``.
- `Job`, `JobState`: a submitted job and where it stands.
- `TypeStatus`, `WorkerStatus`, `WorkerEvent`: what `WorkerPool.status` and
  `WorkerPool.events` report.
- `JobFailed`, `WorkerDied`, `WorkerStartError`, `JobCancelled`: how a job can fail.
- `RedisJobQueue`: producers and pools on several machines sharing jobs
  through a Redis stream (the ``redis`` extra).
"""

from __future__ import annotations

from ._errors import JobCancelled as JobCancelled
from ._errors import JobFailed as JobFailed
from ._errors import JobTimeout as JobTimeout
from ._errors import WorkerDied as WorkerDied
from ._errors import WorkerError as WorkerError
from ._errors import WorkerStartError as WorkerStartError
from ._pool import WorkerPool as WorkerPool
from ._queue import RedisJobQueue as RedisJobQueue
from ._status import Job as Job
from ._status import JobState as JobState
from ._status import TypeStatus as TypeStatus
from ._status import WorkerEvent as WorkerEvent
from ._status import WorkerListener as WorkerListener
from ._status import WorkerStatus as WorkerStatus
from ._types import WorkerType as WorkerType

__all__ = [
    "Job",
    "JobCancelled",
    "JobFailed",
    "JobState",
    "JobTimeout",
    "RedisJobQueue",
    "TypeStatus",
    "WorkerDied",
    "WorkerError",
    "WorkerEvent",
    "WorkerListener",
    "WorkerPool",
    "WorkerStartError",
    "WorkerStatus",
    "WorkerType",
]
