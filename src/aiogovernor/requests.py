"""Govern a ``requests.Session``: an adapter that takes a thread gate's permit per request.

```python
import requests
from aiogovernor import sync
from aiogovernor.requests import GovernedAdapter

gov = sync.Governor("api")
session = requests.Session()
session.mount("https://", GovernedAdapter(gov))
session.mount("http://", GovernedAdapter(gov))
```

Needs the ``requests`` extra. The permit is taken before the connection pool
and held until the response's body is consumed or the response closed (a
``stream=True`` download keeps it while it streams; a response dropped
unread gives it back when collected). Outcomes are HTTP's own, the same for
every client of this library (`aiogovernor.httpx.classify_http`'s rules):
429, 503 and timeouts are ``overload``, other 5xx ``error``, other 4xx
``ignored``; a ``Retry-After`` on an overload pauses the governor.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeAlias

try:
    import requests
    import urllib3
    from requests.adapters import HTTPAdapter
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"aiogovernor.requests needs the requests extra ({exc.name} is missing): "
        "pip install 'aiogovernor[requests]'"
    ) from exc

from ._attempt import Attempts, Gate
from ._classify import default_classify
from ._http import HeldPermit, classify_status, classify_with_default, retry_after_header
from ._permit import PermitMarks
from ._retry import Retry, RetryBudget
from ._samples import Outcome
from .sync import Governor

__all__ = ["GovernedAdapter", "RequestsClassifier", "classify_requests"]

logger = logging.getLogger("aiogovernor.requests")

RequestsClassifier: TypeAlias = Callable[["requests.Response | BaseException"], "Outcome | None"]
"""Maps a response, or the exception that ended a request, to an outcome.

