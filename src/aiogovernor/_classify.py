"""How exceptions map to outcomes, and the exception that says "slow down"."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable
from typing import TypeAlias

from ._samples import Outcome

__all__ = ["Classifier", "OverloadError", "classify_with", "default_classify", "retry_after_pause_s"]

logger = logging.getLogger("aiogovernor")

Classifier: TypeAlias = Callable[[BaseException], "Outcome | None"]
"""Maps the exception that ended a unit of work to an outcome; None defers to `default_classify`."""


class OverloadError(Exception):
    """Raise it inside ``async with governor:`` to say the upstream is full.

    It counts as an ``overload`` sample; with ``retry_after_s`` the governor
    also pauses new permits for that long (capped by its ``max_pause_s``).

    Args:
        message: What happened.
        retry_after_s: How long the upstream asked callers to wait, if it said.


    Raises:
        TypeError: When ``retry_after_s`` is not a number (a string, a bool).
        ValueError: When it is NaN, infinite, negative or too large for a float.
    """

    def __init__(self, message: str = "upstream overloaded", *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if retry_after_s is not None:
            if isinstance(retry_after_s, bool) or not isinstance(retry_after_s, int | float):
                raise TypeError(
                    f"retry_after_s must be a number of seconds or None, got {type(retry_after_s).__name__}"
                )
            try:
                valid = math.isfinite(retry_after_s) and retry_after_s >= 0
            except OverflowError:  # an int too large for a float
                valid = False
            if not valid:
                raise ValueError(
                    f"retry_after_s must be a finite number >= 0 or None, got {retry_after_s!r:.40}"
                )
        self.retry_after_s = retry_after_s


def default_classify(exc: BaseException) -> Outcome:
    """The default mapping from an exception to an outcome.

    - `OverloadError` and `TimeoutError` (which ``asyncio.TimeoutError`` is) → ``overload``;
    - an exception group → ``overload`` if any member is, else ``error`` if
      any member is, else ``ignored``;
    - anything that is not an `Exception` (``asyncio.CancelledError``,
      trio's ``Cancelled``, ``KeyboardInterrupt``) → ``ignored``;
    - every other exception → ``error``: a bug or a bad request is not a
      reason to lower concurrency.
    """
    if isinstance(exc, OverloadError | TimeoutError):
        return Outcome.OVERLOAD
    if isinstance(exc, BaseExceptionGroup):
        found = {default_classify(e) for e in exc.exceptions}
        for outcome in (Outcome.OVERLOAD, Outcome.ERROR):
            if outcome in found:
                return outcome
        return Outcome.IGNORED
    if not isinstance(exc, Exception):
        return Outcome.IGNORED
    return Outcome.ERROR


def classify_with(classify: Classifier | None, exc: BaseException, governor: str) -> Outcome:
    """A gate's outcome for ``exc``: the user's classifier, else (or when it says None) `default_classify`.

    A classifier that raises is logged (under the ``governor``'s name) and
    the default used: a broken classifier must neither leak a permit nor
    replace the work's own exception. Shared by the async and the thread gate.
    """
    outcome: Outcome | None = None
    if classify is not None:
        try:
            outcome = classify(exc)
            outcome = None if outcome is None else Outcome(outcome)
        except Exception:
            logger.exception("%s: the classifier failed on %r; using the default", governor, exc)
            outcome = None
    return default_classify(exc) if outcome is None else outcome


def retry_after_pause_s(exc: OverloadError, governor: str, environment: str) -> float | None:
    """The pause an `OverloadError` asks for: its ``retry_after_s`` as seconds, or None.

    `OverloadError` checks ``retry_after_s`` when made, but the attribute can
    be set afterwards (or by a subclass), and a gate reads it on the way out
    of a block, where nothing may raise: a value that is no number of seconds
    is logged (under the gate's name) and ignored. Shared by both gates.
    """
    value: object = exc.retry_after_s
    if value is None:
        return None
    seconds = math.nan
    if isinstance(value, int | float) and not isinstance(value, bool):
        with contextlib.suppress(OverflowError):  # an int too large for a float
            seconds = float(value)
    if not (math.isfinite(seconds) and seconds >= 0):
        text = repr(value)
        logger.warning(
            "%s[%s]: ignoring an OverloadError's retry_after_s, which is not a number of seconds: %s",
            governor,
            environment,
            text if len(text) <= 40 else text[:37] + "...",
        )
        return None
    return seconds
