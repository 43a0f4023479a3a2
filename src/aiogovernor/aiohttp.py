"""Govern an aiohttp client: a client middleware that takes a permit per request.

```python
import aiohttp
from aiogovernor import Governor
from aiogovernor.aiohttp import GovernedMiddleware

gov = Governor("api")
async with aiohttp.ClientSession(middlewares=(GovernedMiddleware(gov),)) as session:
    async with session.get("https://api.example.com/items") as r:
        body = await r.read()
```

Needs the ``aiohttp`` extra (aiohttp 3.12 or later, for client middlewares).
The permit is taken before the connector's pool and held until the
response's body is read to the end, or the response released or closed; a
response dropped unread gives it back when collected. Outcomes are HTTP's
own, the same for every client of this library: 429, 503 and timeouts are
``overload``, other 5xx ``error``, other 4xx ``ignored``; a ``Retry-After``
on an overload pauses the governor.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable
from typing import Any, TypeAlias

try:
    import aiohttp
    from aiohttp import ClientHandlerType, ClientRequest, ClientResponse
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"aiogovernor.aiohttp needs the aiohttp extra ({exc.name} is missing): "
        "pip install 'aiogovernor[aiohttp]'"
    ) from exc

from ._attempt import Attempts, Gate
from ._classify import default_classify
from ._governor import Governor
from ._http import HeldPermit, classify_status, classify_with_default, retry_after_header
from ._permit import PermitMarks
from ._retry import Retry
from ._samples import Outcome

__all__ = ["AiohttpClassifier", "GovernedMiddleware", "classify_aiohttp"]

logger = logging.getLogger("aiogovernor.aiohttp")

AiohttpClassifier: TypeAlias = Callable[["ClientResponse | BaseException"], "Outcome | None"]
"""Maps a response, or the exception that ended a request, to an outcome.

None defers to `classify_aiohttp`."""


def classify_aiohttp(result: ClientResponse | BaseException) -> Outcome:
    """The default outcome of a request.

    The status code's, the same rules as every HTTP client here (429 and 503
    ``overload``, other 5xx ``error``, other 4xx ``ignored``); ``overload``
    for a timeout (aiohttp's are `TimeoutError`); else `aiogovernor.default_classify`.
    """
    if isinstance(result, ClientResponse):
        return classify_status(result.status)
    return default_classify(result)  # aiohttp's timeouts are TimeoutError: overload


class _MiddlewareAttempts(Attempts[ClientResponse]):
    __slots__ = ("_classifier",)

    def __init__(self, classify: AiohttpClassifier | None, *, retry: Retry, rng: random.Random) -> None:
        super().__init__(retry=retry, rng=rng)
        self._classifier = classify

    def classify(self, governor: Gate, result: ClientResponse | BaseException) -> Outcome:
        return classify_with_default(self._classifier, result, classify_aiohttp, logger)

    def retry_after_s(self, result: ClientResponse | BaseException) -> float | None:
        if not isinstance(result, ClientResponse):
            return None
        return retry_after_header(result.headers.get("Retry-After"), result.headers.get("Date"))

    def keep(self, value: ClientResponse, permit: PermitMarks, outcome: Outcome) -> None:
        held = HeldPermit(permit, outcome)
        if value.closed:
            held.release()
            return
        # Every way a response ends (its body read to the end, release(), close(), collection
        # of an unclosed one) goes through _cleanup_writer: the permit comes back there.
        cleanup = value._cleanup_writer

        def cleanup_and_release() -> None:
            try:
                cleanup()
            finally:
                held.release()

        value._cleanup_writer = cleanup_and_release  # type: ignore[method-assign]
        weakref.finalize(value, held.release)

    async def close(self, value: ClientResponse, *, drain: bool) -> None:
        try:
            if drain:
                await value.read()  # a small error body: keeps the connection reusable
        finally:
            value.release()


class GovernedMiddleware:
    """An aiohttp client middleware running each request under an (async) governor's permit.

    Pass it to ``aiohttp.ClientSession(middlewares=(GovernedMiddleware(gov),))``.
    Size the connector (``aiohttp.TCPConnector(limit=...)``, 100 by default)
    to at least the policy's ``max_limit`` (or 0 for no bound), so requests
    wait for a permit rather than in the pool.

    Args:
        governor: The `aiogovernor.Governor`; None makes ``Governor("http")``.
        classify: Maps a response or an exception to an outcome; None (or
            None returned) defers to `classify_aiohttp`.
        retry: Retry attempts whose outcome this `aiogovernor.Retry` retries
            (each its own permit and sample). Only requests whose body is
            bytes (or none) are sent again.
        seed: Seeds the jitter.
    """

    def __init__(
        self,
        governor: Governor | None = None,
        *,
        classify: AiohttpClassifier | None = None,
        retry: Retry | None = None,
        seed: int | None = None,
    ) -> None:
        if governor is None:
            governor = Governor("http")
        elif not isinstance(governor, Governor):
            raise TypeError(f"governor must be an aiogovernor.Governor or None, got {governor!r}")
        if classify is not None and not callable(classify):
            raise TypeError(f"classify must be callable, got {classify!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be an aiogovernor.Retry or None, got {retry!r}")
        self._governor = governor
        self._attempts = _MiddlewareAttempts(
            classify,
            retry=retry if retry is not None else Retry(attempts=1, budget_ratio=None),
            rng=random.Random(seed),
        )

    @property
    def governor(self) -> Governor:
        """The governor."""
        return self._governor

    async def __call__(self, request: ClientRequest, handler: ClientHandlerType) -> ClientResponse:
        body: Any = request.body
        resendable = body is None or isinstance(body, bytes | aiohttp.payload.BytesPayload) or body == b""
        return await self._attempts.run(
            self._governor, lambda permit, attempt: handler(request), once=not resendable
        )
