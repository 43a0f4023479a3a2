"""Learned state in Redis: one key per governor, shared by every process and host of a fleet."""

from __future__ import annotations

import builtins
import json
import logging
from typing import TYPE_CHECKING, Any

from aiogovernor._persistence import StateStoreError
from aiogovernor._record import LearnedState
from aiogovernor._validate import check_float

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["RedisStore", "connect_redis", "redis_errors"]

logger = logging.getLogger("aiogovernor.state")


_URL_FORM = "redis://[[user]:password@]host[:port][/db], rediss://... or unix://[[user]:password@]/path"


def _parse(url: object) -> tuple[dict[str, Any] | None, str]:
    """(redis-py's connection arguments, "") for a good URL; (None, what is wrong) otherwise."""
    from urllib.parse import parse_qsl, urlsplit

    if not isinstance(url, str):
        return None, f"a Redis URL must be a string, not {type(url).__name__}"
    from redis.connection import parse_url

    try:
        parts = urlsplit(url)
        if parts.fragment or "#" in url:
            return None, "it has a '#'"
        if "@" in parts.path or any("@" in key for key, _ in parse_qsl(parts.query, True)):
            return None, "it has an '@' after the host"
        kwargs: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
        _ = parts.port  # a port that is not a number raises here, as in redis-py
    except (ValueError, TypeError):
        return None, "it cannot be parsed"
    return kwargs, ""


def _url_parts(url: object) -> dict[str, Any]:
    """The connection arguments ``url`` names, as redis-py reads them; never echoes the URL.

    Stricter than redis-py where it would misread a password silently: a Redis
    URL has no fragment, and no ``@`` after its host, so either means a
    password holding an unencoded ``#``, ``?``, ``/`` or ``@`` (which redis-py
    would take for part of the host, the port or the query).

    Raises:
        ValueError: With a message that quotes no part of ``url``.
    """
    kwargs, problem = _parse(url)
    if kwargs is not None:
        return kwargs
    # Raised here, outside any except block and with the URL gone from the frame: the
    # error must carry neither redis-py's message (which can quote a piece of the
    # password) as its context, nor the URL in the locals of its traceback.
    del url
    raise ValueError(
        f"not a valid Redis URL ({problem}); expected {_URL_FORM}, with '#', '?', '/' and '@' "
        "in a user name or password percent-encoded (%23, %3F, %2F, %40)"
    )


_CREDENTIALS = ("username", "password", "ssl_password", "credential_provider")


