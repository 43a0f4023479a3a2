"""Govern an httpx client: a transport that takes a permit per request and reads HTTP's own signals.

```python
import httpx
from aiogovernor import Governor
from aiogovernor.httpx import GovernedTransport

gov = Governor("api")
async with httpx.AsyncClient(transport=GovernedTransport(gov)) as client:
    r = await client.get("https://api.example.com/items")
```

The permit is taken before the connection pool and held until the response
is closed (its body read, or the stream closed), so a streaming download
keeps its permit for as long as it streams. Status codes and transport
errors become outcomes (429, 503 and timeouts are ``overload``), and a
``Retry-After`` on an overload pauses new permits for that origin.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import random
import warnings
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from types import MappingProxyType
from typing import TypeAlias

try:
    import httpcore  # httpx's own connection pool, whose idle connections are trimmed
    import httpx
except ImportError as exc:  # an optional extra: say which one
    raise ImportError("aiogovernor.httpx needs httpx: pip install 'aiogovernor[httpx]'") from exc

from ._attempt import Attempts, Gate
from ._classify import default_classify
from ._clone import copier
from ._governor import Governor
from ._http import classify_status, classify_with_default, retry_after_header
from ._permit import PermitMarks
from ._retry import Retry, RetryBudget
from ._samples import Outcome
from ._shards import ShardedTransport, _connection_pool, _pool_size
from ._validate import check_float, check_int

__all__ = [
    "GovernedTransport",
    "HTTPAttempts",
    "HTTPClassifier",
    "ShardedTransport",
    "classify_http",
    "origin_of",
    "retry_after_s",
]

logger = logging.getLogger("aiogovernor.httpx")

HTTPClassifier: TypeAlias = Callable[["httpx.Response | BaseException"], "Outcome | None"]
"""Maps a response, or the exception that ended a request, to an outcome; None defers to `classify_http`."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def classify_http(result: httpx.Response | BaseException) -> Outcome:
    """The default mapping from a response or an exception to an outcome.

    - 429 Too Many Requests and 503 Service Unavailable → ``overload``;
    - any other 5xx → ``error`` (a server bug is not a reason to lower concurrency);
    - any other 4xx → ``ignored`` (the request was wrong, the upstream is fine);
    - 1xx, 2xx and 3xx → ``ok``;
    - `httpx.TimeoutException` (connect, read, write and pool timeouts) → ``overload``;
    - anything else goes to `aiogovernor.default_classify`: cancellation is
      ``ignored``, other exceptions are ``error``.
    """
    if isinstance(result, httpx.Response):
        return classify_status(result.status_code)
    if isinstance(result, httpx.TimeoutException):
        return Outcome.OVERLOAD
    return default_classify(result)


