"""HTTP's own signals, the same for every client (httpx, requests, aiohttp): status codes and Retry-After.

The client-independent half of each integration's classifier lives here once,
so that a 503 means the same whatever library sent the request.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

from ._retry import parse_retry_after
from ._samples import Outcome

__all__ = ["classify_status", "retry_after_header"]


def classify_status(code: int) -> Outcome:
    """The outcome an HTTP status code means.

    - 429 Too Many Requests and 503 Service Unavailable → ``overload``;
    - any other 5xx → ``error`` (a server bug is not a reason to lower concurrency);
    - any other 4xx → ``ignored`` (the request was wrong, the upstream is fine);
    - 1xx, 2xx and 3xx → ``ok``.
    """
    if code in (429, 503):
        return Outcome.OVERLOAD
    if code >= 500:
        return Outcome.ERROR
    if code >= 400:
        return Outcome.IGNORED
    return Outcome.OK


def retry_after_header(value: str | None, date: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks to wait, or None (absent, garbage, a past date).

    An HTTP-date is measured against the server's own clock (its ``Date``
    header, when given), so that clock skew between the hosts does not count.
    Parsing is `aiogovernor.parse_retry_after`'s; the result is not capped.
    """
    if value is None:
        return None
    now = None
    if date is not None:
        try:
            now = parsedate_to_datetime(date)
        except (TypeError, ValueError, IndexError, OverflowError):
            now = None
    return parse_retry_after(value, now=now)
