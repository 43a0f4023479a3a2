"""A fleet-wide permit cap in Redis: leases that expire when their holder dies.

`FleetCeiling` is a gate, not a store: it composes with a process's own
`aiogovernor.Governor` and keeps its leases in Redis (the ``redis`` extra).
It is an integration on top of the core: nothing in the core imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from ._names import check_governor_name
from ._persistence import StateStoreError
from ._retry import Retry
from ._validate import check_bool, check_float, check_int
from .state._redis import connect_redis, redis_errors

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from ._governor import Governor, Permit

__all__ = ["FleetCeiling", "FleetPermit"]

logger = logging.getLogger("aiogovernor.state")

# Redis' own clock decides expiry, so the hosts' clocks need not agree.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# KEYS[1]: the lease set; ARGV: cap, token, lease in ms.
_ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[1]) then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[3]))
  return 1
end
return 0
"""
)

# KEYS[1]: the lease set; ARGV: lease in ms, then the tokens to extend. Returns how many were lost.
# XX never re-adds a lease that another process's acquire already reaped.
_RENEW = (
    _NOW
    + """
local lost = 0
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[1]), ARGV[i])
  if not redis.call('ZSCORE', KEYS[1], ARGV[i]) then lost = lost + 1 end
end
redis.call('PEXPIRE', KEYS[1], 2 * tonumber(ARGV[1]))
return lost
"""
)

_HOLDERS = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)


class FleetPermit:
    """One fleet-wide permit, held as a lease until `release`.

    A permit granted while Redis was unreachable (with ``fail_open``) holds
    no lease: `leased` is False and releasing it does nothing.
    """

    __slots__ = ("_ceiling", "_released", "_token")

    def __init__(self, ceiling: FleetCeiling, token: str | None) -> None:
        self._ceiling = ceiling
        self._token = token
        self._released = False

    @property
    def leased(self) -> bool:
        """Whether this permit holds a lease in Redis."""
        return self._token is not None

    async def release(self) -> None:
        """Give the permit back (at most once; later calls do nothing)."""
        if self._released:
            return
        self._released = True
        if self._token is not None:
            await self._ceiling._release(self._token)