class HTTPAttempts(Attempts[httpx.Response]):
    """The library's one attempt loop, for HTTP calls: what `GovernedTransport` and the uploader run.

    `run` (``await attempts.run(governor, call)``, ``call(permit, attempt)``
    making one request) takes a permit per attempt, classifies the response or
    the exception (``classify``, else `classify_http`), pauses the governor on
    an overload's ``Retry-After`` (read by `retry_after_s`, capped and
    jittered by the `Retry` policy, which also times the retry), releases the
    permit, and retries what ``retry`` retries, within its budget.

    Args:
        classify: Maps a response or an exception to an outcome; None (or a
            classifier returning None) defers to `classify_http`. A
            classifier that raises is logged and `classify_http` used: a
            broken classifier must neither leak a permit nor replace the
            request's own exception.
        retry: Which outcomes get another attempt; None makes one attempt
            (a Retry-After still pauses the governor, with `Retry`'s default
            cap and jitter).
        budget: Shared by every call through this object; None makes one
            from ``retry``.
        rng: The jitter source; None makes an unseeded one.
    """

    __slots__ = ("_classifier",)

    def __init__(
        self,
        classify: HTTPClassifier | None = None,
        *,
        retry: Retry | None = None,
        budget: RetryBudget | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if classify is not None and not callable(classify):
            raise TypeError(f"classify must be callable, got {classify!r}")
        super().__init__(retry=retry, budget=budget, rng=rng)
        self._classifier = classify

    def classify(self, governor: Gate, result: httpx.Response | BaseException) -> Outcome:
        """The outcome of one attempt: ``classify``'s word, else `classify_http`'s; never raises."""
        return classify_with_default(self._classifier, result, classify_http, logger)

    def retry_after_s(self, result: httpx.Response | BaseException) -> float | None:
        """A response's ``Retry-After`` (see `aiogovernor.httpx.retry_after_s`); None for an exception."""
        return retry_after_s(result) if isinstance(result, httpx.Response) else None


def origin_of(url: httpx.URL | str) -> str:
    """The origin of a URL, ``scheme://host:port``, with the default port made explicit.

    User info, path and query are dropped: an origin never carries a secret.
    """
    url = httpx.URL(url)
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(url.scheme, 0)
    host = f"[{url.host}]" if ":" in url.host else url.host
    return f"{url.scheme}://{host}:{port}"


def _call_soon() -> Callable[[Callable[[], object]], object] | None:
    """A thread-safe "run this soon" of the running event loop (asyncio or trio), if any."""
    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:
        pass
    try:
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
    except (ImportError, RuntimeError):
        return None


class _GovernedStream(httpx.AsyncByteStream):
    """A response body that gives the permit back when it is closed, or else when it is collected."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        permit: PermitMarks,
        outcome: Outcome,
        transport: GovernedTransport,
    ) -> None:
        self._inner = inner
        self._permit = permit
        self._outcome = outcome
        self._transport = transport
        self._call_soon = _call_soon()

    def __del__(self) -> None:
        # A streamed response dropped without being closed: give its permit back, as a
        # file closes itself, and say so with a ResourceWarning, as a file does. The
        # release runs on the event loop: a finalizer runs wherever the collector
        # happens to, even in the middle of the governor's own code.
        permit = getattr(self, "_permit", None)
        if permit is None or permit.released:
            return

        def give_back() -> None:
            if not permit.released:
                permit.release(Outcome.IGNORED)  # its latency would be the collector's

        try:
            if self._call_soon is None:
                raise RuntimeError("no event loop")
            self._call_soon(give_back)
        except RuntimeError:  # its loop is closed: nothing can be running on it
            give_back()
        warnings.warn(
            f"a streamed response of governor {permit.governor.name!r} was never closed; its permit "
            "was given back when it was collected (use 'async with client.stream(...)' or "
            "'await response.aclose()')",
            ResourceWarning,
            source=self,
            stacklevel=1,
        )

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._inner:
                yield chunk
        except GeneratorExit:
            raise  # the reader stopped early: its choice, not the upstream's
        except BaseException as exc:
            # A read timeout or a dropped connection halfway through the body
            # says more than the status line did; cancellation is ignored.
            self._outcome = self._transport._classify_result(exc)
            raise

    async def aclose(self) -> None:
        try:
            await self._inner.aclose()
        finally:
            if not self._permit.released:
                self._permit.release(self._outcome)
        await self._transport._trim_pool()


class _TransportAttempts(HTTPAttempts):
    """The transport's loop: a response kept holds its permit until it is closed."""

    __slots__ = ("_transport",)

    def __init__(
        self,
        transport: GovernedTransport,
        classify: HTTPClassifier | None,
        *,
        retry: Retry,
        rng: random.Random,
    ) -> None:
        super().__init__(classify, retry=retry, rng=rng)
        self._transport = transport

    def keep(self, value: httpx.Response, permit: PermitMarks, outcome: Outcome) -> None:
        if value.is_closed:
            # The wrapped transport read the body already (a mock, a cache): nothing left to hold.
            permit.release(outcome)
        else:
            value.stream = _GovernedStream(value.stream, permit, outcome, self._transport)  # type: ignore[arg-type]

    async def close(self, value: httpx.Response, *, drain: bool) -> None:
        try:
            if drain:
                await value.aread()  # a small error body: keeps the connection reusable
        finally:
            await value.aclose()


class GovernedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that runs each request under a governor's permit.

    Pass it to ``httpx.AsyncClient(transport=...)``. Event hooks, timeouts,
    redirects, HTTP/2 (``transport=httpx.AsyncHTTPTransport(http2=True, http1=False)``)
    and streaming work unchanged.

    - The permit is taken before the wrapped transport's connection pool and
      released when the response is closed: after the body is read, or when
      a streamed response is closed. Each request is one sample.
    - Outcomes come from `classify_http` unless ``classify`` says otherwise.
    - An ``overload`` response with a ``Retry-After`` header (seconds or an
      HTTP-date) pauses new permits for that origin's governor, capped at
      the `Retry` policy's ``max_retry_after_s`` and lengthened by up to its
      ``retry_after_jitter`` (60 s and 10 % without ``retry``) so that
      paused clients do not return in lockstep. Dates in the past and
      garbage are ignored.
    - With ``retry``, failed attempts are sent again (see below).
    - With ``per_host=True`` each origin (scheme, host, port) gets its own
      governor, made on first use and named ``"<name>@<origin>"`` so that
      its learned state is kept apart. An origin's governor that has been idle
      (no permit held or awaited) for ``host_idle_s``, or the least recently
      used idle ones beyond ``max_hosts``, is closed (its learned state saved
      by `Governor.aclose`) and dropped; the origin's next request makes a new
      one, which loads that state.

    The governor, not the pool, must decide how many requests run: the
    default transport, a `ShardedTransport`, opens as many connections as
    requests are in flight, in pools of 8 (httpcore's pool costs the client
    CPU per response that grows with the square of its size), and idle
    connections beyond the governor's limit and some slack are closed after
    each response. A transport whose pool is smaller than ``max_limit``
    gets a `RuntimeWarning`, since requests would then queue in the pool
    and fail with `httpx.PoolTimeout` (httpx issue #1171). An HTTP/2-only
    transport (``http2=True, http1=False``) is not warned about: it sends
    every request to an origin as a stream of one connection, whatever
    the pool's size.

    Args:
        governor: The governor (or, with ``per_host``, the template whose
            name, environment, policy and store each origin's governor copies).
            None makes ``Governor("http")``.
        transport: The transport to wrap; defaults to `ShardedTransport()`.
        per_host: One governor per origin instead of one for every request.
        classify: Maps a response or an exception to an outcome; returning
            None defers to `classify_http`.
        retry: Retry attempts whose outcome this `aiogovernor.Retry` policy
            retries (by default overloads), with the same policy object as
            ``governed_map``: backoff with full jitter, or the Retry-After
            when the upstream named one; one retry budget per transport.
            Each attempt takes its own permit and is its own sample; a
            request with a one-shot body (an async generator) is never retried.
        max_retry_after_s: Deprecated: pass ``retry=Retry(max_retry_after_s=...)``
            (``Retry(attempts=1, ...)`` for no retries).
        retry_after_jitter: Deprecated: pass ``retry=Retry(retry_after_jitter=...)``.
        governor_factory: With ``per_host``, makes the governor for an
            origin (called with the origin string) instead of copying the template.
        seed: Seeds the jitter, for reproducible tests.
        max_hosts: With ``per_host``, how many origins' governors are kept at
            most (idle ones are dropped, least recently used first); None
            keeps every one.
        host_idle_s: With ``per_host``, an origin's governor unused for this
            many seconds (of the template's clock) is dropped; None never drops
            one for idleness.

    Raises:
        TypeError: If ``transport`` is not an `httpx.AsyncBaseTransport`,
            ``governor`` not a `Governor`, or a callable argument is not callable.
        ValueError: If a number is out of range.
    """

    def __init__(
        self,
        governor: Governor | None = None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        per_host: bool = False,
        classify: HTTPClassifier | None = None,
        max_retry_after_s: float | None = None,
        retry_after_jitter: float | None = None,
        retry: Retry | None = None,
        governor_factory: Callable[[str], Governor] | None = None,
        seed: int | None = None,
        max_hosts: int | None = 1000,
        host_idle_s: float | None = 600.0,
    ) -> None:
        # Governors made here (the default one, one per origin) are closed by `aclose`.
        self._owns_governor = governor is None
        self._max_hosts = None if max_hosts is None else check_int("max_hosts", max_hosts, low=1)
        self._host_idle_s = (
            None if host_idle_s is None else check_float("host_idle_s", host_idle_s, low=0.0, low_open=True)
        )
        if governor is None:
            governor = Governor("http")
        elif not isinstance(governor, Governor):
            raise TypeError(f"governor must be an aiogovernor.Governor or None, got {governor!r}")
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            raise TypeError(f"transport must be an httpx.AsyncBaseTransport, got {transport!r}")
        if classify is not None and not callable(classify):
            raise TypeError(f"classify must be callable, got {classify!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be an aiogovernor.Retry or None, got {retry!r}")
        if governor_factory is not None and not callable(governor_factory):
            raise TypeError(f"governor_factory must be callable, got {governor_factory!r}")
        # Without a retry policy, one attempt; a Retry-After still pauses, capped and jittered by Retry.
        policy = retry if retry is not None else Retry(attempts=1, budget_ratio=None)
        moved: dict[str, float] = {}
        if max_retry_after_s is not None:
            moved["max_retry_after_s"] = check_float("max_retry_after_s", max_retry_after_s, low=0.0)
        if retry_after_jitter is not None:
            moved["retry_after_jitter"] = check_float("retry_after_jitter", retry_after_jitter, low=0.0)
        if moved:
            warnings.warn(
                f"GovernedTransport({', '.join(moved)}=...) is deprecated: the Retry policy caps and "
                f"jitters every Retry-After; pass retry=Retry({', '.join(f'{k}=...' for k in moved)})",
                DeprecationWarning,
                stacklevel=2,
            )
            policy = dataclasses.replace(policy, **moved)  # type: ignore[arg-type]
        self._per_host = bool(per_host)
        self._attempts = _TransportAttempts(self, classify, retry=policy, rng=random.Random(seed))
        self._governor = governor
        # Copied before the template is used, so every origin starts from the same place.
        # Each origin's copy is made by a copier: straight-line code that builds what a deepcopy
        # of the policy as it is now would (a fraction of a deepcopy's or an unpickling's cost).
        self._copy_policy = copier(governor.policy)
        self._factory = governor_factory
        # Least recently used first; with the clock time of each origin's last request.
        self._governors: OrderedDict[str, Governor] = OrderedDict()
        self._used: dict[str, float] = {}
        self._next_sweep = -math.inf
        self._saving: set[asyncio.Task[None]] = set()  # dropped governors being saved (asyncio)
        self._to_close: list[Governor] = []  # dropped governors to save (other loops: trio)

        max_limit = governor.policy.max_limit
        if transport is None:
            transport = ShardedTransport()
        else:
            pool_size = _pool_size(transport)
            if pool_size is not None and pool_size < max_limit:
                warnings.warn(
                    f"the wrapped transport's pool holds {pool_size} connections, fewer than the "
                    f"governor's max_limit ({max_limit}): requests would queue in the pool and fail "
                    "with PoolTimeout instead of waiting for a permit; pass "
                    "limits=httpx.Limits(max_connections=None) to the transport",
                    RuntimeWarning,
                    stacklevel=2,
                )
        self._transport = transport
        self._pools = _connection_pools(transport)
        self._closing: set[httpcore.AsyncConnectionInterface] = set()

    @property
    def transport(self) -> httpx.AsyncBaseTransport:
        """The wrapped transport."""
        return self._transport

    @property
    def governor(self) -> Governor:
        """The governor (with ``per_host``, the template)."""
        return self._governor

    @property
    def governors(self) -> Mapping[str, Governor]:
        """With ``per_host``, the governors made so far, by origin (read-only)."""
        return MappingProxyType(self._governors)

    def governor_for(self, url: httpx.URL | str) -> Governor:
        """The governor that admits requests to ``url`` (made on first use with ``per_host``)."""
        if not self._per_host:
            return self._governor
        origin = origin_of(url)
        governors = self._governors
        gov = governors.get(origin)
        now = self._now()
        if gov is None:
            if self._factory is not None:
                gov = self._factory(origin)
                if not isinstance(gov, Governor):
                    raise TypeError(f"governor_factory must return a Governor, got {gov!r}")
            else:
                # The template's settings (store, clock, classifier, rate ceiling, ...),
                # a fresh copy of its policy as it was configured.
                template = self._governor
                policy = self._copy_policy()
                gov = template.derive(f"{template.name}@{origin}", policy)
            governors[origin] = gov
            self._used[origin] = now
            self._evict(now, keep=origin)
        else:
            governors.move_to_end(origin)
            self._used[origin] = now
            if now >= self._next_sweep:
                self._evict(now, keep=origin)
        return gov

    def _now(self) -> float:
        try:
            return self._governor._now()
        except RuntimeError:  # the default clock, read with no loop running: idleness unknown
            return math.nan

    def _evict(self, now: float, *, keep: str) -> None:
        """Drop idle origins' governors: unused for ``host_idle_s``, or the oldest used past ``max_hosts``."""
        governors, idle_s = self._governors, self._host_idle_s
        over = 0 if self._max_hosts is None else len(governors) - self._max_hosts
        if idle_s is None and over <= 0:
            self._next_sweep = math.inf if idle_s is None else now + idle_s / 4
            return
        cutoff = now - idle_s if idle_s is not None else -math.inf
        victims: list[str] = []
        for origin, gov in governors.items():  # least recently used first: stops early
            if origin == keep:
                continue
            stale = self._used[origin] <= cutoff
            if not stale and len(victims) >= over:
                break
            if gov.inflight == 0 and gov.waiting == 0:
                victims.append(origin)
        for origin in victims:
            self._drop(origin)
        # Idle ones are looked for again a quarter of the idle time later, not on every request.
        self._next_sweep = (now + idle_s / 4 if now == now else -math.inf) if idle_s is not None else math.inf

    def _drop(self, origin: str) -> None:
        gov = self._governors[origin]
        if gov.store is not None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                # No asyncio loop (trio): the next request, or `aclose`, saves it.
                self._to_close.append(gov)
            else:
                task = loop.create_task(gov.aclose())
                self._saving.add(task)
                task.add_done_callback(self._saving.discard)
        del self._governors[origin], self._used[origin]

    def _classify_result(self, result: httpx.Response | BaseException) -> Outcome:
        return self._attempts.classify(self._governor, result)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Take a permit, send the request, and tie the permit to the response's lifetime.

        With ``retry``, an attempt whose outcome the policy retries is closed,
        its permit released (each attempt is its own sample), and the request
        sent again after the policy's delay; the last attempt's response or
        exception is what the caller gets.
        """
        if self._to_close:
            await self._close_dropped()
        return await self._attempts.run(
            self.governor_for(request.url),
            lambda permit, attempt: self._transport.handle_async_request(request),
            # A one-shot body (an async generator) cannot be sent twice.
            once=not isinstance(request.stream, httpx.ByteStream),
        )

    async def _close_dropped(self) -> None:
        dropped, self._to_close = self._to_close, []
        for gov in dropped:
            await gov.aclose()  # never raises for a store failure

    async def aclose(self) -> None:
        """Close the wrapped transport, then the governors this transport made (their state is saved).

        Those are the default ``Governor("http")`` and, with ``per_host``,
        each origin's governor; a governor passed in is yours to close.
        """
        try:
            await self._transport.aclose()
        finally:
            made = list(self._governors.values())
            if self._owns_governor:
                made.append(self._governor)
            for gov in made:
                await gov.aclose()  # shielded, and never raises for a store failure
            # Origins' governors dropped for idleness: saved by now, or saved here.
            await self._close_dropped()
            if self._saving:
                await asyncio.gather(*self._saving, return_exceptions=True)

    async def _trim_pool(self) -> None:
        """Close idle pooled connections beyond what the governor admits at once, plus some slack.

        A governor that once peaked high would otherwise keep that many
        connections open, and httpcore's pool walks all of them on every
        request and response (its cost grows with the square of their number).
        The slack keeps a limit that moves by a step or two from closing and
        reopening connections. Called after each response is closed.
        """
        pools = self._pools()
        if not pools:
            return
        closing = self._closing
        connections = [
            c for pool in pools for c in pool.connections if not c.is_closed() and c not in closing
        ]
        limit = sum(g.limit for g in self._governors.values()) if self._per_host else self._governor.limit
        surplus = len(connections) - (limit + max(2, limit // 4))
        if surplus <= 0:
            return
        # Chosen before the first await, and kept in `_closing` until closed, so that
        # responses closing at the same time do not each close the same surplus.
        # The pool hands requests to the first available connections: close from the end.
        victims = [c for c in reversed(connections) if c.is_idle()][:surplus]
        closing.update(victims)
        try:
            for connection in victims:
                try:
                    # Marks the connection closed before it awaits: the pool never assigns
                    # it again, and drops it from its list on its next pass.
                    await connection.aclose()
                except Exception:  # a socket that fails to close is gone all the same
                    logger.debug("closing an idle pooled connection failed", exc_info=True)
        finally:
            closing.difference_update(victims)


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds a response's ``Retry-After`` asks to wait, or None (absent, garbage, a past date).

    An HTTP-date is measured against the server's own clock when the
    response has a ``Date`` header, so that clock skew between the hosts
    does not count. Parsing is `aiogovernor.parse_retry_after`'s; the result
    is not capped.
    """
    return retry_after_header(response.headers.get("retry-after"), response.headers.get("date"))


def _connection_pools(
    transport: httpx.AsyncBaseTransport,
) -> Callable[[], list[httpcore.AsyncConnectionPool]]:
    """What reads, at each trim, the httpcore pools whose idle connections `GovernedTransport` trims.

    httpx's own transport has one pool; a `ShardedTransport` has one per shard
    (shards made later are read then too), in the order requests fill them,
    so the last shards' idle connections are closed first. This reads httpx's
    private ``AsyncHTTPTransport._pool`` (as `_pool_size` does); what is done
    with the pool is httpcore's public API: ``AsyncConnectionPool.connections``
    and each connection's ``is_idle()``, ``is_closed()`` and ``aclose()``. Any
    other transport (a mock, a wrapper) has none: nothing is trimmed.
    """

    if isinstance(transport, ShardedTransport):
        sharded = transport

        def shard_pools() -> list[httpcore.AsyncConnectionPool]:
            return [pool for shard in sharded.shards if (pool := _connection_pool(shard)) is not None]

        return shard_pools
    pools = [pool] if (pool := _connection_pool(transport)) is not None else []
    return lambda: pools
