"""Job states, the status of one remote job, an endpoint's health, and the errors dispatch raises."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthError",
    "DispatchError",
    "EndpointError",
    "EndpointHealth",
    "JobError",
    "JobExpired",
    "JobFailed",
    "JobState",
    "JobStatus",
    "JobTimeout",
    "TrialFailed",
]


class JobState(enum.StrEnum):
    """The life of a serverless job, as the endpoint reports it.

    ``EXPIRED`` is not a state the endpoint names: it is what the client
    records when ``/status`` answers 404 for a job it submitted, once the
    result has been dropped.
    """

    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"
    EXPIRED = "EXPIRED"

    @property
    def terminal(self) -> bool:
        """Whether the job will never change state again (nothing left to poll or cancel)."""
        return self not in (JobState.IN_QUEUE, JobState.IN_PROGRESS)


@dataclass(frozen=True, slots=True, kw_only=True)
class JobStatus:
    """One reading of a job's status.

    Attributes:
        job_id: The endpoint's id for the job.
        state: Where the job is.
        output: The job's result, once ``COMPLETED``.
        error: The endpoint's reason, for ``FAILED`` and friends.
        queue_time_s: How long the job waited for a worker, if the endpoint said.
        execution_time_s: How long it ran, if the endpoint said.
    """

    job_id: str
    state: JobState
    output: Any = None
    error: str | None = None
    queue_time_s: float | None = None
    execution_time_s: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointHealth:
    """An endpoint's ``/health`` answer.

    Attributes:
        workers_idle: Workers ready and waiting.
        workers_running: Workers busy with a job.
        jobs_in_queue: Jobs waiting for a worker.
        jobs_in_progress: Jobs running.
        raw: The decoded body, for fields this class does not name.
    """

    workers_idle: int
    workers_running: int
    jobs_in_queue: int
    jobs_in_progress: int
    raw: Mapping[str, Any]

    @property
    def workers(self) -> int:
        """Workers able to take a job now or soon: idle plus running."""
        return self.workers_idle + self.workers_running


class DispatchError(Exception):
    """Base class for every error `aiogovernor.dispatch` raises."""


class EndpointError(DispatchError):
    """The endpoint could not be reached or answered with an error (a 5xx, a 503 when dead).

    Args:
        message: What happened.
        endpoint: The endpoint's id.
        status_code: The HTTP status, when there was a response.
    """

    def __init__(self, message: str, *, endpoint: str, status_code: int | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code


class AuthError(EndpointError):
    """The endpoint refused the API key (401 or 403). The key itself is never in the message."""


class JobError(DispatchError):
    """A job ended without a result.

    Args:
        message: What happened.
        endpoint: The endpoint's id.
        job_id: The job's id, if one was assigned.
        state: The job's last known state.
    """

    def __init__(self, message: str, *, endpoint: str, job_id: str | None, state: JobState | None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.job_id = job_id
        self.state = state


class JobFailed(JobError):
    """The endpoint reports the job ``FAILED``, ``CANCELLED`` (by someone else) or ``TIMED_OUT``."""


class JobExpired(JobError):
    """``/status`` answered 404: the job is unknown or its result has expired."""


class JobTimeout(JobError):
    """The job waited in the queue longer than ``queue_timeout_s``, or ran longer than
    ``execution_timeout_s``; the remote job was cancelled.

    Attributes:
        phase: ``"queue"`` or ``"execution"``.
    """

    def __init__(
        self, message: str, *, endpoint: str, job_id: str | None, state: JobState | None, phase: str
    ) -> None:
        super().__init__(message, endpoint=endpoint, job_id=job_id, state=state)
        self.phase = phase


class TrialFailed(DispatchError):
    """Every attempt at a trial failed (remote endpoints, then the local fallback if any).

    Attributes:
        errors: The error of each attempt, in order.
    """

    def __init__(self, message: str, errors: list[BaseException]) -> None:
        super().__init__(message)
        self.errors = errors
