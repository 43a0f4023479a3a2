"""`WorkerType`: how a kind of worker starts, how many may run, when they retire."""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from aiogovernor._governor import Governor
from aiogovernor._retry import Retry
from aiogovernor._validate import check_float, check_int
from aiogovernor.limits import Fixed

__all__ = ["WorkerType"]


class WorkerType:
    """One kind of worker process in a `WorkerPool`: how it starts and how many may run.

    A worker is either a Python callable run in a spawned process (``fn=``:
    a module-level function, sync or async, called with each job's payload;
    payloads and results are pickled), or a command line (``command=``)
    speaking line-delimited JSON on stdin/stdout: it prints
    ``{"ready": true}`` once started, then for each line
    ``{"id": ..., "payload": ...}`` it answers ``{"id": ..., "result": ...}``
    or ``{"id": ..., "error": "text"}``, and exits at the end of its stdin.

    How many workers run at once is the governor's limit (each running job
    holds one of its permits): by default a `aiogovernor.Fixed` limit of
    ``max_workers``; pass a governor for an adaptive policy or a
    `aiogovernor.ResourceCeiling` on host CPU and memory.

    Args:
        name: The type's name, used with `WorkerPool.submit`.
        fn: The Python callable (picklable: defined at module level).
        command: The command line of a JSON-lines worker.
        env: Extra environment variables for the worker processes.
        startup_timeout_s: How long a worker may take to be ready.
        governor: Decides how many jobs (so workers) run at once.
        max_workers: The fixed limit of the default governor; defaults to the CPU count.
        min_idle: Workers kept started and idle, waiting for work.
        idle_timeout_s: An idle worker beyond ``min_idle`` exits after this long.
        max_jobs_per_worker: A worker retires after this many jobs (None: never).
        max_worker_age_s: A worker retires when it is this old, after its current job (None: never).
        max_worker_memory_mb: A worker whose resident memory exceeds this many
            megabytes (10**6 bytes) after a job retires and is replaced; it is never
            stopped in the middle of a job (None: no ceiling). Read with psutil (the
            ``resources`` extra) or, on Linux, from ``/proc``.
        job_timeout_s: A job still running after this long fails with `JobTimeout`;
            its worker is stopped (SIGTERM, then SIGKILL) and replaced (None: no
            limit). Counted from when the job reaches its worker, not while it queues.
        resources: Values handed out one per worker (GPU indexes, say): a worker
            gets a free one in ``resource_env``; no more workers than values.
        resource_env: The environment variable that carries a worker's resource.
        retry: Reruns a job on another worker when its worker dies while running
            it, up to ``retry.attempts`` runs, with its backoff (waited out holding
            no permit; ``retry_on`` and the budget do not apply); None: the job fails.
        start_failures_to_stop: Start failures in a row that stop spawning for
            this type (the start breaker opens).
        start_retry_s: How long the breaker stays open before one more start is tried.
    """

    def __init__(
        self,
        name: str,
        *,
        fn: Callable[[Any], Any] | None = None,
        command: Sequence[str] | None = None,
        env: Mapping[str, str] | None = None,
        startup_timeout_s: float = 30.0,
        governor: Governor | None = None,
        max_workers: int | None = None,
        min_idle: int = 0,
        idle_timeout_s: float = 60.0,
        max_jobs_per_worker: int | None = None,
        max_worker_age_s: float | None = None,
        max_worker_memory_mb: float | None = None,
        job_timeout_s: float | None = None,
        resources: Sequence[str] | None = None,
        resource_env: str = "CUDA_VISIBLE_DEVICES",
        retry: Retry | None = None,
        start_failures_to_stop: int = 3,
        start_retry_s: float = 30.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if (fn is None) == (command is None):
            raise ValueError(f"worker type {name!r}: give exactly one of fn= (a callable) or command= (argv)")
        self.fn_pickle: bytes | None = None
        if fn is not None:
            if not callable(fn):
                raise TypeError(f"worker type {name!r}: fn must be callable, got {fn!r}")
            try:
                self.fn_pickle = pickle.dumps(fn, protocol=pickle.HIGHEST_PROTOCOL)
            except Exception as exc:
                raise TypeError(
                    f"worker type {name!r}: fn {fn!r} cannot be pickled for a spawned process "
                    f"({type(exc).__name__}: {exc}); use a function defined at module level "
                    "(not a lambda, a nested function or a bound method of an unpicklable object)"
                ) from None
        self.command: tuple[str, ...] | None = None
        if command is not None:
            if (
                isinstance(command, str | bytes)
                or not all(isinstance(a, str) for a in command)
                or not command
            ):
                raise TypeError(
                    f"worker type {name!r}: command must be a non-empty sequence of strings (argv), "
                    f"got {command!r}"
                )
            self.command = tuple(command)
        self.env: dict[str, str] = {}
        if env is not None:
            if not isinstance(env, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in env.items()
            ):
                raise TypeError(f"worker type {name!r}: env must map strings to strings, got {env!r}")
            self.env = dict(env)
        self.startup_timeout_s = check_float("startup_timeout_s", startup_timeout_s, low=0.0, low_open=True)
        if governor is not None and not isinstance(governor, Governor):
            raise TypeError(f"worker type {name!r}: governor must be a Governor or None, got {governor!r}")
        if max_workers is not None:
            check_int("max_workers", max_workers, low=1)
            if governor is not None:
                raise ValueError(
                    f"worker type {name!r}: give max_workers or governor, not both "
                    "(the governor's policy bounds the workers)"
                )
        self.min_idle = check_int("min_idle", min_idle, low=0)
        self.idle_timeout_s = check_float("idle_timeout_s", idle_timeout_s, low=0.0)
        self.max_jobs_per_worker = (
            None
            if max_jobs_per_worker is None
            else check_int("max_jobs_per_worker", max_jobs_per_worker, low=1)
        )
        self.max_worker_age_s = (
            None
            if max_worker_age_s is None
            else check_float("max_worker_age_s", max_worker_age_s, low=0.0, low_open=True)
        )
        self.max_worker_memory_mb = (
            None
            if max_worker_memory_mb is None
            else check_float("max_worker_memory_mb", max_worker_memory_mb, low=0.0, low_open=True)
        )
        if self.max_worker_memory_mb is not None:
            from ._memory import memory_reader

            memory_reader()  # a clear error now where no reader exists, not a ceiling silently ignored
        self.job_timeout_s = (
            None
            if job_timeout_s is None
            else check_float("job_timeout_s", job_timeout_s, low=0.0, low_open=True)
        )
        self.resources: tuple[str, ...] | None = None
        if resources is not None:
            if isinstance(resources, str | bytes) or not all(isinstance(r, str) for r in resources):
                raise TypeError(
                    f"worker type {name!r}: resources must be a sequence of strings, got {resources!r}"
                )
            if not resources or len(set(resources)) != len(resources):
                raise ValueError(
                    f"worker type {name!r}: resources must be distinct and not empty, got {resources!r}"
                )
            self.resources = tuple(resources)
        if not isinstance(resource_env, str) or not resource_env:
            raise ValueError(f"resource_env must be a non-empty string, got {resource_env!r}")
        self.resource_env = resource_env
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"worker type {name!r}: retry must be a Retry or None, got {retry!r}")
        self.retry = retry
        self.start_failures_to_stop = check_int("start_failures_to_stop", start_failures_to_stop, low=1)
        self.start_retry_s = check_float("start_retry_s", start_retry_s, low=0.0, low_open=True)
        self.name = name
        self.fn = fn
        self.max_workers = max_workers
        self._governor = governor

    def make_governor(self) -> Governor:
        """The governor given, or a `Fixed` one of ``max_workers`` (default: the CPU count)."""
        if self._governor is not None:
            return self._governor
        limit = self.max_workers or os.cpu_count() or 1
        if self.resources is not None:
            limit = min(limit, len(self.resources))
        # A fixed limit learns nothing: no state to keep.
        return Governor(f"workers:{self.name}", Fixed(limit), store=None)

    def __repr__(self) -> str:
        what = f"fn={self.fn!r}" if self.fn is not None else f"command={list(self.command or ())!r}"
        return f"WorkerType({self.name!r}, {what})"
