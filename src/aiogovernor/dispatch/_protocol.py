"""How a serverless job API is spelled: paths, auth and bodies; RunPod's by default."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._states import EndpointHealth, JobState, JobStatus

__all__ = ["RunPodProtocol", "ServerlessProtocol"]


@runtime_checkable
class ServerlessProtocol(Protocol):
    """The shape of a "run / status / cancel / health" job API.

    Implement it for a service like RunPod's serverless endpoints whose paths
    or field names differ; `JobClient` does the rest (governing, polling,
    cancelling).
    """

    @property
    def api_key_env(self) -> str | None:
        """The environment variable the API key is read from when none is given (None: never)."""
        ...

    @property
    def requires_api_key(self) -> bool:
        """Whether calls need an API key at all."""
        ...

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the key."""
        ...

    def run_path(self, endpoint_id: str, *, sync: bool) -> str:
        """The path that submits a job (``sync``: waits for the result a while)."""
        ...

    def status_path(self, endpoint_id: str, job_id: str) -> str:
        """The path that reads a job's status."""
        ...

    def cancel_path(self, endpoint_id: str, job_id: str) -> str:
        """The path that cancels a job."""
        ...

    def health_path(self, endpoint_id: str) -> str:
        """The path that reports workers and queue."""
        ...

    def run_body(self, payload: Any) -> dict[str, Any]:
        """The JSON body that submits ``payload``."""
        ...

    def parse_status(self, data: Mapping[str, Any]) -> JobStatus:
        """Read a submit or status answer."""
        ...

    def parse_health(self, data: Mapping[str, Any]) -> EndpointHealth:
        """Read a health answer."""
        ...


def _ms_to_s(value: object) -> float | None:
    return float(value) / 1000.0 if isinstance(value, int | float) and not isinstance(value, bool) else None


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


@dataclass(frozen=True, slots=True, kw_only=True)
class RunPodProtocol:
    """RunPod serverless: ``/v2/{endpoint_id}/run``, ``/runsync``, ``/status/{id}``,
    ``/cancel/{id}``, ``/health``, with a bearer token.

    Args:
        api_key_env: Where the key is read from when `JobClient` gets none.
        requires_api_key: Whether a key is required.
        prefix: The path prefix before the endpoint id.
    """

    api_key_env: str | None = "RUNPOD_API_KEY"
    requires_api_key: bool = True
    prefix: str = "/v2"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """A bearer token."""
        return {"Authorization": f"Bearer {api_key}"}

    def run_path(self, endpoint_id: str, *, sync: bool) -> str:
        """``/v2/{endpoint_id}/run`` or ``/runsync``."""
        return f"{self.prefix}/{endpoint_id}/{'runsync' if sync else 'run'}"

    def status_path(self, endpoint_id: str, job_id: str) -> str:
        """``/v2/{endpoint_id}/status/{job_id}``."""
        return f"{self.prefix}/{endpoint_id}/status/{job_id}"

    def cancel_path(self, endpoint_id: str, job_id: str) -> str:
        """``/v2/{endpoint_id}/cancel/{job_id}``."""
        return f"{self.prefix}/{endpoint_id}/cancel/{job_id}"

    def health_path(self, endpoint_id: str) -> str:
        """``/v2/{endpoint_id}/health``."""
        return f"{self.prefix}/{endpoint_id}/health"

    def run_body(self, payload: Any) -> dict[str, Any]:
        """``{"input": payload}``."""
        return {"input": payload}

    def parse_status(self, data: Mapping[str, Any]) -> JobStatus:
        """Read ``id``, ``status``, ``output``, ``error``, ``delayTime`` and ``executionTime`` (ms).

        Raises:
            ValueError: When the answer has no id or an unknown status.
        """
        job_id = data.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"status answer has no job id: {sorted(data)!r}")
        try:
            state = JobState(str(data.get("status")))
        except ValueError:
            raise ValueError(f"unknown job status {data.get('status')!r} for job {job_id}") from None
        error = data.get("error")
        return JobStatus(
            job_id=job_id,
            state=state,
            output=data.get("output"),
            error=None if error is None else str(error),
            queue_time_s=_ms_to_s(data.get("delayTime")),
            execution_time_s=_ms_to_s(data.get("executionTime")),
        )

    def parse_health(self, data: Mapping[str, Any]) -> EndpointHealth:
        """Read ``workers.idle``/``running`` and ``jobs.inQueue``/``inProgress``."""
        workers = data.get("workers") or {}
        jobs = data.get("jobs") or {}
        return EndpointHealth(
            workers_idle=_int(workers.get("idle")),
            workers_running=_int(workers.get("running")),
            jobs_in_queue=_int(jobs.get("inQueue")),
            jobs_in_progress=_int(jobs.get("inProgress")),
            raw=dict(data),
        )
