"""Renamed and moved names keep working, with a DeprecationWarning naming the new one."""

from __future__ import annotations

import asyncio
import warnings

import pytest

import aiogovernor.fleet
import aiogovernor.state
from aiogovernor import Fixed, Governor


def test_governor_stats_decisions_is_a_deprecated_alias() -> None:
    async def main() -> None:
        gov = Governor("t", Fixed(2), store=None)
        gov.reset_limit(2)
        stats = gov.stats()
        assert stats.decision_count == 1
        with pytest.warns(DeprecationWarning, match="decision_count"):
            assert stats.decisions == 1

    asyncio.run(main())


def test_fleet_ceiling_moved_and_its_old_path_warns() -> None:
    with pytest.warns(DeprecationWarning, match=r"aiogovernor\.fleet"):
        old = aiogovernor.state.FleetCeiling
    assert old is aiogovernor.fleet.FleetCeiling
    with pytest.warns(DeprecationWarning, match="FleetPermit moved"):
        assert aiogovernor.state.FleetPermit is aiogovernor.fleet.FleetPermit
    with warnings.catch_warnings(), pytest.raises(AttributeError):
        aiogovernor.state.NoSuchThing  # noqa: B018
