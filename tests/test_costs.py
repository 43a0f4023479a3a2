"""What keeps building a governor cheap does not change what it accepts."""

from __future__ import annotations

import httpx
import pytest

from aiogovernor import AIMD, Governor, LatencyAIMD, LimitPolicy
from aiogovernor._validate import conforms
from aiogovernor.httpx import GovernedTransport
from aiogovernor.state import MemoryStore, StateStore


class Halfway:
    """Has some of a policy's members, not all."""

    limit = 1.0

    def update(self, window: object) -> None: ...


@pytest.mark.parametrize("value", [AIMD(), LatencyAIMD(), MemoryStore(), Halfway(), object(), 3, "default"])
def test_conforms_answers_as_isinstance_each_time(value: object) -> None:
    for protocol in (LimitPolicy, StateStore):
        for _ in range(2):  # the second answer comes from the cache
            assert conforms(value, protocol) is isinstance(value, protocol)


def test_a_non_policy_is_still_refused_after_a_policy_of_another_class() -> None:
    Governor("ok", AIMD(), store=None)
    with pytest.raises(TypeError, match="LimitPolicy"):
        Governor("bad", Halfway(), store=None)  # type: ignore[arg-type]


def test_origins_get_their_own_policy_copied_from_the_template() -> None:
    template = Governor("api", AIMD(initial_limit=3, max_limit=40), store=None)
    transport = GovernedTransport(
        template, transport=httpx.MockTransport(lambda r: httpx.Response(200)), per_host=True
    )
    a, b = transport.governor_for("http://a/"), transport.governor_for("http://b/")
    assert a.policy is not b.policy and a.policy is not template.policy
    assert isinstance(a.policy, AIMD) and (a.policy.limit, a.policy.max_limit) == (3.0, 40)
    a.reset_limit(10)
    assert b.policy.limit == 3.0 and template.policy.limit == 3.0
