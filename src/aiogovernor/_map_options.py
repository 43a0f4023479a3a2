"""The options every map form shares, on coroutines or in threads: listed once, checked once.

`aiogovernor.MapOptions` (coroutines) and `aiogovernor.sync.ThreadMapOptions`
(threads) extend them with the governor each kind of map takes, and what
else is their own.
"""

from __future__ import annotations

from typing import TypedDict

from ._progress import ProgressCallback, check_progress
from ._retry import Retry, RetryBudget
from ._validate import check_float

__all__ = ["SharedMapOptions", "check_shared_options"]


class SharedMapOptions(TypedDict, total=False):
    """The keyword options of every map form but the governor (see `aiogovernor.MapOptions`)."""

    retry: Retry | None
    retry_budget: RetryBudget | None
    timeout_s: float | None
    progress: ProgressCallback | bool | None
    seed: int | None


def check_shared_options(options: SharedMapOptions) -> None:
    """A clear error for a shared option of the wrong type or out of range."""
    retry = options.get("retry")
    if retry is not None and not isinstance(retry, Retry):
        raise TypeError(f"retry must be a Retry or None, got {retry!r}")
    retry_budget = options.get("retry_budget")
    if retry_budget is not None and not isinstance(retry_budget, RetryBudget):
        raise TypeError(f"retry_budget must be a RetryBudget or None, got {retry_budget!r}")
    timeout_s = options.get("timeout_s")
    if timeout_s is not None:
        check_float("timeout_s", timeout_s, low=0.0, low_open=True)
    check_progress(options.get("progress"))