class FleetCeiling:
    """A cap on the permits held at once across every process of a fleet.

    Say the upstream allows 64 requests at once over all workers: each
    process keeps its own adaptive `aiogovernor.Governor`, and every unit of
    work also takes one of the 64 fleet permits. Permits are leases in a
    Redis sorted set; a background task renews the ones this process holds
    every ``lease_s / 3``, so a process killed with its permits lets them go
    within ``lease_s``. The cap is enforced by one Lua script per
    acquisition, on Redis' own clock: permits never exceed it. Waiting
    callers poll (every ``poll_s``, jittered). Runs on asyncio (``redis.asyncio``).

    Usage:

    ```python
    fleet = FleetCeiling("upstream-api", cap=64, url="redis://redis:6379/0")
    async with fleet.guard(gov):          # a local permit, then a fleet one
        await call()
    ```

    Args:
        name: The shared pool's name: every process using it shares the cap.
        cap: Fleet permits held at once, at most.
        url: The Redis server.
        client: A ``redis.asyncio.Redis`` to use instead of ``url``.
        lease_s: How long a lease outlives its holder's last renewal.
        poll_s: Mean interval between tries while the pool is full.
        fail_open: When Redis cannot be reached, grant unleased permits (the
            local limits still apply) and log a warning; False raises
            `StateStoreError` instead.
        namespace: The prefix of the Redis key.
        timeout_s: Connect and socket timeout for a client made from ``url``.
    """

    def __init__(
        self,
        name: str,
        *,
        cap: int,
        url: str = "redis://localhost:6379/0",
        client: Redis | None = None,
        lease_s: float = 10.0,
        poll_s: float = 0.05,
        fail_open: bool = True,
        namespace: str = "aiogovernor-fleet",
        timeout_s: float = 2.0,
    ) -> None:
        self._name = check_governor_name(name)
        self._cap = check_int("cap", cap, low=1)
        lease_s = check_float("lease_s", lease_s, low=0.01)
        self._lease_ms = round(1000 * lease_s)
        self._poll_s = check_float("poll_s", poll_s, low=0.0, low_open=True)
        self._timeout_s = check_float("timeout_s", timeout_s, low=0.0, low_open=True)
        if lease_s <= 3 * self._timeout_s:
            # Leases are renewed every lease_s / 3, and one renewal may take up to timeout_s
            # before it fails: the next one must still come before the leases run out.
            raise ValueError(
                f"lease_s ({lease_s:g}) must be more than 3 × timeout_s ({self._timeout_s:g}): leases are "
                "renewed every lease_s / 3, so a renewal that hangs for timeout_s would let every "
                "lease of this process expire; raise lease_s or lower timeout_s"
            )
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            # The Redis store refuses it too: ':' separates the parts of a key.
            raise ValueError(f"namespace must be a non-empty string without ':', got {namespace!r}")
        self._fail_open = check_bool("fail_open", fail_open)
        self._key = f"{namespace}:{name}"
        self._owns_client = client is None
        try:
            self._client = client if client is not None else connect_redis(url, timeout_s)
        finally:
            del url  # a password in it must not sit in the locals of a traceback
        self._acquire_script: Any = self._client.register_script(_ACQUIRE)
        self._renew_script: Any = self._client.register_script(_RENEW)
        self._holders_script: Any = self._client.register_script(_HOLDERS)
        self._held: set[str] = set()
        self._forgetting: set[asyncio.Future[None]] = set()  # removals of lost grants, kept from the GC
        self._renewer: asyncio.Task[None] | None = None
        self._unreachable = False
        self._random = random.Random()
        # The poll's jitter is `Retry`'s (the one jitter rule): half the interval, plus a full-jitter
        # draw from [0, poll_s], so each wait is uniform in [0.5, 1.5] x poll_s (mean poll_s).
        self._poll = Retry(attempts=1, base_delay_s=self._poll_s, max_delay_s=self._poll_s, multiplier=1.0)

    @property
    def name(self) -> str:
        """The pool's name."""
        return self._name

    @property
    def cap(self) -> int:
        """Fleet permits held at once, at most."""
        return self._cap

    @property
    def held(self) -> int:
        """Leases this process holds now."""
        return len(self._held)

    def __repr__(self) -> str:
        # getattr: a debugger may show a ceiling whose construction failed half-way.
        name, cap = getattr(self, "_name", "?"), getattr(self, "_cap", "?")
        return f"<FleetCeiling {name!r} cap={cap} held here={len(getattr(self, '_held', ()))}>"

    def _unavailable(self, exc: BaseException) -> None:
        if not self._fail_open:
            raise StateStoreError(f"fleet ceiling {self._name!r}: Redis is unreachable ({exc})") from exc
        if not self._unreachable:
            self._unreachable = True
            logger.warning(
                "fleet ceiling %r: Redis is unreachable (%s); only local limits apply until it is back",
                self._name,
                exc,
            )

    async def acquire(self, *, timeout_s: float | None = None) -> FleetPermit:
        """Wait for a fleet permit.

        Args:
            timeout_s: Give up after this many seconds (None waits for ever).

        Raises:
            TimeoutError: When no permit came within ``timeout_s``.
            StateStoreError: When Redis is unreachable and ``fail_open`` is False.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout_s is None else loop.time() + check_float("timeout_s", timeout_s, low=0.0)
        token = uuid.uuid4().hex
        while True:
            try:
                granted = await self._acquire_script(
                    keys=[self._key], args=[self._cap, token, self._lease_ms]
                )
            except redis_errors() as exc:
                # The script may have run before the reply was lost: take the lease back
                # (in the background: this path must not swallow a cancellation).
                self._forget(token)
                self._unavailable(exc)
                return FleetPermit(self, None)
            except BaseException:
                # Cancelled (or failed) after the script may have granted the lease: remove
                # it, or it would block a fleet slot for lease_s with nobody holding it.
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(self._forget(token))
                raise
            if self._unreachable:
                self._unreachable = False
                logger.warning("fleet ceiling %r: Redis is back", self._name)
            if granted:
                self._held.add(token)
                if self._renewer is None or self._renewer.done():
                    self._renewer = loop.create_task(self._renew_forever())
                return FleetPermit(self, token)
            # Polling a full pool is not a retry (no attempt fails), but its jitter comes from `Retry`.
            delay = self._poll_s / 2 + self._poll.backoff_s(1, rng=self._random)
            if deadline is not None:
                if loop.time() >= deadline:
                    raise TimeoutError(f"no fleet permit of {self._name!r} within {timeout_s}s")
                delay = min(delay, max(0.0, deadline - loop.time()))
            await asyncio.sleep(delay)

    def _forget(self, token: str) -> asyncio.Future[None]:
        """Remove ``token``'s lease, if the acquire script granted one, in a task bounded by ``timeout_s``.

        A task, so that the removal outlives a caller being cancelled (it waits on it
        shielded: a second cancellation stops the wait, not the removal).
        """

        async def remove() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.zrem(self._key, token), self._timeout_s)

        task = asyncio.ensure_future(remove())
        self._forgetting.add(task)
        task.add_done_callback(self._forgetting.discard)
        return task

    async def _release(self, token: str) -> None:
        self._held.discard(token)
        try:
            await self._client.zrem(self._key, token)
        except redis_errors() as exc:
            # The lease runs out by itself within lease_s.
            logger.warning("fleet ceiling %r: cannot release a lease (%s); it will expire", self._name, exc)

    async def _renew_forever(self) -> None:
        while self._held:
            await asyncio.sleep(self._lease_ms / 3000)
            tokens = list(self._held)
            if not tokens:
                break
            try:
                lost = await self._renew_script(keys=[self._key], args=[self._lease_ms, *tokens])
            except redis_errors() as exc:
                logger.warning("fleet ceiling %r: cannot renew leases (%s)", self._name, exc)
                continue
            if lost:
                logger.warning(
                    "fleet ceiling %r: %d lease(s) expired before renewal (a stall longer than lease_s)",
                    self._name,
                    lost,
                )

    @contextlib.asynccontextmanager
    async def lease(self, *, timeout_s: float | None = None) -> AsyncIterator[FleetPermit]:
        """Hold a fleet permit for the block."""
        permit = await self.acquire(timeout_s=timeout_s)
        try:
            yield permit
        finally:
            await asyncio.shield(permit.release())

    @contextlib.asynccontextmanager
    async def guard(self, governor: Governor) -> AsyncIterator[Permit]:
        """Hold a permit of ``governor`` and a fleet permit for the block: both limits apply.

        The local permit is taken first, so a process never holds a fleet
        permit while it waits on its own limit; time spent waiting for the
        fleet counts in the local sample's latency, which is what the fleet
        being full looks like from here. Yields the local permit.
        """
        async with governor as permit, self.lease():
            yield permit

    async def holders(self) -> int:
        """Live leases across the fleet now (expired ones are reaped first).

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        try:
            return int(await self._holders_script(keys=[self._key], args=[]))
        except redis_errors() as exc:
            raise StateStoreError(f"Redis is unreachable ({exc})") from exc

    async def aclose(self) -> None:
        """Release this process's leases, stop renewing, close a client the ceiling made."""
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
        for token in list(self._held):
            await self._release(token)
        if self._owns_client:
            await self._client.aclose()