None defers to `classify_requests`."""


def classify_requests(result: requests.Response | BaseException) -> Outcome:
    """The default outcome of a request.

    The status code's, the same rules as every HTTP client here (429 and 503
    ``overload``, other 5xx ``error``, other 4xx ``ignored``); ``overload``
    for a timeout (`requests.Timeout`, urllib3's timeouts); else
    `aiogovernor.default_classify`.
    """
    if isinstance(result, requests.Response):
        return classify_status(result.status_code)
    if isinstance(result, requests.Timeout | urllib3.exceptions.TimeoutError):
        return Outcome.OVERLOAD
    if isinstance(result, requests.ConnectionError) and isinstance(
        result.args[0] if result.args else None, urllib3.exceptions.ReadTimeoutError
    ):
        return Outcome.OVERLOAD  # a read timeout halfway through a streamed body
    return default_classify(result)


class _GovernedRaw:
    """The response's urllib3 body, giving the permit back when it is read to the end or closed."""

    def __init__(self, raw: Any, held: HeldPermit, classify: Callable[[BaseException], Outcome]) -> None:
        self._raw = raw
        self._held = held
        self._classify = classify

    def __getattr__(self, name: str) -> Any:
        return getattr(self._raw, name)

    def stream(self, amt: int | None = 2**16, decode_content: bool | None = None) -> Iterator[bytes]:
        try:
            yield from self._raw.stream(amt, decode_content=decode_content)
        except GeneratorExit:
            raise  # the reader stopped early: its choice; closing the response releases
        except BaseException as exc:
            self._held.outcome = self._classify(exc)
            self._held.release()
            raise
        self._held.release()

    def read(self, *args: Any, **kwargs: Any) -> Any:
        try:
            data = self._raw.read(*args, **kwargs)
        except BaseException as exc:
            self._held.outcome = self._classify(exc)
            self._held.release()
            raise
        if not data or self._raw.isclosed():
            self._held.release()
        return data

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            self._held.release()

    def release_conn(self) -> None:
        try:
            self._raw.release_conn()
        finally:
            self._held.release()


class _AdapterAttempts(Attempts[requests.Response]):
    __slots__ = ("_classifier",)

    def __init__(
        self,
        classify: RequestsClassifier | None,
        *,
        retry: Retry,
        budget: RetryBudget | None,
        rng: random.Random,
    ) -> None:
        super().__init__(retry=retry, budget=budget, rng=rng)
        self._classifier = classify

    def classify(self, governor: Gate, result: requests.Response | BaseException) -> Outcome:
        return self.outcome_of(result)

    def outcome_of(self, result: requests.Response | BaseException) -> Outcome:
        return classify_with_default(self._classifier, result, classify_requests, logger)

    def retry_after_s(self, result: requests.Response | BaseException) -> float | None:
        if not isinstance(result, requests.Response):
            return None
        return retry_after_header(result.headers.get("retry-after"), result.headers.get("date"))

    def keep(self, value: requests.Response, permit: PermitMarks, outcome: Outcome) -> None:
        held = HeldPermit(permit, outcome)
        raw = value.raw
        if raw is None or getattr(value, "_content_consumed", False):
            held.release()
            return
        value.raw = _GovernedRaw(raw, held, self.outcome_of)
        # A response dropped unread: its permit comes back when it is collected.
        weakref.finalize(value, held.release)

    def close_blocking(self, value: requests.Response) -> None:
        try:
            value.content  # noqa: B018 - a small error body: read it so the connection is reused
        except Exception:
            pass
        finally:
            value.close()


class GovernedAdapter(HTTPAdapter):
    """A `requests` transport adapter that runs each request under a thread gate's permit.

    Mount it on a ``requests.Session`` for the schemes to govern. Timeouts,
    redirects (each hop is a request, with its own permit), ``stream=True``
    and sessions shared by many threads work unchanged.

    Args:
        governor: An `aiogovernor.sync.Governor`; None makes ``sync.Governor("http")``.
        classify: Maps a response or an exception to an outcome; None (or
            None returned) defers to `classify_requests`.
        retry: Retry attempts whose outcome this `aiogovernor.Retry` retries
            (each attempt its own permit and sample; the Retry-After, capped
            and jittered, or backoff between them). A body that cannot be
            sent twice (a generator, a file) is never retried.
        seed: Seeds the jitter.
        **kwargs: Passed to `requests.adapters.HTTPAdapter` (``pool_maxsize``
            defaults to the policy's ``max_limit``, so threads never queue in the pool).
    """

    def __init__(
        self,
        governor: Governor | None = None,
        *,
        classify: RequestsClassifier | None = None,
        retry: Retry | None = None,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if governor is None:
            governor = Governor("http")
        elif not isinstance(governor, Governor):
            raise TypeError(f"governor must be an aiogovernor.sync.Governor or None, got {governor!r}")
        if classify is not None and not callable(classify):
            raise TypeError(f"classify must be callable, got {classify!r}")
        if retry is not None and not isinstance(retry, Retry):
            raise TypeError(f"retry must be an aiogovernor.Retry or None, got {retry!r}")
        policy = retry if retry is not None else Retry(attempts=1, budget_ratio=None)
        self._governor = governor
        self._attempts = _AdapterAttempts(
            classify, retry=policy, budget=policy.new_budget(), rng=random.Random(seed)
        )
        kwargs.setdefault("pool_maxsize", governor.policy.max_limit)
        super().__init__(**kwargs)

    @property
    def governor(self) -> Governor:
        """The thread gate."""
        return self._governor

    def send(
        self,
        request: requests.PreparedRequest,
        stream: bool = False,
        timeout: float | tuple[float, float] | tuple[float, None] | None = None,
        verify: bool | str = True,
        cert: bytes | str | tuple[bytes | str, bytes | str] | None = None,
        proxies: Mapping[str, str] | None = None,
    ) -> requests.Response:
        """Take a permit, send, and tie the permit to the response's body."""
        parent = super().send

        def attempt(permit: PermitMarks, number: int) -> requests.Response:
            return parent(request, stream=stream, timeout=timeout, verify=verify, cert=cert, proxies=proxies)

        return self._attempts.run_blocking(
            self._governor, attempt, once=not isinstance(request.body, bytes | str | None)
        )
