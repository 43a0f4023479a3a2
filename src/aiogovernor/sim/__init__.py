"""Simulation in virtual time: an event loop whose clock jumps, simulated upstreams, scenarios.

Tune a governor's settings against a model of your upstream in seconds,
and test closed-loop behaviour deterministically:

```python
from aiogovernor.limits import LatencyAIMD
from aiogovernor.sim import KneeUpstream, Scenario, run_scenario, sweep_fixed

knee = Scenario(
    name="knee",
    upstream=lambda: KneeUpstream(capacity=16, service_time_s=0.05),
    duration_s=60,
    settle_s=20,
)
result = run_scenario(knee, LatencyAIMD)
oracle = sweep_fixed(knee, range(8, 25, 2))
print(result.goodput / oracle.goodput, result.mean_limit, oracle.limit)
```
"""

from __future__ import annotations

from ._catalog import noisy_scenarios as noisy_scenarios
from ._catalog import shared_wall_scenario as shared_wall_scenario
from ._catalog import standard_scenarios as standard_scenarios
from ._loop import VirtualTimeEventLoop as VirtualTimeEventLoop
from ._loop import run_virtual as run_virtual
from ._oracle import Oracle as Oracle
from ._oracle import sweep_fixed as sweep_fixed
from ._scenario import Client as Client
from ._scenario import Gate as Gate
from ._scenario import Scenario as Scenario
from ._scenario import ScenarioResult as ScenarioResult
from ._scenario import jain_index as jain_index
from ._scenario import run_scenario as run_scenario
from ._servers import ConnectionWall as ConnectionWall
from ._servers import ServerUpstream as ServerUpstream
from ._servers import TokenBucketUpstream as TokenBucketUpstream
from ._servers import Upstream as Upstream
from ._upstreams import KneeUpstream as KneeUpstream
from ._upstreams import UpstreamError as UpstreamError
from ._upstreams import WallUpstream as WallUpstream

__all__ = [
    "Client",
    "ConnectionWall",
    "Gate",
    "KneeUpstream",
    "Oracle",
    "Scenario",
    "ScenarioResult",
    "ServerUpstream",
    "TokenBucketUpstream",
    "Upstream",
    "UpstreamError",
    "VirtualTimeEventLoop",
    "WallUpstream",
    "jain_index",
    "noisy_scenarios",
    "run_scenario",
    "run_virtual",
    "shared_wall_scenario",
    "standard_scenarios",
    "sweep_fixed",
]