def _display(url: str) -> str:
    """``url`` as safe to show: rebuilt from its host, port, path and db, never from the text.

    Every credential form redis-py accepts (user info, ``?password=``,
    ``?username=``, ...) becomes ``***``; other query arguments are left out.
    """
    try:
        kw = _url_parts(url)
    except (ValueError, ImportError):
        return "<invalid Redis URL>"
    scheme = url.split(":", 1)[0].lower()
    secret = "***@" if any(k in kw for k in _CREDENTIALS) or any("pass" in k for k in kw) else ""
    if scheme == "unix":
        db = f"?db={kw['db']}" if "db" in kw else ""
        return f"unix://{secret}{kw.get('path', '')}{db}"
    host = str(kw.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    port = f":{kw['port']}" if "port" in kw else ""
    db = f"/{kw['db']}" if "db" in kw else ""
    return f"{scheme}://{secret}{host}{port}{db}"


def connect_redis(url: str, timeout_s: float) -> Redis:
    """A ``redis.asyncio`` client for ``url`` that gives up after ``timeout_s`` instead of hanging.

    Raises:
        ValueError: For a malformed URL, with a message that quotes none of it.
    """
    try:
        from redis.asyncio import Redis
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the Redis store needs the 'redis' extra: pip install 'aiogovernor[redis]'"
        ) from exc
    try:
        _url_parts(url)
    except ValueError:
        del url  # the traceback's frames must not hold it
        raise
    return Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def redis_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "Redis cannot be reached right now"."""
    from redis.exceptions import ConnectionError, TimeoutError

    return (ConnectionError, TimeoutError, OSError)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    """Learned state in Redis, so every process and host of a fleet starts from the shared limit.

    Each governor is one key, ``<namespace>:<environment>:<name>``, holding a
    JSON record. An unreachable server raises `StateStoreError` from every
    call; a governor logs it, keeps working on its own, and saves again when
    the server is back (the client reconnects by itself). ``redis.asyncio``
    runs on asyncio only.

    It is not written at interpreter exit: its client lives on an event loop
    that is gone by then, so a governor's last changes reach Redis only
    through its debounced saves and ``await gov.aclose()`` (the integrations
    close the governors they make; close yours).

    Args:
        url: The server, as a ``redis://`` URL.
        client: A ``redis.asyncio.Redis`` to use instead of ``url`` (the store
            then leaves closing it to you).
        namespace: The prefix of every key.
        timeout_s: Connect and socket timeout for clients the store makes.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379/0",
        *,
        client: Redis | None = None,
        namespace: str = "aiogovernor",
        timeout_s: float = 2.0,
    ) -> None:
        if not isinstance(namespace, str) or not namespace or ":" in namespace:
            raise ValueError(f"namespace must be a non-empty string without ':', got {namespace!r}")
        check_float("timeout_s", timeout_s, low=0.0, low_open=True)
        self._namespace = namespace
        # Only the URL's safe form is kept: the store's attributes show up in debuggers
        # and in the locals of tracebacks.
        self._shown = "<a client>" if client is not None else _display(url)
        self._owns_client = client is None
        try:
            self._client = client if client is not None else connect_redis(url, timeout_s)
        finally:
            del url  # nor may this frame's locals carry it, should the connection fail
        self._warned: set[str] = set()

    @property
    def client(self) -> Redis:
        """The ``redis.asyncio`` client."""
        return self._client

    def key(self, environment: str, name: str) -> str:
        """The Redis key of ``name`` in ``environment``."""
        return f"{self._namespace}:{environment}:{name}"

    def __repr__(self) -> str:
        return f"RedisStore({self._shown!r}, namespace={self._namespace!r})"

    def _parse(self, key: str, raw: bytes | None) -> tuple[str, str, LearnedState] | None:
        if raw is None:
            return None
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            environment, name = doc.get("environment"), doc.get("name")
            if not isinstance(environment, str) or not isinstance(name, str):
                raise ValueError("no environment and name")
            return environment, name, LearnedState.from_json(doc.get("state"))
        except ValueError as exc:
            if key not in self._warned:
                self._warned.add(key)
                logger.warning("Redis key %s holds no readable learned state (%s); ignoring it", key, exc)
            return None

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        from redis.exceptions import RedisError

        try:
            return await getattr(self._client, method)(*args, **kwargs)
        except redis_errors() as exc:
            raise StateStoreError(f"Redis is unreachable ({exc})") from exc
        except RedisError as exc:  # reachable, but it refused (auth, permissions, a read-only replica)
            raise StateStoreError(f"Redis refused {method} ({type(exc).__name__}: {exc})") from exc

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``, if any.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        key = self.key(environment, name)
        parsed = self._parse(key, await self._call("get", key))
        return parsed[2] if parsed is not None and parsed[:2] == (environment, name) else None

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Keep ``state`` for ``name`` in ``environment``.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        doc = {"environment": environment, "name": name, "state": state.to_json()}
        await self._call("set", self.key(environment, name), json.dumps(doc, allow_nan=False))

    async def save_record(self, environment: str, name: str, record: str) -> None:
        """`save` of a record already turned into JSON text (`LearnedState.to_json_text`).

        What a governor calls: the decisions it keeps are kept as text, joined into the
        record as they are rather than built again as objects at every save.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        doc = f'{{"environment": {json.dumps(environment)}, "name": {json.dumps(name)}, "state": {record}}}'
        await self._call("set", self.key(environment, name), doc)

    async def delete(self, environment: str, name: str) -> bool:
        """Forget ``name`` in ``environment``; return whether it was there.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        return bool(await self._call("delete", self.key(environment, name)))

    async def _entries(self, pattern: str) -> builtins.list[tuple[str, str, LearnedState]]:
        keys: builtins.list[bytes] = []
        cursor = 0
        while True:
            cursor, batch = await self._call("scan", cursor, match=pattern, count=500)
            keys.extend(batch)
            if not cursor:
                break
        entries = []
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            for key, raw in zip(chunk, await self._call("mget", chunk), strict=True):
                parsed = self._parse(key.decode(errors="replace"), raw)
                if parsed is not None:
                    entries.append(parsed)
        return entries

    async def list(self, environment: str) -> dict[str, LearnedState]:
        """Every governor's state in ``environment``.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        pattern = f"{_glob_escape(self._namespace)}:{_glob_escape(environment)}:*"
        return {name: state for env, name, state in await self._entries(pattern) if env == environment}

    async def environments(self) -> builtins.list[str]:
        """The environments holding any state, sorted.

        Raises:
            StateStoreError: When Redis cannot be reached.
        """
        return sorted({env for env, _, _ in await self._entries(f"{_glob_escape(self._namespace)}:*")})

    async def aclose(self) -> None:
        """Close the client, if the store made it."""
        if self._owns_client:
            await self._client.aclose()
