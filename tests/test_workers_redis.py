"""RedisJobQueue against a real redis-server: two pools in two processes, one killed with -9 mid-run."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import anyio
import pytest

import workers_jobs as jobs
from aiogovernor.workers import JobFailed, RedisJobQueue, WorkerPool, WorkerType
from test_state_redis import REDIS, RedisServer, redis_server

__all__ = ["redis_server"]  # the fixture, shared with the state tests

pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        REDIS is None, reason="redis-server is not installed (scripts/bootstrap.sh installs it)"
    ),
]

CONSUMER = textwrap.dedent(
    """
    import asyncio, sys
    sys.path.insert(0, {tests!r})
    import workers_jobs
    from aiogovernor.workers import RedisJobQueue, WorkerPool, WorkerType

    async def main():
        spec = WorkerType("tag", fn=workers_jobs.tagged, max_workers=2, max_jobs_per_worker=7)
        async with WorkerPool(spec) as pool:
            queue = RedisJobQueue({url!r}, name="fleet", claim_idle_s=0.5)
            print("serving", flush=True)
            await queue.serve(pool, consumer={name!r})

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


def start_consumer(tmp_path: Path, server: RedisServer, name: str) -> subprocess.Popen[str]:
    script = tmp_path / f"{name}.py"
    script.write_text(CONSUMER.format(tests=str(Path(__file__).parent), url=server.url, name=name))
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "serving"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def test_two_pools_one_killed_every_job_completes_exactly_once(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    a = start_consumer(tmp_path, redis_server, "pool-a")
    b = start_consumer(tmp_path, redis_server, "pool-b")
    try:

        async def main() -> None:
            queue = RedisJobQueue(redis_server.url, name="fleet", claim_idle_s=0.5)
            ids = [await queue.submit("tag", n, job_id=f"job-{n}") for n in range(40)]
            # Wait until pool A holds jobs it has taken and not acknowledged, then kill it -9
            # at once (a job takes 0.2 s: it cannot have finished them all in between).
            # Waiting for one of A's results first left a window in which A held nothing.
            with anyio.fail_after(30):
                while not await queue.client.xpending_range(  # noqa: ASYNC110 - a server's state: no event to wait on
                    queue.stream, queue.group, min="-", max="+", count=1, consumername="pool-a"
                ):
                    await anyio.sleep(0.01)
            os.kill(a.pid, signal.SIGKILL)
            seen: dict[str, dict[str, int]] = {}
            a.wait()
            # What A had taken and not acknowledged when it died: pool B must take it over.
            held = await queue.client.xpending_range(
                queue.stream, queue.group, min="-", max="+", count=100, consumername="pool-a"
            )
            held_ids: set[str] = set()
            for entry in held:
                found: Any = await queue.client.xrange(queue.stream, entry["message_id"], entry["message_id"])
                held_ids.update(fields[b"id"].decode() for _id, fields in found)
            assert held_ids, "pool A was killed while it held jobs"
            rest = await queue.results([i for i in ids if i not in seen], timeout_s=60)
            seen.update(rest)
            assert sorted(seen) == sorted(ids), "every job has exactly one result"
            assert all(seen[f"job-{n}"]["n"] == n for n in range(40))
            assert held_ids <= set(rest), "the jobs A held were completed after it died"
            # Nothing left pending in the group: every job was acknowledged.
            pending = await queue.client.xpending(queue.stream, queue.group)
            assert pending["pending"] == 0
            # A job asked again is not run again, and not returned twice.
            assert await queue.results([], timeout_s=1) == {}
            await queue.aclose()

        asyncio.run(main())
    finally:
        stop(a)
        stop(b)


def test_a_failed_job_is_a_result_and_bad_payloads_are_refused(redis_server: RedisServer) -> None:
    async def main() -> None:
        queue = RedisJobQueue(redis_server.url, name="errors", claim_idle_s=0.5)
        with pytest.raises(TypeError, match="JSON"):
            await queue.submit("fail", object())
        with pytest.raises(ValueError, match="claim_idle_s"):
            RedisJobQueue(redis_server.url, claim_idle_s=0)
        async with WorkerPool(WorkerType("fail", fn=jobs.fail, max_workers=1)) as pool:
            serving = asyncio.create_task(queue.serve(pool, consumer="one"))
            try:
                with pytest.raises(JobFailed, match="bad payload 3"):
                    await queue.run("fail", 3, timeout_s=30)
                got = await queue.map("nope", [1], timeout_s=30, return_exceptions=True)
                assert isinstance(got[0], JobFailed) and "unknown worker type" in str(got[0])
            finally:
                serving.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await serving
        await queue.aclose()

    asyncio.run(main())
