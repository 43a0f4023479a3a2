"""Limit policies: plain objects fed windows and asked for a limit.

Every policy here keeps its state in a float and answers one window at a
time; none touches an event loop, so each can be tested with scripted windows.
"""

from __future__ import annotations

from ._aimd import AIMD as AIMD
from ._base import Adjustment as Adjustment
from ._base import BoundedPolicy as BoundedPolicy
from ._base import LimitPolicy as LimitPolicy
from ._base import gate_limit as gate_limit
from ._fixed import Fixed as Fixed
from ._throughput import ThroughputAIMD as ThroughputAIMD

__all__ = [
    "AIMD",
    "Adjustment",
    "BoundedPolicy",
    "Fixed",
    "LimitPolicy",
    "ThroughputAIMD",
    "default_policy",
    "gate_limit",
]


def default_policy() -> LimitPolicy:
    """A new instance of the policy a governor uses when given none."""
    return AIMD()
