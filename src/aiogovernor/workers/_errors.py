"""What a job or a worker start can fail with."""

from __future__ import annotations

__all__ = ["JobCancelled", "JobFailed", "JobTimeout", "WorkerDied", "WorkerError", "WorkerStartError"]


class WorkerError(Exception):
    """Base class of the errors of `aiogovernor.workers`."""


class JobFailed(WorkerError):
    """The job's own code raised in the worker (or a command worker answered with an error).

    The worker is fine and takes the next job. When the exception could be
    sent back, it is this error's ``__cause__``.

    Attributes:
        job_id: The job.
        worker_type: Its worker type.
        summary: ``"ExceptionType: message"`` as raised in the worker.
        remote_traceback: The traceback text from the worker ("" for a command worker).
    """

    def __init__(self, job_id: int | str, worker_type: str, summary: str, remote_traceback: str = "") -> None:
        super().__init__(f"job {job_id} ({worker_type}) failed in its worker: {summary}")
        self.job_id = job_id
        self.worker_type = worker_type
        self.summary = summary
        self.remote_traceback = remote_traceback


class WorkerDied(WorkerError):
    """The worker process exited (crash, kill -9, out of memory) while running the job.

    Attributes:
        job_id: The job.
        worker_type: Its worker type.
        pid: The worker's process id.
        returncode: Its exit status (negative: the signal that ended it).
    """

    def __init__(self, job_id: int | str, worker_type: str, pid: int, returncode: int | None) -> None:
        self.job_id = job_id
        self.worker_type = worker_type
        self.pid = pid
        self.returncode = returncode
        super().__init__(
            f"worker {pid} ({worker_type}) {describe_exit(returncode)} while running job {job_id}"
        )


class JobTimeout(WorkerError):
    """The job ran longer than its ``job_timeout_s``; its worker was stopped (and is replaced).

    Attributes:
        job_id: The job.
        worker_type: Its worker type.
        pid: The worker's process id.
        timeout_s: The time the job had.
    """

    def __init__(self, job_id: int | str, worker_type: str, pid: int, timeout_s: float) -> None:
        super().__init__(
            f"job {job_id} ({worker_type}) did not finish within job_timeout_s={timeout_s:g}; "
            f"its worker {pid} was stopped"
        )
        self.job_id = job_id
        self.worker_type = worker_type
        self.pid = pid
        self.timeout_s = timeout_s


class WorkerStartError(WorkerError):
    """A worker of this type could not be started, and no other can run the job.

    Raised to the jobs waiting for a worker when starts keep failing and the
    type's start breaker has opened (no more spawns until it resets).
    """


class JobCancelled(WorkerError):
    """The job was cancelled before it finished (the pool was closed with ``cancel=True``, ...).

    Attributes:
        job_id: The job.
        reason: Why, in words.
    """

    def __init__(self, job_id: int | str, reason: str) -> None:
        super().__init__(f"job {job_id} cancelled: {reason}")
        self.job_id = job_id
        self.reason = reason


def describe_exit(returncode: int | None) -> str:
    """``"exited with status 3"``, ``"was killed by SIGKILL (out of memory, or kill -9)"``, ..."""
    import signal

    if returncode is None:
        return "stopped answering"
    if returncode >= 0:
        return f"exited with status {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    hint = " (out of memory, or kill -9)" if name == "SIGKILL" else ""
    return f"was killed by {name}{hint}"
