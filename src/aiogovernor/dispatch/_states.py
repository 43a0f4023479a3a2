"""Job states, the status of one remote job, an endpoint's health, and the errors dispatch raises."""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthError",
    "Fault",
    "JobClassifier",
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
    "default_classify_job",
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


class Fault(enum.StrEnum):
    """Whose failure a job's end is: it decides retries, breakers and the endpoint's share.

    - ``NONE``: the job did its work; its output is the trial's result.
    - ``TRIAL``: the trial failed by itself (its handler raised, its loss is
      NaN): retrying it elsewhere would fail the same way, and the endpoint
      did nothing wrong. Told ``FAIL`` once; not retried; not counted
      against the endpoint.
    - ``ENDPOINT``: the infrastructure failed (a 5xx, a connection error,
      ``TIMED_OUT``, a job lost with its worker, a 404 before completion): the
      trial is retried on another endpoint and the failure counts against
      this one (its breaker, its governor, its share of new trials).
    """

    NONE = "none"
    TRIAL = "trial"
    ENDPOINT = "endpoint"


JobClassifier = Callable[["JobStatus"], Fault]
"""Says whose failure a job's final status is (see `default_classify_job`)."""


def default_classify_job(status: JobStatus) -> Fault:
    """The default split of a job's final status between the trial and the endpoint.

    - ``COMPLETED`` → ``NONE``, unless its output is a float NaN (a loss that
      diverged) or a mapping with an ``"error"`` entry (a handler that reported
      its failure in its output) → ``TRIAL``;
    - ``FAILED`` with an ``error`` (the handler's exception, as RunPod reports
      it) → ``TRIAL``;
    - ``FAILED`` with no error, ``TIMED_OUT``, ``CANCELLED`` (by someone else)
      and ``EXPIRED`` (404 before the client saw the job end) → ``ENDPOINT``.
    """
    if status.state is JobState.COMPLETED:
        output = status.output
        if isinstance(output, float) and math.isnan(output):
            return Fault.TRIAL
        if isinstance(output, Mapping) and output.get("error") is not None:
            return Fault.TRIAL
        return Fault.NONE
    if status.state is JobState.FAILED and status.error:
        return Fault.TRIAL
    return Fault.ENDPOINT


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
    """The endpoint could not be reached, answered with an error (a 5xx, a 503 when dead),
    or answered something unreadable (not JSON, missing fields, an unknown status).

    Args:
        message: What happened.
        endpoint: The endpoint's id.
        status_code: The HTTP status, when there was a response.
        call: Which API call it was (``"submit"``, ``"status"``, ``"cancel"``, ``"health"``).
    """

    def __init__(
        self, message: str, *, endpoint: str, status_code: int | None = None, call: str | None = None
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.status_code = status_code
        self.call = call


class AuthError(EndpointError):
    """The endpoint refused the API key (401 or 403), or no key was sent where one is needed.

    Fatal for that endpoint: never retried, never a circuit-breaker failure.
    `EndpointPool` stops sending it work, and raises it when no endpoint is
    left that can accept work. The key itself is never in the message.
    """


class JobError(DispatchError):
    """A job ended without a result.

    Args:
        message: What happened.
        endpoint: The endpoint's id.
        job_id: The job's id, if one was assigned.
        state: The job's last known state.
        fault: Whose failure it is (`Fault.TRIAL` or `Fault.ENDPOINT`), as the
            client's job classifier judged it.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        job_id: str | None,
        state: JobState | None,
        fault: Fault = Fault.ENDPOINT,
    ) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.job_id = job_id
        self.state = state
        self.fault = fault


class JobFailed(JobError):
    """The endpoint reports the job ``FAILED``, ``CANCELLED`` (by someone else) or ``TIMED_OUT``,
    or the job classifier judged a ``COMPLETED`` job a failure of the trial.

    Attributes:
        error: The endpoint's (or handler's) reason, if it gave one.
        output: The job's output, if any.
    """

    def __init__(
        self,
        message: str,
        *,
        endpoint: str,
        job_id: str | None,
        state: JobState | None,
        fault: Fault = Fault.ENDPOINT,
        error: str | None = None,
        output: Any = None,
    ) -> None:
        super().__init__(message, endpoint=endpoint, job_id=job_id, state=state, fault=fault)
        self.error = error
        self.output = output


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
    """A trial failed: by itself (`Fault.TRIAL`, at once, not retried), or on every
    endpoint it was tried on, then the local fallback if any (`Fault.ENDPOINT`).

    Attributes:
        errors: The error of each attempt, in order.
        fault: `Fault.TRIAL` when the trial's own failure ended it, else `Fault.ENDPOINT`.
    """

    def __init__(self, message: str, errors: list[BaseException], *, fault: Fault = Fault.ENDPOINT) -> None:
        super().__init__(message)
        self.errors = errors
        self.fault = fault
