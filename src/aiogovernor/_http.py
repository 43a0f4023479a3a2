"""HTTP's own signals, the same for every client (httpx, requests, aiohttp): status codes and Retry-After.

The client-independent half of each integration's classifier lives here once,
so that a 503 means the same whatever library sent the request; so do the
two pieces every client's attempts share: a user's classifier in front of the
integration's own, and a response's permit given back once.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from email.utils import parsedate_to_datetime
from typing import TypeVar

from ._permit import PermitMarks
from ._retry import parse_retry_after
from ._samples import Outcome

__all__ = ["HeldPermit", "classify_status", "classify_with_default", "retry_after_header"]

R = TypeVar("R")


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


def classify_with_default(
    classify: Callable[[R], Outcome | None] | None,
    result: R,
    default: Callable[[R], Outcome],
    logger: logging.Logger,
) -> Outcome:
    """One attempt's outcome: the user's ``classify``, else (or when it says None) ``default``; never raises.

    A classifier that raises (or names no outcome) is logged on the integration's
    ``logger`` and ``default`` used: a broken classifier must neither leak a
    permit nor replace the request's own exception.
    """
    if classify is not None:
        try:
            outcome = classify(result)
            if outcome is not None:
                return Outcome(outcome)
        except Exception:
            logger.exception("the classifier failed on %s; using %s", type(result).__name__, default.__name__)
    return default(result)


class HeldPermit:
    """A response's permit and the outcome it will be given back with; released once.

    For a response whose body is read after its attempt ended: the permit
    goes back once, whichever way the body ends.
    """

    __slots__ = ("outcome", "permit")

    def __init__(self, permit: PermitMarks, outcome: Outcome) -> None:
        self.permit = permit
        self.outcome = outcome

    def release(self) -> None:
        if not self.permit.released:
            self.permit.release(self.outcome)


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
