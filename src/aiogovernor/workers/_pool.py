"""`WorkerPool`: worker processes spawned on backlog, reaped when idle, recycled without stranding a job."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
import os
import pickle
import random
from collections import deque
from collections.abc import AsyncIterable, Callable, Iterable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from aiogovernor._attempt import Attempts
from aiogovernor._clock import loop_time
from aiogovernor._governor import Governor, Permit, held_permit
from aiogovernor._map import governed_map
from aiogovernor._progress import ProgressCallback
from aiogovernor._retry import Retry
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_float

from ._errors import JobCancelled, JobFailed, JobTimeout, WorkerDied, WorkerStartError
from ._process import Channel, Reply, StartFailed, encode_job
from ._status import Job, JobState, TypeStatus, WorkerEvent, WorkerListener, WorkerStatus
from ._types import WorkerType

if TYPE_CHECKING:
    import anyio.abc

    from aiogovernor._events import Decision

__all__ = ["WorkerPool"]

logger = logging.getLogger("aiogovernor.workers")

STARTING, IDLE, BUSY, RETIRING, GONE = "starting", "idle", "busy", "retiring", "gone"


class _Reply:
    """Where a worker's answer to one job lands; ``died`` when the worker exited instead."""

    __slots__ = ("died", "event", "key", "reply")

    def __init__(self, key: int) -> None:
        import anyio

        self.key = key
        self.event = anyio.Event()
        self.reply: Reply | None = None
        self.died = False


class _Worker:
    __slots__ = (
        "channel",
        "idle_since",
        "job",
        "jobs_done",
        "jobs_started",
        "resource",
        "retire_after",
        "returncode",
        "slot",
        "started_at",
        "state",
    )

    def __init__(self, channel: Channel, started_at: float, resource: str | None) -> None:
        self.channel = channel
        self.state = STARTING
        self.started_at = started_at
        self.idle_since = started_at
        self.jobs_done = 0
        self.jobs_started = 0
        self.job: Job | None = None
        self.slot: _Reply | None = None
        self.resource = resource
        self.retire_after: str | None = None  # set when its current job is its last
        self.returncode: int | None = None

    @property
    def pid(self) -> int | None:
        return self.channel.pid or None


class _Waiter:
    """A job that holds a permit and waits for a worker."""

    __slots__ = ("error", "event", "worker")

    def __init__(self) -> None:
        import anyio

        self.event = anyio.Event()
        self.worker: _Worker | None = None
        self.error: BaseException | None = None


class _Type:
    """A worker type's live state in one pool."""

    def __init__(self, spec: WorkerType) -> None:
        self.spec = spec
        self.name = spec.name
        self.gov: Governor = spec.make_governor()
        self.workers: list[_Worker] = []
        self.idle: list[_Worker] = []  # oldest idle first: new work takes the newest, reaping the oldest
        self.waiters: deque[_Waiter] = deque()
        self.free_resources: list[str] | None = list(spec.resources) if spec.resources is not None else None
        self.queued = 0
        self.jobs_done = 0
        self.jobs_failed = 0
        self.spawned = 0
        self.spawn_failures = 0
        self.failures_in_a_row = 0
        self.stopped_until = -math.inf  # the start breaker: no spawn before this time
        self.last_start_error: str | None = None
        self.listener: Any = None
        self.memory: Callable[[int], int | None] | None = None  # reads a worker's resident memory
        self.rerun = _rerun_policy(spec.retry)

    def count(self, state: str) -> int:
        return sum(1 for w in self.workers if w.state == state)

    def live(self) -> int:
        """Workers that will take more work: starting, idle, or busy with a job that is not their last."""
        return sum(
            1
            for w in self.workers
            if w.state in (STARTING, IDLE) or (w.state == BUSY and w.retire_after is None)
        )


def _rerun_policy(retry: Retry | None) -> Retry | None:
    """The type's ``retry`` as the pool applies it: up to ``retry.attempts`` runs, with its backoff.

    A death is rerun whatever the governor's classifier calls it (`_Reruns.retryable`
    says which failures are), and reruns spend no retry budget: the pool counts the
    runs a job gets, not a share of all jobs.
    """
    if retry is None:
        return None
    return dataclasses.replace(retry, retry_on=frozenset(Outcome), budget_ratio=None)


