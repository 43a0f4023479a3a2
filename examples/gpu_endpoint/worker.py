"""A serverless-shaped GPU worker: trains a small PyTorch MLP per job, several jobs at once.

It answers RunPod's API shape, the same as `aiogovernor.dispatch.testing.LocalServerless`:
``POST /v2/{endpoint}/run``, ``GET /v2/{endpoint}/status/{id}``,
``POST /v2/{endpoint}/cancel/{id}``, ``GET /v2/{endpoint}/health``, with a bearer token.
Jobs wait in a queue; ``--concurrency`` threads take them, each training one MLP
(784 → width → width → 10, AdamW, batches of 512 drawn from 8192 synthetic samples)
on its own CUDA stream — the way a serverless GPU handler with a concurrency setting
runs trials. Without CUDA it trains a tiny model for a few steps on the CPU, so that
the example runs anywhere (slowly, and says so).

A job's input: ``{"lr": float, "weight_decay": float}`` (optional: ``"width"``,
``"steps"``); its output: ``{"loss": the last training loss, "seconds": ...}``. A
handler error (``lr`` not positive, a NaN loss) ends the job ``FAILED`` with that
error, which `aiogovernor.dispatch` reads as the trial's failure, not the endpoint's.

Needs ``torch``, ``starlette`` and ``uvicorn``:

    python examples/gpu_endpoint/worker.py --port 8100 --concurrency 8
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import torch
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


@dataclass
class Job:
    id: str
    input: dict[str, Any]
    created: float
    status: str = "IN_QUEUE"
    output: Any = None
    error: str | None = None
    started: float | None = None
    finished: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "status": self.status}
        if self.output is not None:
            out["output"] = self.output
        if self.error is not None:
            out["error"] = self.error
        if self.started is not None:
            out["delayTime"] = round((self.started - self.created) * 1000)
            if self.finished is not None:
                out["executionTime"] = round((self.finished - self.started) * 1000)
        return out


class Trainer:
    """Trains one MLP per call; safe to call from several threads at once (one CUDA stream each)."""

    def __init__(self, *, width: int, steps: int, seed: int = 0) -> None:
        self.cuda = torch.cuda.is_available()
        self.device = torch.device("cuda" if self.cuda else "cpu")
        # Without a GPU: a tiny model and a few steps, so that the example still runs.
        self.width = width if self.cuda else min(width, 64)
        self.steps = steps if self.cuda else min(steps, 10)
        generator = torch.Generator().manual_seed(seed)
        samples = 8192 if self.cuda else 1024
        self.x = torch.randn(samples, 784, generator=generator).to(self.device)
        self.y = torch.randint(0, 10, (samples,), generator=generator).to(self.device)
        self._local = threading.local()

    def _stream(self) -> Any:
        if not self.cuda:
            return None
        stream = getattr(self._local, "stream", None)
        if stream is None:
            stream = self._local.stream = torch.cuda.Stream()
        return stream

    def train(self, payload: dict[str, Any], cancelled: threading.Event) -> dict[str, Any]:
        lr = float(payload.get("lr", 1e-3))
        if not lr > 0:
            raise ValueError(f"lr must be positive, got {lr}")
        width = int(payload.get("width", self.width)) if self.cuda else self.width
        steps = int(payload.get("steps", self.steps)) if self.cuda else self.steps
        start = time.perf_counter()
        stream = self._stream()
        context = torch.cuda.stream(stream) if stream is not None else _nothing()
        with context:
            model = torch.nn.Sequential(
                torch.nn.Linear(784, width),
                torch.nn.ReLU(),
                torch.nn.Linear(width, width),
                torch.nn.ReLU(),
                torch.nn.Linear(width, 10),
            ).to(self.device)
            optimizer = torch.optim.AdamW(
                model.parameters(), lr=lr, weight_decay=float(payload.get("weight_decay", 0.01))
            )
            loss = torch.tensor(float("nan"))
            for _ in range(steps):
                if cancelled.is_set():
                    raise RuntimeError("cancelled")
                index = torch.randint(0, self.x.shape[0], (512,), device=self.device)
                loss = torch.nn.functional.cross_entropy(model(self.x[index]), self.y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if stream is not None:
                stream.synchronize()
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"the loss diverged ({value}) at lr={lr}")
        return {"loss": value, "seconds": round(time.perf_counter() - start, 4), "device": self.device.type}


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class Worker:
    def __init__(self, trainer: Trainer, *, concurrency: int, api_key: str | None) -> None:
        self.trainer = trainer
        self.concurrency = concurrency
        self.api_key = api_key
        self.jobs: dict[str, Job] = {}
        self.ids = itertools.count(1)
        self.pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="trainer")
        self.running = 0
        self.lock = threading.Lock()

    def refuse(self, request: Request) -> JSONResponse | None:
        if self.api_key and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return JSONResponse({"error": "unauthorized"}, status_code=401)
        return None

    def execute(self, job: Job) -> None:
        if job.cancelled.is_set():
            return
        with self.lock:
            self.running += 1
        job.status, job.started = "IN_PROGRESS", time.monotonic()
        try:
            job.output = self.trainer.train(job.input, job.cancelled)
            job.status = "COMPLETED"
        except Exception as exc:
            if not job.cancelled.is_set():
                job.status, job.error = "FAILED", f"{type(exc).__name__}: {exc}"
        finally:
            job.finished = time.monotonic()
            with self.lock:
                self.running -= 1

    async def run(self, request: Request) -> JSONResponse:
        if (refusal := self.refuse(request)) is not None:
            return refusal
        body = await request.json()
        if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
            return JSONResponse({"error": "body must be {'input': {...}}"}, status_code=400)
        job = Job(id=f"job-{next(self.ids)}", input=body["input"], created=time.monotonic())
        self.jobs[job.id] = job
        self.pool.submit(self.execute, job)
        return JSONResponse({"id": job.id, "status": job.status})

    async def status(self, request: Request) -> JSONResponse:
        if (refusal := self.refuse(request)) is not None:
            return refusal
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "job not found"}, status_code=404)
        return JSONResponse(job.body())

    async def cancel(self, request: Request) -> JSONResponse:
        if (refusal := self.refuse(request)) is not None:
            return refusal
        job = self.jobs.get(request.path_params["job"])
        if job is None:
            return JSONResponse({"error": "job not found"}, status_code=404)
        if job.status in ("IN_QUEUE", "IN_PROGRESS"):
            job.cancelled.set()
            job.status = "CANCELLED"
        return JSONResponse(job.body())

    async def health(self, request: Request) -> JSONResponse:
        if (refusal := self.refuse(request)) is not None:
            return refusal
        queued = sum(1 for j in self.jobs.values() if j.status == "IN_QUEUE")
        # One worker process; its concurrency setting is how many jobs it runs at once.
        return JSONResponse(
            {
                "jobs": {"inQueue": queued, "inProgress": self.running},
                "workers": {"idle": 0 if self.running else 1, "running": 1 if self.running else 0},
            }
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v2/{endpoint}/run", self.run, methods=["POST"]),
                Route("/v2/{endpoint}/status/{job}", self.status, methods=["GET", "POST"]),
                Route("/v2/{endpoint}/cancel/{job}", self.cancel, methods=["POST"]),
                Route("/v2/{endpoint}/health", self.health, methods=["GET"]),
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description="A serverless-shaped GPU worker training small MLPs")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--concurrency", type=int, default=16, help="jobs trained at once")
    parser.add_argument("--width", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--api-key", default=os.environ.get("GPU_WORKER_API_KEY", "local-gpu-key"))
    args = parser.parse_args()
    trainer = Trainer(width=args.width, steps=args.steps)
    if not trainer.cuda:
        print("no CUDA device: training a tiny model on the CPU (the figures mean nothing for a GPU)")
    worker = Worker(trainer, concurrency=args.concurrency, api_key=args.api_key)
    uvicorn.run(worker.app(), host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
