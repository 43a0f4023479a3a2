"""`Fixed`: a static limit, the opt-out."""

from __future__ import annotations

from aiogovernor._samples import Window
from aiogovernor._validate import check_int

from ._base import Adjustment, BoundedPolicy

__all__ = ["Fixed"]


class Fixed(BoundedPolicy):
    """A limit that never moves.

    Use it to opt out of adaptation while keeping the governor's sampling,
    statistics and Retry-After pauses.

    Args:
        limit: The number of permits, at least 1.
    """

    name = "fixed"

    def __init__(self, limit: int) -> None:
        check_int("limit", limit, low=1)
        super().__init__(min_limit=limit, max_limit=limit, initial_limit=limit)

    def update(self, window: Window) -> Adjustment:
        """Hold, whatever the window says."""
        return self._hold("fixed limit")

    def __repr__(self) -> str:
        return f"Fixed({self._max_limit})"
