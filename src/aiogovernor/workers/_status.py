"""What a pool reports: jobs, per-type and per-worker status, and its decisions as events."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

__all__ = ["Job", "JobState", "TypeStatus", "WorkerEvent", "WorkerListener", "WorkerStatus"]


class JobState(enum.StrEnum):
    """Where a job stands."""

    QUEUED = "queued"
    """Waiting for a permit of its type's governor, or for a worker."""
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class Job:
    """One job given to a `WorkerPool`: its state, and its result once it ends.

    Made by `WorkerPool.submit`. Every job ends as a result, a failure or a
    cancellation with a reason; none is dropped.
    """

    def __init__(self, job_id: int, worker_type: str, payload: Any) -> None:
        import anyio

        self.id = job_id
        """The job's id, unique in its pool."""
        self.worker_type = worker_type
        """The worker type that runs it."""
        self.payload = payload
        self.state = JobState.QUEUED
        self.attempts = 0
        """Runs started (more than 1 when a worker died and the job was retried)."""
        self.pid: int | None = None
        """The worker running it, or that ran it last."""
        self.reason: str | None = None
        """Why it failed or was cancelled."""
        self._value: Any = None
        self._error: BaseException | None = None
        self._done = anyio.Event()
        self._scope = anyio.CancelScope()
        self._cancel_reason: str | None = None

    def done(self) -> bool:
        """Whether the job has ended (done, failed or cancelled)."""
        return self._done.is_set()

    async def result(self) -> Any:
        """Wait for the job to end; its result, or raise its failure (`JobFailed`, `WorkerDied`, ...)."""
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value

    def cancel(self, reason: str = "cancelled by the caller") -> bool:
        """Cancel the job; a running job's worker is stopped. False when it had already ended."""
        if self.done():
            return False
        if self._cancel_reason is None:
            self._cancel_reason = reason
        self._scope.cancel()
        return True

    def _finish(self, value: Any) -> None:
        self._value = value
        self.state = JobState.DONE
        self._done.set()

    def _fail(self, error: BaseException, state: JobState = JobState.FAILED) -> None:
        self._error = error
        self.reason = str(error)
        self.state = state
        self._done.set()

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.worker_type!r} {self.state.value}>"


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerStatus:
    """One worker process, from `WorkerPool.status`.

    Attributes:
        pid: Its process id (None until the process exists).
        state: ``starting``, ``idle``, ``busy`` or ``retiring``.
        age_s: Time since it was spawned.
        jobs_done: Jobs it has finished.
        current_job: The id of the job it runs, if any.
        resource: The resource it holds (a GPU index), if any.
    """

    pid: int | None
    state: str
    age_s: float
    jobs_done: int
    current_job: int | None
    resource: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class TypeStatus:
    """One worker type, from `WorkerPool.status`.

    Attributes:
        name: The type's name.
        limit: Its governor's limit: jobs (so workers) at once.
        queued: Jobs waiting for a permit or for a worker.
        starting: Workers starting.
        idle: Workers ready and waiting for work.
        busy: Workers running a job.
        retiring: Workers on their way out (recycled, reaped, shrunk).
        jobs_done: Jobs finished with a result.
        jobs_failed: Jobs that ended in a failure or a cancellation.
        spawned: Workers started so far (start failures included).
        spawn_failures: Starts that failed or timed out.
        spawning_stopped: Whether repeated start failures stopped spawning (the breaker is open).
        last_start_error: Why the last failed start failed.
        workers: Each worker's status.
    """

    name: str
    limit: int
    queued: int
    starting: int
    idle: int
    busy: int
    retiring: int
    jobs_done: int
    jobs_failed: int
    spawned: int
    spawn_failures: int
    spawning_stopped: bool
    last_start_error: str | None
    workers: tuple[WorkerStatus, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class WorkerEvent:
    """One decision or happening of a pool: a spawn, a reap, a recycle, a death.

    Attributes:
        kind: ``spawn``, ``ready``, ``start_failed``, ``spawning_stopped``,
            ``reap`` (idle too long), ``recycle`` (jobs or age reached),
            ``shrink`` (the limit fell), ``stop`` (a cancelled job's worker),
            ``died`` (exited on its own) or ``exit`` (left as asked).
        worker_type: The type's name.
        pid: The worker's process id, if it has one.
        at: Clock time.
        reason: Why, in words.
    """

    kind: str
    worker_type: str
    pid: int | None
    at: float
    reason: str

    def describe(self) -> str:
        """A one-line account, for logs."""
        who = f"worker {self.pid}" if self.pid else "a worker"
        return f"{self.worker_type}: {self.kind} {who}: {self.reason}"


WorkerListener: TypeAlias = Callable[[WorkerEvent], object]
"""Receives every `WorkerEvent`, synchronously on the event loop; it must be quick."""
