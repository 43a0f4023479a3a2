"""The Redis store and the fleet ceiling, against a real redis-server on a loopback port."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aiogovernor import AIMD, Governor
from aiogovernor.fleet import FleetCeiling
from aiogovernor.state import KeptDecision, LearnedState, RedisStore, StateStoreError

REDIS = shutil.which("redis-server")
pytestmark = [
    pytest.mark.redis,
    pytest.mark.skipif(
        REDIS is None, reason="redis-server is not installed (scripts/bootstrap.sh installs it)"
    ),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server process with no persistence, on a loopback port."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.directory = directory
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS is not None
        self.proc = subprocess.Popen(
            [REDIS, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            cwd=self.directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:  # wait for PING
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            assert self.proc.poll() is None, "redis-server exited"
            assert time.monotonic() < deadline, "redis-server did not answer PING"
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _persistence_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)


def state(limit: float) -> LearnedState:
    return LearnedState(limit=limit, policy="aimd", updated_at=time.time())


def test_redis_store_crud(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisStore(redis_server.url)
        assert await store.load("prod", "api") is None
        await store.save("prod", "api", state(10))
        await store.save("prod", "https://x/y", state(4))
        await store.save("prod2", "api", state(2))
        loaded = await store.load("prod", "api")
        assert loaded is not None
        assert loaded.limit == 10
        assert sorted(await store.list("prod")) == ["api", "https://x/y"]
        assert await store.environments() == ["prod", "prod2"]
        assert await store.client.exists("aiogovernor:prod:api") == 1
        await store.client.set("aiogovernor:prod:junk", b"\xff not json")
        assert sorted(await store.list("prod")) == ["api", "https://x/y"]
        assert await store.delete("prod", "api") is True
        assert await store.delete("prod", "api") is False
        # A record handed over as text (what a governor saves) reads back as the state.
        kept = (KeptDecision(1_700_000_000.5, 4, 5, "up", 0.012, 9, 0, 4),)
        saved = LearnedState(limit=5.0, policy="aimd", updated_at=1.0, history=kept)
        await store.save_record("prod", "api", saved.to_json_text())
        assert await store.load("prod", "api") == saved
        await store.aclose()

    asyncio.run(main())


def test_a_redis_that_refuses_writes_is_a_store_error(redis_server: RedisServer) -> None:
    async def main() -> None:
        store = RedisStore(redis_server.url)
        # Reachable but refusing writes (as a replica-less primary configured to need one does).
        await store.client.config_set("min-replicas-to-write", 1)
        try:
            with pytest.raises(StateStoreError, match="refused set"):
                await store.save("prod", "api", state(3))
        finally:
            await store.client.config_set("min-replicas-to-write", 0)
            await store.aclose()

    asyncio.run(main())


def test_every_process_of_a_fleet_starts_from_the_shared_limit(redis_server: RedisServer) -> None:
    async def main() -> None:
        first, second = RedisStore(redis_server.url), RedisStore(redis_server.url)
        a = Governor("api", AIMD(max_limit=64), environment="prod", store=first)
        a.reset_limit(30)
        await a.aclose()
        b = Governor("api", AIMD(max_limit=64), environment="prod", store=second)
        async with b:
            assert b.limit == 30
        await first.aclose()
        await second.aclose()

    asyncio.run(main())


def test_redis_unreachable_then_back(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    server = RedisServer(tmp_path)  # not started yet

    async def main() -> None:
        store = RedisStore(server.url, timeout_s=0.5)
        gov = Governor("api", AIMD(max_limit=64), environment="prod", store=store, save_interval_s=0)
        async with gov:  # unreachable at start: a warning, and the default limit
            pass
        assert gov.limit == 4
        gov.reset_limit(12)
        await gov.aclose()  # unreachable: warns, carries on in memory
        assert gov.limit == 12
        server.start()  # Redis comes back: the next save reconnects
        try:
            gov.reset_limit(13)
            await gov.aclose()
            saved = await store.load("prod", "api")
            assert saved is not None
            assert saved.limit == 13
            server.stop()  # ... and goes away again mid-run
            with pytest.raises(StateStoreError):
                await store.load("prod", "api")
            gov.reset_limit(14)
            await gov.aclose()
            async with gov:
                assert gov.limit == 14
        finally:
            server.stop()
            await store.aclose()

    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        asyncio.run(main())
    text = caplog.text
    assert "cannot load learned state" in text
    assert "cannot save learned state" in text
    assert "saved again" in text


def test_fleet_ceiling_in_process(redis_server: RedisServer) -> None:
    async def main() -> None:
        fleet = FleetCeiling("up", cap=3, url=redis_server.url, lease_s=3.0, timeout_s=0.9, poll_s=0.01)
        gov = Governor("up", AIMD(max_limit=50, initial_limit=50), store=None)
        peak = 0
        inside = 0

        async def work() -> None:
            nonlocal peak, inside
            async with fleet.guard(gov):
                inside += 1
                peak = max(peak, inside)
                assert await fleet.holders() <= 3
                await asyncio.sleep(0.01)
                inside -= 1

        await asyncio.gather(*(work() for _ in range(20)))
        assert peak == 3
        assert await fleet.holders() == 0
        with pytest.raises(TimeoutError):
            held = [await fleet.acquire() for _ in range(3)]
            await fleet.acquire(timeout_s=0.05)
        for p in held:
            await p.release()
        await fleet.aclose()

    asyncio.run(main())


def test_a_cancelled_fleet_acquire_leaves_no_ghost_lease(redis_server: RedisServer) -> None:
    async def main() -> None:
        fleet = FleetCeiling("ghost", cap=1, url=redis_server.url, lease_s=30.0)
        real = fleet._acquire_script
        granted = asyncio.Event()

        async def reply_lost(**kwargs: object) -> object:
            result = await real(**kwargs)  # the script ran: Redis holds the lease...
            granted.set()
            await asyncio.sleep(3600)  # ...and the caller is cancelled before the reply
            return result

        fleet._acquire_script = reply_lost
        waiter = asyncio.create_task(fleet.acquire())
        await granted.wait()
        assert await fleet.holders() == 1
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert await fleet.holders() == 0  # not a slot blocked for lease_s with nobody in it
        fleet._acquire_script = real
        permit = await fleet.acquire(timeout_s=1.0)
        await permit.release()
        await fleet.aclose()

    asyncio.run(main())


def test_fleet_ceiling_fails_open_when_redis_is_gone(caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> None:
        fleet = FleetCeiling("up", cap=1, url=f"redis://127.0.0.1:{free_port()}/0", timeout_s=0.2)
        a = await fleet.acquire()
        b = await fleet.acquire()
        assert not a.leased
        assert not b.leased
        await a.release()
        closed = FleetCeiling("up", cap=1, url=f"redis://127.0.0.1:{free_port()}/0", fail_open=False)
        with pytest.raises(StateStoreError):
            await closed.acquire()
        await fleet.aclose()
        await closed.aclose()

    with caplog.at_level(logging.WARNING, logger="aiogovernor.state"):
        asyncio.run(main())
    assert caplog.text.count("only local limits apply") == 1


# Each worker process: many tasks through one governor and the fleet ceiling. After
# getting a fleet permit it adds itself to a per-process counter and sums the counters
# of processes still alive; any sum above the cap is a violation.
WORKER = textwrap.dedent(
    """
    import asyncio, os, sys
    from aiogovernor import AIMD, Governor
    from aiogovernor.fleet import FleetCeiling

    ENTER = '''
    redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
    local dead = {}
    for _, pid in ipairs(redis.call('SMEMBERS', KEYS[2])) do dead[pid] = true end
    local sum = 0
    local all = redis.call('HGETALL', KEYS[1])
    for i = 1, #all, 2 do
      if not dead[all[i]] then sum = sum + tonumber(all[i + 1]) end
    end
    local peak = tonumber(redis.call('GET', KEYS[3]) or '0')
    if sum > peak then redis.call('SET', KEYS[3], sum) end
    return sum
    '''

    async def main():
        url, cap, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
        fleet = FleetCeiling("shared", cap=cap, url=url, lease_s=1.5, timeout_s=0.45, poll_s=0.005)
        gov = Governor("w", AIMD(max_limit=8, initial_limit=8), store=None)
        enter = fleet._client.register_script(ENTER)
        me = str(os.getpid())
        loop = asyncio.get_running_loop()
        end = loop.time() + seconds
        print("ready", flush=True)

        async def task():
            while loop.time() < end:
                async with fleet.guard(gov):
                    await enter(keys=["active", "dead", "peak"], args=[me])
                    await asyncio.sleep(0.003)
                    await fleet._client.hincrby("active", me, -1)

        await asyncio.gather(*(task() for _ in range(8)))
        await fleet.aclose()

    asyncio.run(main())
    """
)


def test_fleet_permits_never_exceed_the_cap_across_processes(redis_server: RedisServer) -> None:
    cap = 5
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, redis_server.url, str(cap), "3.0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "ready\n"

    async def check() -> tuple[int, int]:
        from redis.asyncio import Redis

        client = Redis.from_url(redis_server.url)
        try:
            # Let the fleet saturate, then kill one process holding permits.
            while int(await client.get("peak") or 0) < cap:  # noqa: ASYNC110 - state of other processes
                await asyncio.sleep(0.01)
            victim = procs[0]
            os.kill(victim.pid, signal.SIGKILL)
            victim.wait()
            await client.sadd("dead", str(victim.pid))
            fleet = FleetCeiling("shared", cap=cap, client=client)
            holders_after_kill = await fleet.holders()
            return int(await client.get("peak") or 0), holders_after_kill
        finally:
            await client.aclose()

    peak, holders = asyncio.run(check())
    for pipe in (procs[0].stdout, procs[0].stderr):
        assert pipe is not None
        pipe.close()
    for proc in procs[1:]:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err

    async def final() -> tuple[int, int]:
        from redis.asyncio import Redis

        client = Redis.from_url(redis_server.url)
        try:
            fleet = FleetCeiling("shared", cap=cap, client=client)
            return int(await client.get("peak") or 0), await fleet.holders()
        finally:
            await client.aclose()

    final_peak, left = asyncio.run(final())
    assert peak == cap
    assert holders <= cap
    assert final_peak == cap  # never above the cap, before or after the kill
    # The survivors released theirs; the victim's leases expired instead of leaking.
    assert left == 0