class _Reruns(Attempts[Any]):
    """One job's runs through the one attempt loop: a job whose worker died runs again.

    Each run holds a permit of the type's governor and is its own sample. A
    rerun gives its permit back before it waits out the backoff, then queues
    for one again, in turn: a job waiting to run again holds no worker's place.
    Only `WorkerDied` is rerun; a job that failed or ran past its time is not.

    A job from `WorkerPool.map` starts on the permit the map's worker holds for
    it (``held``): when it succeeds there, that permit goes back with the map's
    block, as every mapped call's does; when it must run again, the attempt
    loop gives it back before the wait like any other.
    """

    __slots__ = ("data", "died", "held", "job", "key", "pool", "queued", "timeout_s", "ts")

    def __init__(self, pool: WorkerPool, ts: _Type, job: Job, timeout_s: float | None) -> None:
        super().__init__(retry=ts.rerun, rng=pool._rng)
        self.pool = pool
        self.ts = ts
        self.job = job
        self.timeout_s = timeout_s
        self.key = next(pool._keys)
        self.data: bytes | None = None
        self.died: WorkerDied | None = None
        self.held: Permit | None = None
        self.queued = False

    def queue(self) -> None:
        """Count the job as queued (for a permit or a worker) in its type's status."""
        if not self.queued:
            self.queued = True
            self.ts.queued += 1

    def unqueue(self) -> None:
        if self.queued:
            self.queued = False
            self.ts.queued -= 1

    async def call(self, permit: Permit, attempt: int) -> Any:
        """One run on a worker, under ``permit``."""
        self.unqueue()  # waiting for a worker now counts in the type's waiters
        ts, job = self.ts, self.job
        if self.data is None:
            # Under the first permit, as ever: a payload that cannot be sent fails its job here.
            self.data = encode_job(ts.spec.fn_pickle is not None, self.key, job.payload)
        try:
            return await self.pool._on_worker(ts, job, self.key, self.data, self.timeout_s)
        except WorkerDied as exc:
            self.died = exc
            raise

    def retryable(self, result: Any) -> bool:
        return isinstance(result, WorkerDied)

    async def acquire(self, governor: Governor) -> Permit:
        self.queue()
        return await governor.acquire()

    def keep(self, value: Any, permit: Any, outcome: Outcome) -> None:
        if permit is not self.held:
            permit.release(outcome)
        # else: the map's permit, given back (``ok``) when the map's block ends.

    async def wait(self, delay_s: float) -> None:
        logger.warning("%s; running it again (attempt %d)", self.died, self.job.attempts + 1)
        self.job.state = JobState.QUEUED
        await super().wait(delay_s)


def _job_timeout(ts: _Type, job_timeout_s: float | None) -> float | None:
    if job_timeout_s is None:
        return ts.spec.job_timeout_s
    return check_float("job_timeout_s", job_timeout_s, low=0.0, low_open=True)


