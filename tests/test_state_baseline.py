"""The default policy's latency baseline is kept with the learned limit: a restored governor needs no probe.

Without it a governor restored at its learned limit first measured the no-load latency
at the probe limit (3 permits) for a couple of seconds. Virtual time, against a server
of 16 workers, 20 ms a call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time

import pytest

from aiogovernor import AdaptiveChunker, Governor, governed_batches
from aiogovernor.limits import LatencyAIMD, ResourceCeiling
from aiogovernor.sim import ServerUpstream, run_virtual
from aiogovernor.state import BaselineBand, LearnedState, MemoryStore

PROBE = "no latency baseline: measure it at the probe limit"


@pytest.fixture(autouse=True)
def _persistence_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)


def run(store: MemoryStore, *, seconds: float = 3.0, service_time_s: float = 0.02) -> Governor:
    """One run of 40 callers for ``seconds`` of virtual time; the governor is closed (saved) after."""

    async def main() -> Governor:
        loop = asyncio.get_running_loop()
        upstream = ServerUpstream(workers=16, service_time_s=service_time_s, backlog=10_000, seed=3)
        gov = Governor("api", environment="test", store=store, history_size=1000)
        end = loop.time() + seconds

        async def caller() -> None:
            while loop.time() < end:
                async with gov:
                    await upstream()

        await asyncio.gather(*(caller() for _ in range(40)))
        await gov.aclose()
        return gov

    return run_virtual(main())


def reasons(gov: Governor) -> list[str]:
    return [d.reason for d in gov.decisions]


def lowest_after_restore(gov: Governor) -> int:
    return min(d.new_limit for d in gov.decisions[1:])


def test_a_restored_governor_starts_at_its_learned_limit_without_a_probe() -> None:
    store = MemoryStore()
    first = run(store)
    assert PROBE not in reasons(first)  # a cold start from 4 grows: no probe needed
    state = asyncio.run(store.load("test", "api"))
    assert state is not None and state.latency_baseline, state
    (band,) = state.latency_baseline  # plain calls: one band, size 1
    assert band.size == 1.0 and 0.02 <= band.latency_s <= 0.03, band
    assert abs(band.measured_at - time.time()) < 60
    assert 12 <= state.limit <= 24, state.limit

    second = run(store)
    assert "restored learned limit" in second.decisions[0].reason
    assert not any("probe limit" in r or "measure" in r for r in reasons(second)), reasons(second)[:5]
    # It starts where the last run ended and stays near the knee: never down at the probe limit.
    assert lowest_after_restore(second) >= 12, [(d.new_limit, d.reason) for d in second.decisions[:8]]


def test_without_a_kept_baseline_it_is_measured_at_the_probe_limit() -> None:
    # A record from before the baseline was kept (or one that lost it) still works:
    # the limit is restored, and the baseline measured first.
    store = MemoryStore()
    asyncio.run(
        store.save("test", "api", LearnedState(limit=16.0, policy="latency-aimd", updated_at=time.time()))
    )
    gov = run(store, seconds=2.0)
    assert PROBE in reasons(gov)
    assert lowest_after_restore(gov) == 3


def test_a_stale_baseline_is_measured_again() -> None:
    store = MemoryStore()
    run(store)
    state = asyncio.run(store.load("test", "api"))
    assert state is not None
    two_hours_ago = tuple(
        dataclasses.replace(b, measured_at=time.time() - 7200) for b in state.latency_baseline
    )
    asyncio.run(store.save("test", "api", dataclasses.replace(state, latency_baseline=two_hours_ago)))
    gov = run(store, seconds=2.0)
    assert PROBE in reasons(gov)
    # The new measurement is what the next save keeps, stamped now.
    saved = asyncio.run(store.load("test", "api"))
    assert saved is not None and all(abs(b.measured_at - time.time()) < 60 for b in saved.latency_baseline)


def test_a_baseline_that_reads_far_too_low_is_measured_again_after_one_cut() -> None:
    # The upstream got three times slower since the baseline was kept (another host, a
    # heavier day): the learned baseline would read every window as queueing. The first
    # reading is cut on (a learned limit can lie past the knee); the next one, below the
    # cut, takes the baseline for stale.
    store = MemoryStore()
    run(store)
    slower = run(store, seconds=3.0, service_time_s=0.06)
    stale = [r for r in reasons(slower) if "learned latency baseline reads" in r]
    assert stale and "measure it again at the probe limit" in stale[0], reasons(slower)[:5]
    # Measured again, it returns to the learned limit and holds the knee: no cascade of cuts.
    back = next(i for i, d in enumerate(slower.decisions) if "measured; back to" in d.reason)
    after = [d.new_limit for d in slower.decisions[back:]]
    assert min(after) >= 14, [(d.new_limit, d.reason) for d in slower.decisions[:12]]
    assert 14 <= slower.limit <= 24, slower.limit


def test_the_baseline_is_kept_per_call_size_and_a_second_batch_run_starts_at_full_speed() -> None:
    def batches(store: MemoryStore) -> tuple[float, Governor]:
        async def main() -> tuple[float, Governor]:
            loop = asyncio.get_running_loop()
            upstream = ServerUpstream(
                workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=5
            )
            gov = Governor("batches", environment="test", store=store)

            async def call(chunk: list[int]) -> list[int]:
                await upstream(len(chunk))
                return chunk

            start = loop.time()
            await governed_batches(
                call, range(40_000), chunker=AdaptiveChunker(clock=loop.time), governor=gov
            )
            elapsed = loop.time() - start
            await gov.aclose()
            return 40_000 / elapsed, gov

        return run_virtual(main())

    store = MemoryStore()
    cold, _ = batches(store)
    state = asyncio.run(store.load("test", "batches"))
    assert state is not None and state.chunk_size is not None
    sizes = [b.size for b in state.latency_baseline]
    assert len(sizes) >= 3 and max(sizes) >= 100, state.latency_baseline  # the chunker's sizes
    warm, gov = batches(store)
    assert not any("measure" in r for r in reasons(gov)), reasons(gov)[:5]
    assert warm > 1.05 * cold, (warm, cold)


def test_the_baseline_survives_a_policy_wrapper_and_the_json_record() -> None:
    policy = ResourceCeiling(LatencyAIMD(), cpu_target_percent=80.0, read=lambda: (0.0, 0.0))
    store = MemoryStore()
    band = BaselineBand(size=1.0, latency_s=0.021, measured_at=time.time())
    state = LearnedState(limit=16.0, policy="latency-aimd", updated_at=time.time(), latency_baseline=(band,))
    # Human-readable in the file, and read back the same.
    text = state.to_json_text()
    assert '"latency_baseline": [{"size": 1.0, "latency_s": 0.021, "measured_at": ' in text
    assert LearnedState.from_json(json.loads(text)) == state
    asyncio.run(store.save("test", "api", state))

    async def main() -> Governor:
        gov = Governor("api", policy, environment="test", store=store)
        await gov.restore()
        return gov

    gov = run_virtual(main())
    assert gov.limit == 16
    assert isinstance(policy.inner, LatencyAIMD) and policy.inner.baseline_s == 0.021


def test_a_record_from_before_the_baseline_was_kept_reads_as_having_none() -> None:
    old = {"schema_version": 1, "limit": 16.0, "policy": "latency-aimd", "updated_at": 0.0, "sample_count": 3}
    state = LearnedState.from_json(old)
    assert state.latency_baseline == () and state.limit == 16.0
    assert LearnedState.from_json({**old, "latency_baseline": None}).latency_baseline == ()


def test_bad_baseline_bands_are_refused() -> None:
    with pytest.raises(ValueError, match="latency_s"):
        BaselineBand(size=1.0, latency_s=0.0, measured_at=0.0)
    with pytest.raises(ValueError, match="size"):
        BaselineBand(size=0.5, latency_s=0.1, measured_at=0.0)
    record = LearnedState(limit=4.0, policy="p", updated_at=0.0).to_json()
    with pytest.raises(ValueError, match="latency_baseline"):
        LearnedState.from_json({**record, "latency_baseline": {"size": 1}})
    with pytest.raises(ValueError, match="size"):
        LearnedState.from_json(
            {**record, "latency_baseline": [{"size": "big", "latency_s": 1, "measured_at": 0}]}
        )
