"""A local serverless-endpoint server, for tests, examples and benchmarks of `aiogovernor.dispatch`.

`LocalServerless` serves RunPod's API shape (``/v2/{endpoint_id}/run``,
``/runsync``, ``/status/{id}``, ``/cancel/{id}``, ``/health``) from a
starlette app on a free loopback port, in a background thread with its own
event loop, so that any test loop (or a plain script) can talk to it:

```python
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless

with LocalServerless({"gpu-a": FakeEndpoint(workers=2, failure_rate=0.3)}) as server:
    client = JobClient("gpu-a", api_key=server.api_key, base_url=server.base_url)
    ...
    assert server.live_jobs() == 0   # no orphaned job
```

Each endpoint has W workers, a job duration, an optional queue bound (429
with Retry-After beyond it), cold starts, a failure rate, an execution
timeout (``TIMED_OUT``), a result TTL (404 after it), a dead mode (503) and
counters of live and cancelled jobs. With ``gpu=GpuWorkerModel.h100_mlp1024()``
an endpoint's job durations follow a GPU worker measured on an H100
(`GpuWorkerModel`; `SimulatedGpuWorker` is the same model without HTTP, for
virtual time). It needs ``starlette`` and ``uvicorn``,
imported when the server starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import itertools
import random
import socket
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiogovernor._validate import check_float, check_int

from ._gpu_model import GpuWorkerModel as GpuWorkerModel
from ._gpu_model import SimulatedGpuWorker as SimulatedGpuWorker

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse

__all__ = ["EndpointCounters", "FakeEndpoint", "GpuWorkerModel", "LocalServerless", "SimulatedGpuWorker"]


@dataclass(kw_only=True)
class FakeEndpoint:
    """How one simulated endpoint behaves. Fields may be changed while the server runs.

    Attributes:
        workers: Jobs run at once.
        job_duration_s: How long a job runs (an input's ``"duration_s"`` overrides it).
        queue_limit: Jobs waiting beyond which ``/run`` answers 429 (None: unbounded).
        retry_after_s: The Retry-After sent with a 429.
        cold_start_s: Delay before a worker's first job starts (it stays ``IN_QUEUE``).
        failure_rate: Probability that a job fails for the infrastructure's reasons
            (the worker's fault, never the handler's), in the way ``failure_mode`` says.
        failure_mode: How such a failure shows: ``"failed"`` (``FAILED`` with no
            handler error), ``"timed_out"`` (``TIMED_OUT``) or ``"lost"`` (the job
            vanishes with its worker: ``/status`` answers 404).
        job_timeout_s: Jobs running longer end ``TIMED_OUT`` (None: never).
        result_ttl_s: How long a finished job's status is kept; then 404.
        runsync_wait_s: How long ``/runsync`` waits for the result.
        dead: Answer 503 to everything.
        compute: Makes a job's output from its input; by default ``{"echo": input}``.
            An exception it raises makes the job ``FAILED`` with the exception as its
            ``error`` (a handler's failure: the trial's fault, not the endpoint's).
        gpu: Times jobs by a measured GPU worker (`GpuWorkerModel`): a job lasts the
            model's latency at the number of jobs running when it starts, times
            ``time_scale``, instead of ``job_duration_s``; ``workers`` is then the
            worker's concurrency setting (trials it runs at once).
        time_scale: Multiplies the ``gpu`` model's durations (0.05: 20 times faster).
        seed: Seeds the failures.
    """

    workers: int = 2
    job_duration_s: float = 0.02
    queue_limit: int | None = None
    retry_after_s: float = 0.05
    cold_start_s: float = 0.0
    failure_rate: float = 0.0
    failure_mode: str = "failed"
    job_timeout_s: float | None = None
    result_ttl_s: float = 300.0
    runsync_wait_s: float = 1.0
    dead: bool = False
    compute: Callable[[Any], Any] | None = None
    gpu: GpuWorkerModel | None = None
    time_scale: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        check_int("workers", self.workers, low=1)
        check_float("job_duration_s", self.job_duration_s, low=0.0)
        if self.queue_limit is not None:
            check_int("queue_limit", self.queue_limit, low=0)
        check_float("retry_after_s", self.retry_after_s, low=0.0)
        check_float("cold_start_s", self.cold_start_s, low=0.0)
        check_float("failure_rate", self.failure_rate, low=0.0, high=1.0)
        if self.failure_mode not in ("failed", "timed_out", "lost"):
            raise ValueError(
                f"failure_mode must be 'failed', 'timed_out' or 'lost', got {self.failure_mode!r}"
            )
        if self.job_timeout_s is not None:
            check_float("job_timeout_s", self.job_timeout_s, low=0.0, low_open=True)
        check_float("result_ttl_s", self.result_ttl_s, low=0.0)
        check_float("runsync_wait_s", self.runsync_wait_s, low=0.0)
        if self.gpu is not None and not isinstance(self.gpu, GpuWorkerModel):
            raise TypeError(f"gpu must be a GpuWorkerModel, got {self.gpu!r}")
        check_float("time_scale", self.time_scale, low=0.0, low_open=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class EndpointCounters:
    """One endpoint's counters, from `LocalServerless.counters`.

    Attributes:
        live: Jobs queued or running now (0 after a clean run: no orphans).
        queued: Jobs waiting for a worker.
        running: Jobs running.
        submitted: Jobs accepted.
        rejected: Submits refused with 429.
        completed: Jobs ended ``COMPLETED``.
        failed: Jobs ended ``FAILED`` or ``TIMED_OUT``.
        cancelled: Jobs cancelled.
        peak_running: The most jobs running at once.
        requests: HTTP requests served (all paths).
    """

    live: int
    queued: int
    running: int
    submitted: int
    rejected: int
    completed: int
    failed: int
    cancelled: int
    peak_running: int
    requests: int


class _S(enum.StrEnum):
    IN_QUEUE = "IN_QUEUE"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"
    TIMED_OUT = "TIMED_OUT"


@dataclass
class _Job:
    id: str
    input: Any
    created: float
    state: _S = _S.IN_QUEUE
    output: Any = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    done: asyncio.Event = field(default_factory=asyncio.Event)
    cancel: asyncio.Event = field(default_factory=asyncio.Event)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.state.value}
        if self.output is not None:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        if self.started is not None:
            out["delayTime"] = round((self.started - self.created) * 1000)
            if self.finished is not None:
                out["executionTime"] = round((self.finished - self.started) * 1000)
        return out


class _Endpoint:
    def __init__(self, name: str, behaviour: FakeEndpoint, changed: threading.Condition) -> None:
        self.name = name
        self.changed = changed
        self.b = behaviour
        self.rng = random.Random(behaviour.seed)
        self.jobs: dict[str, _Job] = {}
        self.queue: asyncio.Queue[_Job] | None = None
        self.workers: list[asyncio.Task[None]] = []
        self.running = 0
        self.counts = dict.fromkeys(
            ("submitted", "rejected", "completed", "failed", "cancelled", "requests"), 0
        )
        self.peak_running = 0

    def queued(self) -> int:
        return sum(1 for j in self.jobs.values() if j.state is _S.IN_QUEUE)

    def in_progress(self) -> int:
        # By state, not by `running` (the workers busy): a cancel ends its job when it answers,
        # while the worker running it only notices on its next turn of the server's loop.
        return sum(1 for j in self.jobs.values() if j.state is _S.IN_PROGRESS)

    def ensure_workers(self) -> asyncio.Queue[_Job]:
        if self.queue is None:
            self.queue = asyncio.Queue()
            self.workers = [asyncio.create_task(self.worker()) for _ in range(self.b.workers)]
        return self.queue

    async def worker(self) -> None:
        assert self.queue is not None
        warm = False
        while True:
            job = await self.queue.get()
            if not warm and self.b.cold_start_s and job.cancel.is_set() is False:
                await asyncio.sleep(self.b.cold_start_s)
            warm = True
            if job.cancel.is_set():
                continue  # cancelled while queued (or while the worker warmed up)
            await self.execute(job)

    async def execute(self, job: _Job) -> None:
        loop = asyncio.get_running_loop()
        job.state, job.started = _S.IN_PROGRESS, loop.time()
        self.running += 1
        self.peak_running = max(self.peak_running, self.running)
        self.notify()
        try:
            duration = self.b.job_duration_s
            if self.b.gpu is not None:
                duration = self.b.gpu.latency_s(self.running) * self.b.time_scale
            if isinstance(job.input, Mapping) and isinstance(job.input.get("duration_s"), int | float):
                duration = float(job.input["duration_s"])
            limit = self.b.job_timeout_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.cancel.wait(), min(duration, limit) if limit else duration)
            if job.cancel.is_set():
                return  # the cancel handler already set the state
            if limit is not None and duration > limit:
                self.finish(job, _S.TIMED_OUT, error=f"job exceeded {limit:g}s")
            elif self.rng.random() < self.b.failure_rate:
                self.infrastructure_failure(job)
            else:
                try:
                    output = self.b.compute(job.input) if self.b.compute else {"echo": job.input}
                except Exception as exc:
                    self.finish(job, _S.FAILED, error=f"{type(exc).__name__}: {exc}")
                else:
                    self.finish(job, _S.COMPLETED, output=output)
        finally:
            self.running -= 1
            self.notify()

    def infrastructure_failure(self, job: _Job) -> None:
        mode = self.b.failure_mode
        if mode == "timed_out":
            self.finish(job, _S.TIMED_OUT, error="worker timed out")
        elif mode == "failed":
            self.finish(job, _S.FAILED)
        else:  # lost with its worker: the endpoint forgets it
            self.finish(job, _S.FAILED)
            del self.jobs[job.id]

    def notify(self) -> None:
        with self.changed:
            self.changed.notify_all()

    def finish(self, job: _Job, state: _S, *, output: Any = None, error: str | None = None) -> None:
        job.state, job.output, job.error = state, output, error
        job.finished = asyncio.get_running_loop().time()
        key = {_S.COMPLETED: "completed", _S.CANCELLED: "cancelled"}.get(state, "failed")
        self.counts[key] += 1
        job.done.set()
        self.notify()

    def expire(self, now: float) -> None:
        ttl = self.b.result_ttl_s
        for job_id in [j.id for j in self.jobs.values() if j.finished is not None and now - j.finished > ttl]:
            del self.jobs[job_id]


class LocalServerless:
    """A local serverless-endpoint server (starlette + uvicorn) in a background thread.

    Use it as a context manager (sync), or call `start` and `stop`. `start`
    returns once the server answers ``/health``: it binds its socket first,
    then polls, so it never sleeps to wait.

    Args:
        endpoints: Endpoint id → behaviour.
        api_key: The bearer token every request must carry (None: no auth).
        host: The loopback address to bind.
    """

    def __init__(
        self,
        endpoints: Mapping[str, FakeEndpoint],
        *,
        api_key: str | None = "local-test-key",
        host: str = "127.0.0.1",
    ) -> None:
        if not endpoints:
            raise ValueError("endpoints must name at least one endpoint")
        for name, behaviour in endpoints.items():
            if not isinstance(behaviour, FakeEndpoint):
                raise TypeError(f"endpoint {name!r} must be a FakeEndpoint, got {behaviour!r}")
        self._changed = threading.Condition()
        self._endpoints = {name: _Endpoint(name, b, self._changed) for name, b in endpoints.items()}
        self._api_key = api_key
        self._host = host
        self._port: int | None = None
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)

    @property
    def api_key(self) -> str | None:
        """The token clients must send."""
        return self._api_key

    @property
    def base_url(self) -> str:
        """``http://host:port`` of the running server."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return f"http://{self._host}:{self._port}"

    def behaviour(self, endpoint_id: str) -> FakeEndpoint:
        """The live behaviour of one endpoint (change its fields to change the endpoint)."""
        return self._endpoints[endpoint_id].b

    def counters(self, endpoint_id: str) -> EndpointCounters:
        """One endpoint's counters."""
        ep = self._endpoints[endpoint_id]
        queued, running = ep.queued(), ep.in_progress()
        return EndpointCounters(
            live=queued + running,
            queued=queued,
            running=running,
            peak_running=ep.peak_running,
            **ep.counts,
        )

    def jobs(self, endpoint_id: str) -> dict[str, str]:
        """One endpoint's known jobs: id → state (``IN_QUEUE``, ``IN_PROGRESS``, ...)."""
        return {job_id: job.state.value for job_id, job in self._endpoints[endpoint_id].jobs.items()}

    def wait_for(self, condition: Callable[[], bool], *, timeout_s: float = 10.0) -> None:
        """Block until ``condition()`` holds, woken by every job change (not by polling).

        Call it from a thread (``await asyncio.to_thread(server.wait_for, ...)``)
        when an event loop runs in the caller's.

        Raises:
            TimeoutError: When the condition still fails after ``timeout_s``.
        """
        with self._changed:
            if not self._changed.wait_for(condition, timeout=timeout_s):
                raise TimeoutError(f"condition {condition!r} still false after {timeout_s:g}s")

    def live_jobs(self) -> int:
        """Jobs queued or running on every endpoint: 0 means nothing is orphaned."""
        return sum(self.counters(name).live for name in self._endpoints)

    def __repr__(self) -> str:
        where = self.base_url if self._port is not None else "stopped"
        return f"<LocalServerless {where} endpoints={sorted(self._endpoints)}>"

    # -- the app ----------------------------------------------------------------

    def _app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.routing import Route

        return Starlette(
            routes=[
                Route("/v2/{endpoint}/run", self._run, methods=["POST"]),
                Route("/v2/{endpoint}/runsync", self._runsync, methods=["POST"]),
                Route("/v2/{endpoint}/status/{job}", self._status, methods=["GET", "POST"]),
                Route("/v2/{endpoint}/cancel/{job}", self._cancel, methods=["POST"]),
                Route("/v2/{endpoint}/health", self._health, methods=["GET"]),
            ]
        )

    def _guard(self, request: Request) -> tuple[_Endpoint | None, JSONResponse | None]:
        from starlette.responses import JSONResponse

        ep = self._endpoints.get(request.path_params["endpoint"])
        if ep is None:
            return None, JSONResponse({"error": "no such endpoint"}, status_code=404)
        ep.counts["requests"] += 1
        if self._api_key is not None and request.headers.get("authorization") != f"Bearer {self._api_key}":
            return None, JSONResponse({"error": "unauthorized"}, status_code=401)
        if ep.b.dead:
            return None, JSONResponse({"error": "endpoint unavailable"}, status_code=503)
        ep.expire(asyncio.get_running_loop().time())
        return ep, None

    async def _submit(self, request: Request) -> tuple[_Endpoint | None, _Job | JSONResponse]:
        from starlette.responses import JSONResponse

        ep, refusal = self._guard(request)
        if ep is None:
            assert refusal is not None
            return None, refusal
        try:
            body = await request.json()
        except ValueError:
            return None, JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict) or "input" not in body:
            return None, JSONResponse({"error": "body must be {'input': ...}"}, status_code=400)
        limit = ep.b.queue_limit  # checked after the last await: submits race
        if limit is not None and ep.queued() >= limit:
            ep.counts["rejected"] += 1
            ep.notify()  # a counter changed: `wait_for` may be waiting for it
            return None, JSONResponse(
                {"error": "queue full"}, status_code=429, headers={"Retry-After": f"{ep.b.retry_after_s:g}"}
            )
        job = _Job(
            id=f"{ep.name}-{next(self._ids)}", input=body["input"], created=asyncio.get_running_loop().time()
        )
        ep.jobs[job.id] = job
        ep.counts["submitted"] += 1
        ep.ensure_workers().put_nowait(job)
        ep.notify()
        return ep, job

    async def _run(self, request: Request) -> JSONResponse:
        from starlette.responses import JSONResponse

        _ep, job = await self._submit(request)
        if isinstance(job, JSONResponse):
            return job
        return JSONResponse({"id": job.id, "status": job.state.value})

    async def _runsync(self, request: Request) -> JSONResponse:
        from starlette.responses import JSONResponse

        ep, job = await self._submit(request)
        if isinstance(job, JSONResponse):
            return job
        assert ep is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(job.done.wait(), ep.b.runsync_wait_s)
        return JSONResponse(job.body())

    def _job(self, request: Request) -> tuple[_Endpoint, _Job] | JSONResponse:
        """The endpoint and job a /status or /cancel request names, or the response refusing it."""
        from starlette.responses import JSONResponse

        ep, refusal = self._guard(request)
        if ep is None:
            assert refusal is not None
            return refusal
        job = ep.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "job not found"}, status_code=404)
        return ep, job

    async def _status(self, request: Request) -> JSONResponse:
        from starlette.responses import JSONResponse

        found = self._job(request)
        if isinstance(found, JSONResponse):
            return found
        return JSONResponse(found[1].body())

    async def _cancel(self, request: Request) -> JSONResponse:
        from starlette.responses import JSONResponse

        found = self._job(request)
        if isinstance(found, JSONResponse):
            return found
        ep, job = found
        if not job.done.is_set():
            job.cancel.set()
            ep.finish(job, _S.CANCELLED)
        return JSONResponse(job.body())

    async def _health(self, request: Request) -> JSONResponse:
        from starlette.responses import JSONResponse

        ep, refusal = self._guard(request)
        if ep is None:
            assert refusal is not None
            return refusal
        queued = ep.queued()
        return JSONResponse(
            {
                "jobs": {
                    "inQueue": queued,
                    "inProgress": ep.in_progress(),
                    "completed": ep.counts["completed"],
                    "failed": ep.counts["failed"],
                    "retried": 0,
                },
                "workers": {"idle": ep.b.workers - ep.running, "running": ep.running},
            }
        )

    # -- lifecycle ------------------------------------------------------------

    def start(self, *, timeout_s: float = 10.0) -> None:
        """Bind a free port, serve in a thread, return once ``/health`` answers.

        Raises:
            RuntimeError: When the server did not answer within ``timeout_s``.
        """
        import httpx
        import uvicorn

        if self._thread is not None:
            raise RuntimeError("the server is already started")
        # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
        # they are TCP; without it, Nagle meets delayed ACKs and every response stalls 40 ms.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self._host, 0))
        sock.listen(128)  # connections wait in the backlog until uvicorn accepts them
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app(), log_level="warning", lifespan="off", loop="asyncio", access_log=False
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="aiogovernor-local-serverless",
            daemon=True,
        )
        self._thread.start()
        first = next(iter(self._endpoints))
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        with httpx.Client(timeout=timeout_s) as http:
            # The socket already listens, so one request waits in the backlog until
            # uvicorn serves it; a retry covers only a slow first accept.
            for _ in range(3):
                try:
                    http.get(f"{self.base_url}/v2/{first}/health", headers=headers)
                except httpx.TransportError:
                    if not self._thread.is_alive():
                        break
                    continue
                self._endpoints[first].counts["requests"] -= 1  # readiness is not traffic
                return
        self.stop()
        raise RuntimeError("the local serverless server did not start")

    def stop(self) -> None:
        """Stop serving and join the thread."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = self._thread = None
        self._port = None

    def __enter__(self) -> LocalServerless:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
