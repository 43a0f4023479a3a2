"""A real Optuna study against two local serverless endpoints, one of them flaky.

The endpoints are served by `aiogovernor.dispatch.testing.LocalServerless`
(starlette + uvicorn, RunPod's API shape); point the `JobClient`s at
``https://api.runpod.ai`` with your endpoint ids and ``RUNPOD_API_KEY`` to run
the same code against RunPod.

With rich installed (the ``rich`` extra), ``live=True`` shows a live table of
the endpoints (breaker, limit, jobs) and the trials (running, queued, done,
best value, ETA); without it, the ``on_progress`` callback prints a line
every ten trials instead.

    .venv/bin/python examples/optuna_remote.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import tempfile
from typing import Any

import optuna

from aiogovernor.dispatch import EndpointPool, JobClient, StudyProgress, optimize_remote
from aiogovernor.dispatch.testing import FakeEndpoint, LocalServerless


def train(payload: Any) -> Any:
    """What the remote worker computes: a stand-in for a training run's validation loss."""
    lr, depth = payload["lr"], payload["depth"]
    return {"loss": (lr - 0.01) ** 2 * 1e4 + (depth - 6) ** 2 / 10}


def build_input(trial: optuna.Trial) -> Any:
    return {"lr": trial.suggest_float("lr", 1e-4, 1e-1, log=True), "depth": trial.suggest_int("depth", 2, 12)}


async def main(server: LocalServerless) -> None:
    shown = 0

    def show(p: StudyProgress) -> None:
        nonlocal shown
        if p.finished >= shown + 10:
            shown = p.finished
            print(p.describe())

    clients = [
        JobClient(name, api_key=server.api_key, base_url=server.base_url, poll_interval_s=0.02)
        for name in ("gpu-steady", "gpu-flaky")
    ]
    live = importlib.util.find_spec("rich") is not None
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    async with EndpointPool(clients, on_progress=None if live else show, reset_timeout_s=2.0) as pool:
        result = await optimize_remote(study, 60, build_input, lambda out: out["loss"], pool=pool, live=live)
    print(f"\n{result.completed} complete, {result.failed} failed")
    print(f"best {study.best_value:.4g} at {study.best_params}")
    for client in clients:
        print(client.endpoint_id, client.stats(), f"limit={client.governor.limit}")
    print("jobs left running on the endpoints:", server.live_jobs())


if __name__ == "__main__":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    endpoints = {
        "gpu-steady": FakeEndpoint(workers=3, job_duration_s=0.1, cold_start_s=0.3, compute=train),
        "gpu-flaky": FakeEndpoint(workers=3, job_duration_s=0.1, failure_rate=0.3, seed=1, compute=train),
    }
    # What the endpoints' governors learn goes to a temporary folder that is removed at the end,
    # not into your home: a real study keeps it (the default store) to start the next one warm.
    with tempfile.TemporaryDirectory() as state_dir, LocalServerless(endpoints) as srv:
        os.environ["AIOGOVERNOR_STATE_DIR"] = state_dir
        print(f"learned state in {state_dir} (removed at the end)")
        asyncio.run(main(srv))
