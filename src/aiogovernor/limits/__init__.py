"""Limit policies: plain objects fed windows and asked for a limit.

Every policy here keeps its state in a float and answers one window at a
time; none touches an event loop, so each can be tested with scripted windows.
The window types a policy reads (`Window`, and the `Sample` and
`WindowAggregator` that make one) live here too.
"""

from __future__ import annotations

from aiogovernor._samples import Sample as Sample
from aiogovernor._samples import SizeBand as SizeBand
from aiogovernor._samples import Window as Window
from aiogovernor._samples import WindowAggregator as WindowAggregator

from ._aimd import AIMD as AIMD
from ._base import Adjustment as Adjustment
from ._base import BoundedPolicy as BoundedPolicy
from ._base import LimitPolicy as LimitPolicy
from ._base import gate_limit as gate_limit
from ._baseline import LatencyBaseline as LatencyBaseline
from ._fixed import Fixed as Fixed
from ._gradient import Gradient as Gradient
from ._latency_aimd import LatencyAIMD as LatencyAIMD
from ._profiles import PROFILES as PROFILES
from ._profiles import Profile as Profile
from ._profiles import default_policy as default_policy
from ._profiles import profile as profile
from ._resources import ResourceCeiling as ResourceCeiling
from ._resources import ResourceReading as ResourceReading
from ._resources import psutil_reading as psutil_reading
from ._throughput import ThroughputAIMD as ThroughputAIMD
from ._vegas import Vegas as Vegas

__all__ = [
    "AIMD",
    "Adjustment",
    "BoundedPolicy",
    "Fixed",
    "Gradient",
    "LatencyAIMD",
    "LatencyBaseline",
    "LimitPolicy",
    "PROFILES",
    "Profile",
    "ResourceCeiling",
    "ResourceReading",
    "Sample",
    "SizeBand",
    "ThroughputAIMD",
    "Vegas",
    "Window",
    "WindowAggregator",
    "default_policy",
    "gate_limit",
    "profile",
    "psutil_reading",
]
