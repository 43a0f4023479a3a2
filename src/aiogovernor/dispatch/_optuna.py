"""`optimize_remote`: an Optuna study driven by asyncio tasks over an `EndpointPool`."""

from __future__ import annotations

import asyncio
import logging
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiogovernor._validate import check_int

from ._client import require_asyncio
from ._live import LiveView
from ._pool import DispatchResult, EndpointPool
from ._progress import StudyProgress
from ._states import AuthError, Fault, TrialFailed

if TYPE_CHECKING:
    import optuna

__all__ = ["ConcurrentTPEWarning", "RemoteStudyResult", "optimize_remote"]

logger = logging.getLogger("aiogovernor.dispatch")


class ConcurrentTPEWarning(UserWarning):
    """TPE without ``constant_liar`` under concurrency: parallel trials sample near-identical points."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoteStudyResult:
    """What `optimize_remote` did, as the study records it.

    The counts are the Optuna states of the trials this call asked, read
    from the study after each ``tell`` (a value Optuna refuses, such as NaN,
    is a ``FAIL`` there, and here).

    Attributes:
        completed: Trials the study holds as ``COMPLETE``.
        failed: Trials the study holds as ``FAIL`` (each with a ``fail_reason`` user attribute).
        retried: Extra runs made for failed trials under ``retries``.
        progress: The pool's progress at the end.
    """

    completed: int
    failed: int
    retried: int
    progress: StudyProgress


def _warn_if_tpe_without_liar(study: optuna.Study, concurrency: int) -> None:
    import optuna

    sampler = study.sampler
    if (
        concurrency > 1
        and isinstance(sampler, optuna.samplers.TPESampler)
        and not getattr(sampler, "_constant_liar", False)
    ):
        warnings.warn(
            "the study's TPESampler has constant_liar=False while trials run concurrently: "
            "parallel trials will sample near-identical points; use TPESampler(constant_liar=True)",
            ConcurrentTPEWarning,
            stacklevel=3,
        )


async def optimize_remote(
    study: optuna.Study,
    n_trials: int,
    build_input: Callable[[optuna.Trial], Any],
    read_value: Callable[[Any], float | Sequence[float]],
    *,
    pool: EndpointPool,
    retries: int = 0,
    max_in_flight: int | None = None,
    sync: bool = False,
    live: bool = False,
) -> RemoteStudyResult:
    """Run ``n_trials`` trials of an Optuna study on remote endpoints, from asyncio tasks.

    Ask-and-tell with no thread per trial: a trial is asked only when the
    pool has room for it (its endpoints' governors decide how many run at
    once, so a late ask gives the sampler the latest results), its input is
    built with ``build_input(trial)``, it runs through `EndpointPool.run`
    (failover, breakers, local fallback, remote cancellation on exit), and
    ``read_value(output)`` becomes the value told to the study. A trial that
    fails everywhere is told ``FAIL`` with its reason in the trial's
    ``fail_reason`` user attribute, after ``retries`` extra runs; a trial
    that fails by itself (`Fault.TRIAL`: its handler raised, or its value is
    NaN, infinite or missing) is told ``FAIL`` at once, never re-run. If the
    caller is cancelled, running trials are cancelled (their remote jobs
    too) and told ``FAIL``.

    When no endpoint accepts the API key (and so no trial can ever run), the
    study stops at once: the trials in flight are cancelled (their remote
    jobs too) and told ``FAIL`` with the refusal as their reason, and the
    `AuthError` is raised.

    Warns `ConcurrentTPEWarning` when the sampler is TPE without
    ``constant_liar`` and more than one trial may run at once.

    Args:
        study: The Optuna study.
        n_trials: Trials to run, >= 1.
        build_input: Makes a job's input from a trial (calls ``trial.suggest_*``).
        read_value: Reads the objective value(s) from a job's output.
        pool: Where trials run.
        retries: Extra runs of a trial whose run failed, >= 0.
        max_in_flight: A hard cap on trials at once, above the pool's capacity.
        sync: Submit through ``/runsync``.
        live: Show a rich live table of the pool (a `LiveView`: each endpoint's
            breaker, limit and jobs; trials running, queued, completed, failed;
            the best value; the ETA) while the study runs, stopped however the
            call ends. Shows nothing when rich (the ``rich`` extra) is not installed.

    Returns:
        Counts of completed, failed and retried trials, and the final progress.

    Raises:
        AuthError: No endpoint accepts the API key.
        RuntimeError: Not called from an asyncio event loop.
    """
    import optuna

    require_asyncio("optimize_remote")

    check_int("n_trials", n_trials, low=1)
    check_int("retries", retries, low=0)
    if max_in_flight is not None:
        check_int("max_in_flight", max_in_flight, low=1)
    if not isinstance(pool, EndpointPool):
        raise TypeError(f"pool must be an EndpointPool, got {pool!r}")
    if not callable(build_input) or not callable(read_value):
        raise TypeError("build_input and read_value must be callable")
    _warn_if_tpe_without_liar(study, min(max_in_flight or n_trials, n_trials, max(2, pool.capacity())))

    pool.progress.total = n_trials
    if len(study.directions) == 1:
        maximize = study.direction == optuna.study.StudyDirection.MAXIMIZE
        pool.progress.direction = "maximize" if maximize else "minimize"
    counts = {"completed": 0, "failed": 0, "retried": 0}
    n_objectives = len(study.directions)
    in_flight = 0
    finished = asyncio.Event()
    tasks: set[asyncio.Task[None]] = set()
    fatal: AuthError | None = None

    def record(frozen: optuna.trial.FrozenTrial) -> None:
        if frozen.state == optuna.trial.TrialState.COMPLETE:
            counts["completed"] += 1
        elif frozen.state == optuna.trial.TrialState.FAIL:
            counts["failed"] += 1

    async def one(trial: optuna.Trial) -> None:
        nonlocal in_flight, fatal
        try:
            payload = build_input(trial)
            result: DispatchResult | None = None
            error: BaseException | None = None
            for run in range(retries + 1):
                if run:
                    counts["retried"] += 1
                try:
                    result = await pool.run(payload, sync=sync)
                    break
                except AuthError:
                    raise
                except Exception as exc:
                    error = exc
                    if isinstance(exc, TrialFailed) and exc.fault is Fault.TRIAL:
                        break  # the trial's own failure: running it again fails the same way
            if result is None:
                raise RuntimeError(f"trial {trial.number} failed: {error}")
            value = read_value(result.output)
            trial.set_user_attr("endpoint", result.endpoint)
            trial.set_user_attr("attempts", result.attempts)
            problem = _unusable(value, n_objectives)
            if problem is not None:
                record(_tell_fail(study, trial, f"the objective value {problem}"))
                return
            record(study.tell(trial, value))
            if isinstance(value, int | float) and math.isfinite(value):
                pool.progress.observe(float(value))
        except asyncio.CancelledError:
            record(_tell_fail(study, trial, str(fatal) if fatal is not None else "cancelled"))
            raise
        except AuthError as exc:
            if fatal is None:
                fatal = exc
            record(_tell_fail(study, trial, str(exc)))
        except Exception as exc:
            record(_tell_fail(study, trial, f"{type(exc).__name__}: {exc}"))
        finally:
            in_flight -= 1
            finished.set()

    view = LiveView(pool) if live else None
    if view is not None:
        view.start()
    try:
        asked = 0
        while asked < n_trials and fatal is None:
            room = max(1, pool.capacity())
            if max_in_flight is not None:
                room = min(room, max_in_flight)
            if in_flight >= room:
                finished.clear()
                await finished.wait()
                continue
            trial = study.ask()
            asked += 1
            in_flight += 1
            task = asyncio.create_task(one(trial), name=f"aiogovernor-trial-{trial.number}")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        while fatal is None and any(not task.done() for task in tasks):
            finished.clear()
            await finished.wait()
    finally:
        try:
            for task in tasks:
                task.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            if view is not None:
                view.stop()  # after the trials: its last frame shows their end
    if fatal is not None:
        raise fatal
    return RemoteStudyResult(**counts, progress=pool.progress.snapshot())


def _unusable(value: object, n_objectives: int) -> str | None:
    """Why Optuna would refuse ``value`` as the trial's result (it would mark the trial FAIL), or None."""
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    if len(values) != n_objectives:
        return f"has {len(values)} value(s) for {n_objectives} objective(s): {value!r}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"is not a number: {v!r}"
        if not math.isfinite(v):
            return f"is {v!r}"
    return None


def _tell_fail(study: optuna.Study, trial: optuna.Trial, reason: str) -> optuna.trial.FrozenTrial:
    import optuna

    logger.info("trial %d failed: %s", trial.number, reason)
    trial.set_user_attr("fail_reason", reason)
    return study.tell(trial, state=optuna.trial.TrialState.FAIL)
