"""What keeps building a governor and deciding cheap changes neither what it accepts nor what it computes."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import random

import httpx
import pytest

from aiogovernor import AIMD, Governor, LatencyAIMD, LimitPolicy
from aiogovernor._clone import copier
from aiogovernor._validate import conforms
from aiogovernor.httpx import GovernedTransport
from aiogovernor.limits import Adjustment, LatencyBaseline, default_policy, profile
from aiogovernor.limits._baseline import _Pairs
from aiogovernor.state import MemoryStore, StateStore
from aiogovernor.testing import window


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


def _state(obj: object) -> dict[str, object]:
    """Every attribute of a policy (slots and instance dict), its baseline's too."""
    found: dict[str, object] = dict(getattr(obj, "__dict__", {}))
    for klass in type(obj).__mro__:
        for name in klass.__dict__.get("__slots__", ()):
            value = getattr(obj, name)
            found[name] = _state(value) if isinstance(value, LatencyBaseline) else value
    return found


def test_the_default_policy_is_a_fresh_copy_equal_to_a_constructed_one() -> None:
    balanced = profile("balanced")
    expected = LatencyAIMD(
        tolerance=balanced.tolerance,
        backoff_ratio=balanced.backoff_ratio,
        max_decrease=balanced.max_decrease,
        probe_interval_windows=balanced.probe_interval_windows,
        max_step_ratio=balanced.max_step_ratio,
    )
    first = default_policy()
    assert isinstance(first, LatencyAIMD)
    for w in [window(ok=20, limit=4, peak_inflight=4, latency_s=0.01 * (1 + i % 3)) for i in range(30)]:
        first.update(w)  # the first one made learns: the copies after it start from scratch
    second, third = default_policy(), default_policy()
    assert _state(second) == _state(expected) == _state(third)
    assert isinstance(second, LatencyAIMD) and isinstance(third, LatencyAIMD)
    assert second._baseline is not third._baseline
    assert second._baseline._bands is not third._baseline._bands
    # What the first one learned in its lists (made when first used) is not in the copies.
    assert first._delivered and second._delivered is None and third._delivered is None
    assert _state(first) != _state(second)


def test_a_copier_copies_the_object_as_it_was_then_or_deep_copies_it() -> None:
    class Plain:
        def __init__(self) -> None:
            self.items: list[int] = []
            self.pair = (1, 2.0)
            self.inner = AIMD(max_limit=7)

    original = Plain()
    make = copier(original)
    original.items.append(1)
    original.pair = (3, 4.0)
    made = make()
    assert made.items == [] and made.pair == (1, 2.0) and made.inner.max_limit == 7
    assert made.inner is not original.inner and make().items is not made.items

    class Shares:  # one list reached twice: copied whole by deepcopy, which keeps it shared
        def __init__(self) -> None:
            self.a: list[int] = [1]
            self.b = self.a

    shared = copier(Shares())()
    assert shared.a is shared.b and shared.a == [1]


def test_the_baseline_keeps_the_order_sorting_would_give() -> None:
    rng = random.Random(7)
    for sized in (False, True):
        for values in (8, 400):  # many ties, then few
            pairs = _Pairs(13)
            kept: list[tuple[float, float]] = []
            for n in range(300):
                latency = rng.choice([rng.randrange(values) / 7, math.inf]) if n % 17 else -math.inf
                size = float(rng.randrange(1, 4)) if sized and n > 50 else 1.0
                pairs.append(latency, size)
                kept = [*kept, (latency, size)][-13:]
                ordered = sorted(kept)
                assert [pairs.at(k) for k in range(len(pairs))] == ordered
    pairs = _Pairs(3)
    for latency in (0.2, math.nan, 0.1, 0.3):  # no order holds a NaN: sorted whole then
        pairs.append(latency, 1.0)
    assert pairs.at(0) == sorted(zip([0.3, math.nan, 0.1], [1.0] * 3, strict=True))[0]


def test_settings_checked_on_the_common_path_are_still_refused() -> None:
    for bad in (0, True, 10**400, 1.0):
        with pytest.raises(ValueError, match="burst"):
            Governor("g", store=None, burst=bad)  # type: ignore[arg-type]
    Governor("g", store=None, environment="somewhere")
    for env in ("../x", ".hidden", "a:b", "", " x"):
        with pytest.raises(ValueError, match="environment"):
            Governor("g", store=None, environment=env)
    with pytest.raises(TypeError, match="environment"):
        Governor("g", store=None, environment=["x"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="history_size"):
        Governor("g", store=None, history_size=0)
    gov = Governor("g", AIMD(), store=None)
    assert gov.decisions == () and gov.stats().last_decision is None


def test_environment_variables_are_read_for_each_governor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIOGOVERNOR_ENV", "first")
    assert Governor("g", store=None).environment == "first"
    monkeypatch.setenv("AIOGOVERNOR_ENV", "second")
    assert Governor("g", store=None).environment == "second"
    monkeypatch.setenv("AIOGOVERNOR_PROFILE", "aggressive")
    policy = Governor("g", store=None).policy
    assert isinstance(policy, LatencyAIMD) and policy._tolerance == profile("aggressive").tolerance


def test_a_policys_answer_is_an_ordinary_frozen_adjustment() -> None:
    answer = AIMD().update(window(ok=10, limit=4, peak_inflight=4))
    assert type(answer) is Adjustment and answer == Adjustment(8.0, "limit-bound, slow start: x2")
    assert hash(answer) == hash(Adjustment(8.0, "limit-bound, slow start: x2"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.limit = 1.0  # type: ignore[misc]


def test_a_governor_keeps_few_enough_attributes_to_share_its_dict_keys() -> None:
    # Past 29 instance attributes CPython stops sharing a dict's keys with the class's other
    # instances: each governor then weighs ~1.3 KB more, and its attribute loads are slower.
    async def main() -> Governor:
        gov = Governor("shared-keys", store=None)
        for _ in range(50):
            async with gov:
                await asyncio.sleep(0)
        return gov

    gov = asyncio.run(main())
    assert len(vars(gov)) <= 29, sorted(vars(gov))
