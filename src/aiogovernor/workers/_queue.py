"""`RedisJobQueue`: producers and worker pools on several machines sharing jobs through a Redis stream."""

from __future__ import annotations

import json
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from aiogovernor._clock import loop_time
from aiogovernor._validate import check_float, check_int

from ._errors import JobCancelled, JobFailed, WorkerDied, WorkerError, WorkerStartError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._pool import WorkerPool

__all__ = ["RedisJobQueue"]

logger = logging.getLogger("aiogovernor.workers")

_BLOCK_MS = 500  # the longest one read waits on the server: keeps cancellation and timeouts prompt


def _redis_client(url: str) -> Redis:
    try:
        from redis.asyncio import Redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("RedisJobQueue needs the 'redis' extra: pip install 'aiogovernor[redis]'") from exc
    return Redis.from_url(url, socket_connect_timeout=10.0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisJobQueue:
    """A job queue in a Redis stream: producers submit, `WorkerPool`\\ s on any host run the jobs.

    - **Submit**: ``XADD`` of ``{id, type, payload, reply_to}`` to the jobs
      stream; payloads and results are JSON.
    - **Take**: `serve` reads with ``XREADGROUP`` in one consumer group, no
      more jobs at once than its pool can run, and runs each with
      `WorkerPool.run` (the pool spawns its local workers on its own backlog).
    - **Done**: the result is stored under the job's id with an expiry
      (``SET NX EX``: the first result wins), announced on the producer's
      reply stream, then the job is acknowledged (``XACK``) and deleted.
    - **Take over**: a consumer that dies (kill -9, a lost host) leaves its
      jobs pending; after ``claim_idle_s`` another consumer takes them over
      with ``XAUTOCLAIM`` and runs them. A live consumer keeps its own
      running jobs from looking idle (``XCLAIM`` of its pending entries).
    - **Exactly once, from the producer's view**: delivery is at least once
      (a job taken over may have run already), so a job that has a stored
      result is not run again, and `results` returns each job id once.

    Only failures of the job itself (`JobFailed`, a `WorkerDied` after its
    retries, a `WorkerStartError`, an unknown worker type) are stored as
    results; a job whose consumer is stopped or cancelled stays pending and
    is taken over. Needs the ``redis`` extra; runs on asyncio.

    Args:
        url: The Redis server, as a ``redis://`` URL.
        client: A ``redis.asyncio.Redis`` to use instead of ``url`` (closing it is yours).
        name: The queue's name: its keys are ``<namespace>:<name>:...``.
        namespace: The prefix of every key.
        result_ttl_s: How long results and reply streams are kept.
        claim_idle_s: How long a job may sit with a silent consumer before
            another takes it over.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        client: Redis | None = None,
        name: str = "jobs",
        namespace: str = "aiogovernor:workers",
        result_ttl_s: float = 3600.0,
        claim_idle_s: float = 30.0,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"name must be a non-empty string, got {name!r}")
        if not isinstance(namespace, str) or not namespace:
            raise ValueError(f"namespace must be a non-empty string, got {namespace!r}")
        self._ttl_s = check_float("result_ttl_s", result_ttl_s, low=1.0)
        self._claim_idle_s = check_float("claim_idle_s", claim_idle_s, low=0.0, low_open=True)
        self._own_client = client is None
        self.client: Redis = client if client is not None else _redis_client(url)
        base = f"{namespace}:{name}"
        self.stream = f"{base}:jobs"
        self.group = "pools"
        self._result_prefix = f"{base}:result:"
        self.reply_stream = f"{base}:replies:{uuid.uuid4().hex}"
        self._cursor = "0-0"
        self._arrived: dict[str, dict[str, Any]] = {}
        self._delivered: set[str] = set()
        self._read_lock: Any = None
        self._group_ready = False

    async def aclose(self) -> None:
        """Close the client the queue made (and drop this producer's reply stream)."""
        try:
            await self.client.delete(self.reply_stream)
        finally:
            if self._own_client:
                await self.client.aclose()

    async def __aenter__(self) -> RedisJobQueue:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        from redis.exceptions import ResponseError

        try:
            # From the stream's start: jobs added before the group existed are delivered too.
            await self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    # -- producer ---------------------------------------------------------

    async def submit(self, worker_type: str, payload: Any, *, job_id: str | None = None) -> str:
        """Add one job to the stream; returns its id (made unique if not given).

        Raises:
            TypeError: When the payload is not JSON-serialisable.
        """
        if not isinstance(worker_type, str) or not worker_type:
            raise ValueError(f"worker_type must be a non-empty string, got {worker_type!r}")
        try:
            body = json.dumps(payload)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"a queued job's payload must be JSON-serialisable: {exc}") from None
        job_id = uuid.uuid4().hex if job_id is None else job_id
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"job_id must be a non-empty string, got {job_id!r}")
        await self._ensure_group()
        await self.client.xadd(
            self.stream, {"id": job_id, "type": worker_type, "payload": body, "reply_to": self.reply_stream}
        )
        return job_id

    async def results(
        self, job_ids: Iterable[str], *, timeout_s: float | None = None, return_exceptions: bool = False
    ) -> dict[str, Any]:
        """Wait for these jobs' results; each job id once, however often its job ran.

        Args:
            job_ids: Jobs submitted through this queue (by this producer).
            timeout_s: Give up after this long (TimeoutError); None waits for ever.
            return_exceptions: Put a failed job's `JobFailed` in the dict instead of raising it.

        Returns:
            Each job id's result.
        """
        import anyio

        wanted = list(dict.fromkeys(job_ids))
        if timeout_s is not None:
            check_float("timeout_s", timeout_s, low=0.0)
        if self._read_lock is None:
            self._read_lock = anyio.Lock()
        deadline = None if timeout_s is None else loop_time() + timeout_s
        await self._stored(wanted)
        while True:
            missing = [j for j in wanted if j not in self._arrived]
            if not missing:
                break
            if deadline is not None and loop_time() >= deadline:
                raise TimeoutError(f"{len(missing)} of {len(wanted)} jobs have no result after {timeout_s}s")
            async with self._read_lock:
                if any(j not in self._arrived for j in wanted):
                    block_ms = _BLOCK_MS
                    if deadline is not None:
                        block_ms = max(1, min(block_ms, int((deadline - loop_time()) * 1000)))
                    if not await self._read_replies(block_ms):
                        await self._stored(missing)  # a reply stream that expired, say
        out: dict[str, Any] = {}
        for job_id in wanted:
            record = self._arrived.pop(job_id)
            self._delivered.add(job_id)
            if record.get("ok"):
                out[job_id] = record.get("value")
                continue
            error = JobFailed(job_id, record.get("type", "?"), record.get("error", "failed"))
            if not return_exceptions:
                raise error
            out[job_id] = error
        return out

    async def _read_replies(self, block_ms: int) -> bool:
        response: Any = await self.client.xread({self.reply_stream: self._cursor}, count=1000, block=block_ms)
        found = False
        for _stream, entries in response or ():
            for entry_id, fields in entries:
                self._cursor = _text(entry_id)
                record = self._decode(fields.get(b"result") or fields.get("result"))
                job_id = _text(fields.get(b"id") or fields.get("id") or "")
                found = True
                # A job run twice (taken over after its consumer died) announces twice: the first counts.
                if job_id and job_id not in self._delivered and job_id not in self._arrived:
                    self._arrived[job_id] = record
        return found

    async def _stored(self, job_ids: Sequence[str]) -> None:
        """Pick up results already stored (their announcement read before, or expired)."""
        todo = [j for j in job_ids if j not in self._arrived and j not in self._delivered]
        if not todo:
            return
        values = await self.client.mget([self._result_prefix + j for j in todo])
        for job_id, value in zip(todo, values, strict=True):
            if value is not None:
                self._arrived[job_id] = self._decode(value)

    @staticmethod
    def _decode(value: Any) -> dict[str, Any]:
        try:
            record = json.loads(value)
        except (TypeError, ValueError):
            return {"ok": False, "error": "an unreadable result"}
        return record if isinstance(record, dict) else {"ok": False, "error": "an unreadable result"}

    async def run(self, worker_type: str, payload: Any, *, timeout_s: float | None = None) -> Any:
        """Submit one job and wait for its result (raises `JobFailed` if it failed)."""
        job_id = await self.submit(worker_type, payload)
        return (await self.results([job_id], timeout_s=timeout_s))[job_id]

    async def map(
        self,
        worker_type: str,
        payloads: Iterable[Any],
        *,
        timeout_s: float | None = None,
        return_exceptions: bool = False,
    ) -> list[Any]:
        """Submit one job per payload and wait for every result, in input order."""
        ids = [await self.submit(worker_type, p) for p in payloads]
        got = await self.results(ids, timeout_s=timeout_s, return_exceptions=return_exceptions)
        return [got[i] for i in ids]

    # -- consumer ---------------------------------------------------------

    async def serve(
        self, pool: WorkerPool, *, consumer: str | None = None, max_inflight: int | None = None
    ) -> None:
        """Take jobs from the stream and run them on ``pool``, until cancelled.

        Args:
            pool: An entered `WorkerPool` with the jobs' worker types.
            consumer: This consumer's name in the group (unique per process);
                defaults to host, pid and a random suffix.
            max_inflight: Jobs taken at once; defaults to the sum of the
                pool's governor limits (read again as they change).
        """
        import anyio

        if max_inflight is not None:
            check_int("max_inflight", max_inflight, low=1)
        name = consumer or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        await self._ensure_group()
        running: dict[str, str] = {}  # entry id -> job id
        freed = anyio.Event()

        def capacity() -> int:
            if max_inflight is not None:
                return max_inflight
            return sum(pool.governor(t).limit for t in pool.status())

        async def handle(entry_id: str, fields: dict[Any, Any]) -> None:
            nonlocal freed
            try:
                await self._handle(pool, entry_id, fields)
            finally:
                running.pop(entry_id, None)
                freed.set()
                freed = anyio.Event()

        async def keep_claimed() -> None:
            # A running job must not look idle to the other consumers' XAUTOCLAIM.
            while True:
                await anyio.sleep(self._claim_idle_s / 3)
                if running:
                    await self.client.xclaim(self.stream, self.group, name, 0, list(running), justid=True)

        async with anyio.create_task_group() as tg:
            tg.start_soon(keep_claimed)
            next_claim = loop_time()
            while True:
                free = capacity() - len(running)
                if free <= 0:
                    await freed.wait()
                    continue
                entries: list[Any] = []
                if loop_time() >= next_claim:
                    next_claim = loop_time() + self._claim_idle_s / 2
                    claimed: Any = await self.client.xautoclaim(
                        self.stream, self.group, name, int(self._claim_idle_s * 1000), "0-0", count=free
                    )
                    entries = [e for e in claimed[1] if e and e[1]]
                    if entries:
                        logger.info("%s took over %d job(s) of a silent consumer", name, len(entries))
                if not entries:
                    response: Any = await self.client.xreadgroup(
                        self.group, name, {self.stream: ">"}, count=free, block=_BLOCK_MS
                    )
                    entries = [e for _s, batch in response or () for e in batch]
                for entry_id, fields in entries:
                    key = _text(entry_id)
                    if key in running:
                        continue
                    running[key] = _text(fields.get(b"id", b""))
                    tg.start_soon(handle, key, fields)

    async def _handle(self, pool: WorkerPool, entry_id: str, fields: dict[Any, Any]) -> None:
        def field(name: str) -> str:
            return _text(fields.get(name.encode(), fields.get(name, b"")))

        job_id, worker_type, reply_to = field("id"), field("type"), field("reply_to")
        key = self._result_prefix + job_id
        stored: Any = await self.client.get(key)
        if stored is None:
            record: dict[str, Any]
            try:
                value = await pool.run(worker_type, json.loads(field("payload")))
                record = {"ok": True, "value": value}
            except (JobFailed, WorkerDied, WorkerStartError) as exc:
                record = {"ok": False, "type": worker_type, "error": str(exc)}
            except JobCancelled:
                return  # left pending: another consumer takes it over
            except WorkerError as exc:
                record = {"ok": False, "type": worker_type, "error": str(exc)}
            except ValueError as exc:  # an unknown worker type, a payload that is not JSON
                record = {"ok": False, "type": worker_type, "error": str(exc)}
            try:
                body = json.dumps(record)
            except (TypeError, ValueError) as exc:
                body = json.dumps({"ok": False, "type": worker_type, "error": f"result is not JSON: {exc}"})
            ttl_ms = int(self._ttl_s * 1000)
            if not await self.client.set(key, body, nx=True, px=ttl_ms):
                stored = await self.client.get(key)  # another consumer's result came first
            else:
                stored = body
        async with self.client.pipeline(transaction=True) as pipe:
            if reply_to:
                pipe.xadd(reply_to, {"id": job_id, "result": stored})
                pipe.pexpire(reply_to, int(self._ttl_s * 1000))
            pipe.xack(self.stream, self.group, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()