class WorkerPool:
    """Local worker processes of one or more `WorkerType`, started when work arrives.

    - **Spawn on backlog**: a job takes a permit from its type's governor,
      then an idle worker; when there is none, a worker is started, as long as
      the type has fewer workers than the governor's limit. Nothing starts
      before work arrives, except ``min_idle`` workers.
    - **Idle reaper**: a timer retires idle workers beyond ``min_idle`` after
      ``idle_timeout_s``, without waiting for the next call.
    - **Recycling**: a worker's last job (``max_jobs_per_worker``,
      ``max_worker_age_s``) marks it retiring when the job starts; its
      replacement is started then, if work waits, and the retiring worker
      takes no other job. Jobs wait in their type's queue, never on a
      worker, so none is ever left behind one that leaves.
    - **Shrink never pre-empts**: when the limit falls, idle workers retire
      first; busy ones finish their job.
    - **A worker that dies** fails its job with `WorkerDied` (or reruns it,
      per the type's ``retry``); it is replaced when work waits. A start
      that fails or times out is reported; ``start_failures_to_stop`` in a
      row stop spawning for the type until ``start_retry_s`` has passed, and
      the jobs no worker can take fail with `WorkerStartError`.
    - **Drain and close**: leaving ``async with`` normally waits for every
      job; leaving on an exception, or ``aclose(cancel=True)``, cancels the
      jobs (each one ends with `JobCancelled` and the reason), and stops the
      workers: the end of their stdin, then SIGTERM, then SIGKILL, each after
      ``grace_s``. Every worker process is waited for: no zombie, no orphan.

    Use it as an async context manager:

    ```python
    async with WorkerPool([WorkerType("resize", fn=resize)]) as pool:
        thumbnail = await pool.run("resize", path)
    ```

    Args:
        types: The worker types (names distinct).
        grace_s: How long a stopping worker gets before SIGTERM, then before SIGKILL.
        history_size: How many events `events` keeps.
        seed: Seeds the jitter of retries' backoff.
    """

    def __init__(
        self,
        types: WorkerType | Sequence[WorkerType],
        *,
        grace_s: float = 5.0,
        history_size: int = 200,
        seed: int | None = None,
    ) -> None:
        specs = [types] if isinstance(types, WorkerType) else list(types)
        if not specs:
            raise ValueError("types must name at least one WorkerType")
        for spec in specs:
            if not isinstance(spec, WorkerType):
                raise TypeError(f"types must be WorkerType instances, got {spec!r}")
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"worker type names must be distinct, got {names!r}")
        self._grace_s = check_float("grace_s", grace_s, low=0.0)
        if isinstance(history_size, bool) or not isinstance(history_size, int) or history_size < 1:
            raise ValueError(f"history_size must be an integer >= 1, got {history_size!r}")
        self._types = {s.name: _Type(s) for s in specs}
        self._events: deque[WorkerEvent] = deque(maxlen=history_size)
        self._listeners: list[WorkerListener] = []
        self._rng = random.Random(seed)
        self._job_ids = itertools.count(1)
        self._keys = itertools.count(1)
        self._active: set[Job] = set()
        self._tg: anyio.abc.TaskGroup | None = None
        self._wake: Any = None
        self._idle_jobs: Any = None
        self._entered = False
        self._closing = False  # no new job
        self._stopping = False  # no new worker
        self._closed = False

    # -- lifetime -------------------------------------------------------

    async def __aenter__(self) -> WorkerPool:
        import anyio

        if self._entered:
            raise RuntimeError("a WorkerPool can be entered once")
        self._entered = True
        self._wake = anyio.Event()
        self._idle_jobs = anyio.Event()
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        for ts in self._types.values():
            ts.listener = self._make_listener(ts)
            ts.gov.add_listener(ts.listener)
            self._reconcile(ts)
        self._tg.start_soon(self._reaper)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._tg is not None
        try:
            await self.aclose(cancel=exc is not None)
        finally:
            self._tg.cancel_scope.cancel()
            await self._tg.__aexit__(None, None, None)

    async def aclose(self, *, cancel: bool = False) -> None:
        """Stop the pool: wait for every job (or cancel them), then stop every worker.

        Args:
            cancel: Cancel queued and running jobs instead of waiting for
                them; each ends with `JobCancelled` and the reason, and
                workers get SIGTERM at once (SIGKILL after ``grace_s``).
        """

        if self._closed:
            return
        self._check_entered()
        self._closing = True
        try:
            if cancel:
                for job in list(self._active):
                    job.cancel("the pool was closed with cancel=True")
            if self._active:
                await self._idle_jobs.wait()
        except BaseException:
            # Cancelled while waiting for the jobs: cancel them, and stop the workers all the same.
            for job in list(self._active):
                job.cancel("the pool's task was cancelled while the pool drained")
            cancel = True
            raise
        finally:
            await self._stop_all(cancel)

    async def _stop_all(self, cancel: bool) -> None:
        import anyio

        self._stopping = True
        self._closed = True
        # Shielded: the workers are stopped and waited for even if this task is cancelled.
        with anyio.CancelScope(shield=True):
            for ts in self._types.values():
                ts.gov.remove_listener(ts.listener)
                for waiter in ts.waiters:
                    waiter.error = JobCancelled(0, "the pool was closed")
                    waiter.event.set()
                ts.waiters.clear()
            async with anyio.create_task_group() as tg:
                for ts in self._types.values():
                    for w in list(ts.workers):
                        tg.start_soon(self._stop_process, w, cancel)

    def _is_stopping(self) -> bool:
        # A method, not the attribute: checkers would keep a value read before an await.
        return self._stopping

    def _check_entered(self) -> None:
        if not self._entered or self._tg is None:
            raise RuntimeError("use the pool inside `async with WorkerPool(...) as pool:`")

    def _check_open(self) -> None:
        self._check_entered()
        if self._closing:
            raise RuntimeError("the pool is closed (or closing): it takes no new jobs")

    # -- jobs -----------------------------------------------------------

    def _type(self, worker_type: str) -> _Type:
        try:
            return self._types[worker_type]
        except (KeyError, TypeError):
            raise ValueError(
                f"unknown worker type {worker_type!r}; this pool has {sorted(self._types)!r}"
            ) from None

    def _new_job(self, ts: _Type, payload: Any) -> Job:
        self._check_open()
        return Job(next(self._job_ids), ts.name, payload)

    async def submit(self, worker_type: str, payload: Any, *, job_timeout_s: float | None = None) -> Job:
        """Queue one job and return its `Job` at once; ``await job.result()`` for the result.

        Args:
            worker_type: The type that runs it.
            payload: What its callable (or command) gets.
            job_timeout_s: This job's time limit, instead of the type's ``job_timeout_s``.

        Raises:
            ValueError: For an unknown worker type.
            RuntimeError: When the pool is not entered or is closing.
        """
        ts = self._type(worker_type)
        timeout_s = _job_timeout(ts, job_timeout_s)
        job = self._new_job(ts, payload)
        assert self._tg is not None
        self._active.add(job)
        self._tg.start_soon(self._job_task, ts, job, timeout_s)
        return job

    async def run(self, worker_type: str, payload: Any, *, job_timeout_s: float | None = None) -> Any:
        """Run one job and return its result (or raise its failure: `JobFailed`, `WorkerDied`, ...).

        ``job_timeout_s`` replaces the type's time limit for this job.
        """
        ts = self._type(worker_type)
        timeout_s = _job_timeout(ts, job_timeout_s)
        job = self._new_job(ts, payload)
        self._active.add(job)
        return await self._execute(ts, job, take_permit=True, timeout_s=timeout_s)

    async def map(
        self,
        worker_type: str,
        payloads: Iterable[Any] | AsyncIterable[Any],
        *,
        return_exceptions: bool = False,
        progress: ProgressCallback | bool | None = None,
    ) -> list[Any]:
        """Run one job per payload; results in input order, like `aiogovernor.governed_map`.

        At most the governor's limit of payloads are pulled at once, so an
        endless iterable is fine. A failure stops the map and is raised
        (the jobs already running end first), unless ``return_exceptions``.

        Args:
            worker_type: The type that runs every payload.
            payloads: An iterable or async iterable of payloads.
            return_exceptions: Put each failure in the results instead of raising.
            progress: A `aiogovernor.Progress` callback, or True for a rich
                progress bar (the ``rich`` extra; nothing without it).
        """
        ts = self._type(worker_type)
        self._check_open()

        async def one(payload: Any) -> Any:
            job = self._new_job(ts, payload)
            self._active.add(job)
            return await self._execute(ts, job, take_permit=False, timeout_s=ts.spec.job_timeout_s)

        # governed_map holds the type's permit around each call: a job's first run takes it (`_Reruns`).
        return await governed_map(
            one, payloads, governor=ts.gov, return_exceptions=return_exceptions, progress=progress
        )

    async def _job_task(self, ts: _Type, job: Job, timeout_s: float | None) -> None:
        # A failure is recorded on the job, and raised by `job.result()`.
        with contextlib.suppress(Exception):
            await self._execute(ts, job, take_permit=True, timeout_s=timeout_s)

    async def _execute(self, ts: _Type, job: Job, *, take_permit: bool, timeout_s: float | None) -> Any:
        """Run ``job`` through `_Reruns`, on a permit of its own or (``take_permit`` False) the map's."""
        reruns = _Reruns(self, ts, job, timeout_s)
        reruns.queue()
        try:
            with job._scope:
                # A map's worker holds a permit for this job already (governed_map hands the
                # function none): its first attempt runs on it, and gives it back to wait out a rerun.
                reruns.held = None if take_permit else held_permit(ts.gov)
                # Taking a second permit inside the map's block could wait for ever at a limit of 1.
                assert take_permit or reruns.held is not None, "a map's call runs in its permit block"
                value = await reruns.run(ts.gov, reruns.call, permit=reruns.held)
                job._finish(value)
                ts.jobs_done += 1
                return value
            # Only Job.cancel cancels this scope.
            raise JobCancelled(job.id, job._cancel_reason or "cancelled")
        except BaseException as exc:
            if not job.done():
                if isinstance(exc, Exception):
                    job._fail(exc, JobState.CANCELLED if isinstance(exc, JobCancelled) else JobState.FAILED)
                else:
                    job._fail(JobCancelled(job.id, "its caller was cancelled"), JobState.CANCELLED)
                ts.jobs_failed += 1
            raise
        finally:
            reruns.unqueue()
            self._active.discard(job)
            if not self._active and self._closing:
                self._idle_jobs.set()

    async def _on_worker(self, ts: _Type, job: Job, key: int, data: bytes, timeout_s: float | None) -> Any:
        """Run the job once on a worker (its permit is held); `WorkerDied` when the worker exits instead."""
        import anyio

        w = await self._take_worker(ts)
        job.attempts += 1
        job.state = JobState.RUNNING
        job.pid = w.pid
        slot = _Reply(key)
        w.slot, w.job = slot, job
        w.jobs_started += 1
        self._mark_last_job(ts, w)
        try:
            # A worker gone before the send: its task sees the exit and says so below.
            with contextlib.suppress(EOFError):
                await w.channel.send(data)
            with anyio.move_on_after(math.inf if timeout_s is None else timeout_s):
                await slot.event.wait()
        except BaseException:
            w.slot, w.job = None, None
            if slot.reply is None and not slot.died:
                # The job was cancelled while its worker runs it: only stopping the worker stops the job.
                self._retire(ts, w, "stop", "its job was cancelled", terminate=True)
            raise
        w.slot, w.job = None, None
        if not slot.event.is_set():
            # Over its time: only stopping the worker stops the job; a new one replaces it.
            assert timeout_s is not None
            why = f"job {job.id} ran past job_timeout_s={timeout_s:g}"
            self._retire(ts, w, "timeout", why, terminate=True)
            self._reconcile(ts)
            raise JobTimeout(job.id, ts.name, w.channel.pid, timeout_s)
        if slot.died:
            raise WorkerDied(job.id, ts.name, w.channel.pid, w.returncode)
        w.jobs_done += 1
        self._check_memory(ts, w)
        self._worker_free(ts, w)
        assert slot.reply is not None
        _, ok, value = slot.reply
        if ok:
            return value
        blob, summary, remote_tb = value
        failure = JobFailed(job.id, ts.name, summary, remote_tb)
        cause = None
        if blob is not None:
            try:
                cause = pickle.loads(blob)
            except Exception:
                cause = None
        raise failure from cause

    def _mark_last_job(self, ts: _Type, w: _Worker) -> None:
        spec = ts.spec
        if spec.max_jobs_per_worker is not None and w.jobs_started >= spec.max_jobs_per_worker:
            w.retire_after = f"{w.jobs_started} jobs done (max_jobs_per_worker={spec.max_jobs_per_worker})"
        elif spec.max_worker_age_s is not None and loop_time() - w.started_at >= spec.max_worker_age_s:
            w.retire_after = f"older than max_worker_age_s={spec.max_worker_age_s:g}"
        if w.retire_after is not None:
            # Its replacement starts now, while it runs its last job, if work waits for it.
            self._reconcile(ts)

    def _check_memory(self, ts: _Type, w: _Worker) -> None:
        """Between jobs, retire a worker over ``max_worker_memory_mb`` (never one in the middle of a job)."""
        ceiling = ts.spec.max_worker_memory_mb
        if ceiling is None or w.retire_after is not None or w.pid is None:
            return
        if ts.memory is None:
            from ._memory import memory_reader

            ts.memory = memory_reader()
        rss = ts.memory(w.pid)
        if rss is not None and rss > ceiling * 1e6:
            w.retire_after = f"{rss / 1e6:.1f} MB resident, over max_worker_memory_mb={ceiling:g}"

    async def _take_worker(self, ts: _Type) -> _Worker:
        if ts.idle and not ts.waiters:
            w = ts.idle.pop()  # the most recently used: the oldest idle ones get reaped
            w.state = BUSY
            return w
        waiter = _Waiter()
        ts.waiters.append(waiter)
        self._reconcile(ts)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.worker is not None:
                self._worker_free(ts, waiter.worker)  # handed over as we were cancelled: give it back
            elif waiter in ts.waiters:
                ts.waiters.remove(waiter)
            raise
        if waiter.error is not None:
            raise waiter.error
        assert waiter.worker is not None
        return waiter.worker

    def _worker_free(self, ts: _Type, w: _Worker) -> None:
        """A worker finished a job (or just started): hand it to the next job, park it, or retire it."""
        if w.state in (RETIRING, GONE):
            return
        if self._stopping:
            w.state = IDLE
            return
        if w.retire_after is not None:
            self._retire(ts, w, "recycle", w.retire_after)
        elif ts.live() > ts.gov.limit:
            self._retire(ts, w, "shrink", f"the limit fell to {ts.gov.limit}")
        elif ts.waiters:
            waiter = ts.waiters.popleft()
            waiter.worker = w
            w.state = BUSY
            waiter.event.set()
        else:
            w.state = IDLE
            w.idle_since = loop_time()
            ts.idle.append(w)
            self._poke()
        self._reconcile(ts)

    # -- workers --------------------------------------------------------

    def _reconcile(self, ts: _Type) -> None:
        """Start workers for jobs that wait (and for ``min_idle``), retire idle ones beyond the limit."""
        if self._stopping:
            return
        limit = ts.gov.limit
        live = ts.live()
        excess = live - limit
        while excess > 0 and ts.idle:
            self._retire(ts, ts.idle[0], "shrink", f"the limit fell to {limit}")
            excess -= 1
        starting = ts.count(STARTING)
        # A worker running its last job gets its replacement now, before it leaves.
        last_jobs = sum(1 for w in ts.workers if w.state == BUSY and w.retire_after is not None)
        want = len(ts.waiters) + last_jobs - starting
        if not self._closing:
            spare = len(ts.idle) + max(0, starting - len(ts.waiters))
            want = max(want, ts.spec.min_idle - spare)
        n = min(want, limit - ts.live())
        if ts.free_resources is not None:
            n = min(n, len(ts.free_resources))
        if n > 0:
            now = loop_time()
            if ts.failures_in_a_row >= ts.spec.start_failures_to_stop:
                # The breaker: no spawn until start_retry_s has passed, then one at a time.
                n = 1 if now >= ts.stopped_until and starting == 0 else 0
            for _ in range(n):
                self._spawn(ts, now)
        if ts.waiters and not ts.workers and ts.failures_in_a_row >= ts.spec.start_failures_to_stop:
            error = WorkerStartError(
                f"worker type {ts.name!r}: {ts.failures_in_a_row} starts failed in a row; "
                f"spawning stopped for {ts.spec.start_retry_s:g}s; last error: {ts.last_start_error}"
            )
            while ts.waiters:
                waiter = ts.waiters.popleft()
                waiter.error = error
                waiter.event.set()

    def _spawn(self, ts: _Type, now: float) -> None:
        assert self._tg is not None
        spec = ts.spec
        env = dict(os.environ)
        env.update(spec.env)
        resource = None
        if ts.free_resources is not None:
            resource = ts.free_resources.pop(0)
            env[spec.resource_env] = resource
        w = _Worker(Channel(fn_pickle=spec.fn_pickle, command=spec.command, env=env), now, resource)
        ts.workers.append(w)
        ts.spawned += 1
        reason = f"{len(ts.waiters)} job(s) waiting, {ts.live() - 1} worker(s), limit {ts.gov.limit}"
        if resource is not None:
            reason += f", {spec.resource_env}={resource}"
        self._emit("spawn", ts, None, reason)
        self._tg.start_soon(self._worker_main, ts, w)

    async def _worker_main(self, ts: _Type, w: _Worker) -> None:
        import anyio

        if self._is_stopping():  # the pool closed before this task ran: nothing was started
            self._gone(ts, w)
            return
        try:
            with anyio.fail_after(ts.spec.startup_timeout_s):
                await w.channel.start()
        except BaseException as exc:
            with anyio.CancelScope(shield=True):
                await self._stop_process(w, True)
            if self._is_stopping() and isinstance(exc, Exception):
                # The pool stopped it while it started (closing ends a starting worker's
                # input): not a failed start, and no reason to open the breaker.
                from ._errors import describe_exit

                returncode = w.channel.proc.returncode if w.channel.proc is not None else None
                why = f"stopped while starting, as the pool closed: {describe_exit(returncode)}"
                self._emit("exit", ts, w.pid, why)
                self._gone(ts, w)
                return
            if isinstance(exc, TimeoutError):
                why = f"not ready within startup_timeout_s={ts.spec.startup_timeout_s:g}"
            elif isinstance(exc, StartFailed):
                why = str(exc)
            elif isinstance(exc, Exception):
                why = f"{type(exc).__name__}: {exc}"
            else:
                self._gone(ts, w)
                raise
            self._start_failed(ts, w, why)
            return
        ts.failures_in_a_row = 0
        self._emit("ready", ts, w.pid, f"started in {loop_time() - w.started_at:.3f}s")
        if self._stopping:
            await self._stop_process(w, True)
        else:
            self._worker_free(ts, w)
        try:
            while True:
                key, ok, value = await w.channel.receive()
                slot = w.slot
                if slot is not None and slot.key == key:
                    slot.reply = (key, ok, value)
                    slot.event.set()
        except EOFError:
            pass
        proc = w.channel.proc
        assert proc is not None
        with anyio.CancelScope(shield=True):
            with anyio.move_on_after(self._grace_s):
                await proc.wait()
            if proc.returncode is None:  # it closed its stdout but lives on
                await self._stop_process(w, True)
            w.returncode = proc.returncode
            await w.channel.close()
        expected = w.state == RETIRING or self._stopping
        from ._errors import describe_exit

        if not expected:
            self._emit("died", ts, w.pid, describe_exit(w.returncode), level=logging.WARNING)
        else:
            self._emit("exit", ts, w.pid, describe_exit(w.returncode))
        self._gone(ts, w)
        slot = w.slot
        if slot is not None and slot.reply is None:
            slot.died = True
            slot.event.set()
        self._reconcile(ts)

    def _start_failed(self, ts: _Type, w: _Worker, why: str) -> None:
        self._gone(ts, w)
        ts.spawn_failures += 1
        ts.failures_in_a_row += 1
        ts.last_start_error = why
        self._emit("start_failed", ts, w.pid, why, level=logging.WARNING)
        if ts.failures_in_a_row >= ts.spec.start_failures_to_stop:
            ts.stopped_until = loop_time() + ts.spec.start_retry_s
            self._emit(
                "spawning_stopped",
                ts,
                None,
                f"{ts.failures_in_a_row} starts failed in a row; next try in {ts.spec.start_retry_s:g}s",
                level=logging.WARNING,
            )
        self._reconcile(ts)

    def _gone(self, ts: _Type, w: _Worker) -> None:
        if w.state == GONE:
            return
        if w in ts.idle:
            ts.idle.remove(w)
        if w in ts.workers:
            ts.workers.remove(w)
        w.state = GONE
        if w.resource is not None and ts.free_resources is not None:
            ts.free_resources.append(w.resource)

    def _retire(self, ts: _Type, w: _Worker, kind: str, reason: str, *, terminate: bool = False) -> None:
        """Stop a worker that has no job (or whose job is abandoned); it takes nothing more."""
        if w.state in (RETIRING, GONE):
            return
        if w in ts.idle:
            ts.idle.remove(w)
        w.state = RETIRING
        self._emit(kind, ts, w.pid, reason)
        assert self._tg is not None
        self._tg.start_soon(self._stop_process, w, terminate)

    async def _stop_process(self, w: _Worker, terminate: bool) -> None:
        """End of stdin (unless ``terminate``), SIGTERM, SIGKILL, each after ``grace_s``; then wait."""
        import anyio

        proc = w.channel.proc
        if proc is None:
            return
        with anyio.CancelScope(shield=True):
            if not terminate and proc.returncode is None:
                await w.channel.close_input()
                with anyio.move_on_after(self._grace_s):
                    await proc.wait()
            if proc.returncode is None:
                w.channel.terminate()
                with anyio.move_on_after(self._grace_s):
                    await proc.wait()
            if proc.returncode is None:
                w.channel.kill()
            await proc.wait()
            await w.channel.close()

    async def _reaper(self) -> None:
        """Retire idle workers beyond ``min_idle`` after ``idle_timeout_s``, and idle ones past their age."""
        import anyio

        while True:
            now = loop_time()
            next_at = math.inf
            for ts in self._types.values():
                spec = ts.spec
                if spec.max_worker_age_s is not None:
                    for w in list(ts.idle):
                        due = w.started_at + spec.max_worker_age_s
                        if due <= now:
                            self._retire(
                                ts, w, "recycle", f"older than max_worker_age_s={spec.max_worker_age_s:g}"
                            )
                        else:
                            next_at = min(next_at, due)
                # Keep the newest min_idle; the oldest idle ones go first.
                for w in ts.idle[: max(0, len(ts.idle) - spec.min_idle)]:
                    due = w.idle_since + spec.idle_timeout_s
                    if due <= now:
                        self._retire(ts, w, "reap", f"idle for {now - w.idle_since:.3f}s")
                    else:
                        next_at = min(next_at, due)
                self._reconcile(ts)
            with anyio.move_on_after(next_at - now):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = anyio.Event()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _make_listener(self, ts: _Type) -> Any:
        def on_decision(decision: Decision) -> None:
            if decision.new_limit < decision.old_limit:
                self._reconcile(ts)

        return on_decision

    # -- what it says ---------------------------------------------------

    def _emit(self, kind: str, ts: _Type, pid: int | None, reason: str, *, level: int = logging.INFO) -> None:
        event = WorkerEvent(kind=kind, worker_type=ts.name, pid=pid, at=loop_time(), reason=reason)
        self._events.append(event)
        logger.log(level, "%s", event.describe())
        for listener in list(self._listeners):
            try:
                listener(event)
            except Exception:
                logger.exception("a worker pool listener raised")

    def add_listener(self, listener: WorkerListener) -> None:
        """Call ``listener`` with every `WorkerEvent` (spawn, reap, recycle, death, ...)."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}")
        self._listeners.append(listener)

    def remove_listener(self, listener: WorkerListener) -> None:
        """Stop calling ``listener``."""
        self._listeners.remove(listener)

    @property
    def events(self) -> tuple[WorkerEvent, ...]:
        """The latest events, oldest first."""
        return tuple(self._events)

    def governor(self, worker_type: str) -> Governor:
        """The governor that decides how many workers of this type run at once."""
        return self._type(worker_type).gov

    def status(self) -> dict[str, TypeStatus]:
        """Each type's workers and jobs now, by type name."""
        now = loop_time()
        out = {}
        for name, ts in self._types.items():
            workers = tuple(
                WorkerStatus(
                    pid=w.pid,
                    state=RETIRING if w.state == BUSY and w.retire_after is not None else w.state,
                    age_s=max(0.0, now - w.started_at),
                    jobs_done=w.jobs_done,
                    current_job=w.job.id if w.job is not None else None,
                    resource=w.resource,
                )
                for w in ts.workers
            )
            out[name] = TypeStatus(
                name=name,
                limit=ts.gov.limit,
                queued=ts.queued + len(ts.waiters),
                starting=ts.count(STARTING),
                idle=ts.count(IDLE),
                busy=ts.count(BUSY),
                retiring=ts.count(RETIRING),
                jobs_done=ts.jobs_done,
                jobs_failed=ts.jobs_failed,
                spawned=ts.spawned,
                spawn_failures=ts.spawn_failures,
                spawning_stopped=ts.failures_in_a_row >= ts.spec.start_failures_to_stop,
                last_start_error=ts.last_start_error,
                workers=workers,
            )
        return out

    def __repr__(self) -> str:
        parts = ", ".join(f"{name}: {len(ts.workers)} workers" for name, ts in self._types.items())
        return f"<WorkerPool {parts}>"
