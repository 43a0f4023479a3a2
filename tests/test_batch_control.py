"""Two knobs that help each other: the chunker's batch size and the default governor's limit.

The upstream serves 16 calls at once, each taking 20 ms plus 1 ms per row (a batch API).
Every call tells its permit how many rows it carries, so a larger batch is judged against
the no-load latency of its own size and is not mistaken for queueing. Virtual time.
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from aiogovernor import AdaptiveChunker, Governor, governed_batches
from aiogovernor.limits import Fixed, LimitPolicy
from aiogovernor.sim import ServerUpstream, run_virtual
from aiogovernor.state import MemoryStore
from aiogovernor.uploads import UploadBatch, UploadItem, upload_items

ROWS = 400_000
UPLOAD_ITEMS = 100_000


def rows_per_second(
    policy: LimitPolicy | None, size: int | None = None, *, count: int = ROWS, seed: int = 5
) -> tuple[float, Governor]:
    async def main() -> tuple[float, Governor]:
        loop = asyncio.get_running_loop()
        upstream = ServerUpstream(
            workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=seed
        )
        gov = Governor("batches", policy, store=None)
        chunker = (
            AdaptiveChunker(clock=loop.time)
            if size is None
            else AdaptiveChunker(initial_size=size, min_size=size, max_size=size)
        )

        async def call(chunk: list[int]) -> list[int]:
            await upstream(len(chunk))
            return chunk

        start = loop.time()
        done = await governed_batches(call, range(count), chunker=chunker, governor=gov)
        assert len(done) == count
        return count / (loop.time() - start), gov

    return run_virtual(main())


def test_the_default_governor_and_the_chunker_reach_the_best_fixed_pair() -> None:
    # Around the best pair: more rows per call always helps this upstream, past 16 calls
    # at once nothing does (a sweep of 8-32 calls x 50-400 rows peaks at 16 x 400).
    best = max(
        rows_per_second(Fixed(limit), size)[0] for limit, size in ((12, 400), (16, 200), (16, 400), (24, 400))
    )
    adaptive, gov = rows_per_second(None)
    assert adaptive >= 0.9 * best, (adaptive, best)
    # Both knobs show in the decisions: the window's batch size beside the limit.
    described = [d.describe() for d in gov.decisions if d.window is not None]
    assert any("size=" in line for line in described), described[-3:]
    assert any("at size" in d.reason for d in gov.decisions)
    assert 12 <= gov.limit <= 24, gov.limit


def test_a_cold_first_run_of_governed_batches_reaches_the_best_fixed_pair() -> None:
    # As benchmarks/two_knobs.py runs it: 100 000 rows, a fresh governor and chunker, the
    # start included (slow start from 4 while the batches grow from 1). Before a window of
    # sized calls lasted as long as calls of its size, windows as short as the small
    # batches' calls let the limit climb to 43-63 before the first queued batch came back,
    # and the cuts that followed went down to 9: 0.851-0.864 of the best pair on seeds 1-5.
    ratios = []
    for seed in (1, 2, 3, 4, 5):
        best = max(
            rows_per_second(Fixed(limit), size, count=100_000, seed=seed)[0]
            for limit, size in ((12, 400), (16, 200), (16, 400), (24, 400))
        )
        adaptive, gov = rows_per_second(None, count=100_000, seed=seed)
        ratios.append(adaptive / best)
        limits = [d.new_limit for d in gov.decisions]
        peak = limits.index(max(limits))
        assert min(limits[peak:]) >= 12, limits  # the cuts back stop near the knee (16)
        assert 12 <= gov.limit <= 24, gov.limit
    ratios.sort()
    assert ratios[2] >= 0.9 and ratios[0] >= 0.89, ratios


def items_per_second(
    items: list[UploadItem],
    policy: LimitPolicy | None,
    size: int | None = None,
    store: MemoryStore | None = None,
    seed: int = 5,
) -> float:
    """The uploader on the same upstream: each request's permit carries its bytes (1 000 per item).

    With ``store``, the governor starts from what the last run with that store learned.
    """

    async def main() -> float:
        loop = asyncio.get_running_loop()
        upstream = ServerUpstream(
            workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=seed
        )

        async def handler(request: httpx.Request) -> httpx.Response:
            await upstream(int(request.headers["x-items"]))
            return httpx.Response(201)

        def build(batch: UploadBatch) -> httpx.Request:
            return httpx.Request("POST", "http://up/u", headers={"x-items": str(len(batch.items))})

        gov = Governor("uploads", policy, store=store)
        chunker = (
            AdaptiveChunker(clock=loop.time)
            if size is None
            else AdaptiveChunker(initial_size=size, min_size=size, max_size=size)
        )
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            start = loop.time()
            report = await upload_items(client, items, build_request=build, governor=gov, chunker=chunker)
        assert len(report.uploaded) == len(items)
        if policy is None:
            # Both knobs show in the decisions: the request's bytes beside the limit.
            described = [d.describe() for d in gov.decisions if d.window is not None]
            assert any("size=" in line for line in described), described[-3:]
            assert any("at size" in d.reason for d in gov.decisions)
        rate = len(items) / (loop.time() - start)
        await gov.aclose()
        return rate

    return run_virtual(main())


def uploaded_items(count: int) -> list[UploadItem]:
    return [UploadItem.from_bytes(f"k{i}", b"x" * 1000) for i in range(count)]


def test_uploads_and_governed_batches_behave_alike() -> None:
    # The uploader sizes its permits in bytes, governed_batches in rows: the size bands fall
    # differently (1 000 bytes per item is not a power of two), but the two knobs move the
    # same way, so at the same length the two paths move items at the same rate.
    count = 20_000
    uploads = items_per_second(uploaded_items(count), None)
    batches = rows_per_second(None, count=count)[0]
    assert abs(uploads / batches - 1.0) <= 0.02, (uploads, batches)


def test_uploads_with_an_adaptive_chunker_under_the_default_governor(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIOGOVERNOR_DISABLE_STATE", raising=False)  # the second run restores
    # Over seeds 1-7 of the upstream (benchmarks/two_knobs.py) uploads reach 0.912 of the
    # best fixed pair in the median, 0.900 at worst (0.901 and 0.838 before a window of sized
    # calls lasted as long as calls of its size; 0.862 and 0.744 before slow start): the
    # first ~0.5 s of the ~7.4 s run goes to slow start from 4 while the batches grow, an
    # overshoot to about 28 and the cuts back. Over 400 000 items the start is amortised.
    items = uploaded_items(UPLOAD_ITEMS)
    store = MemoryStore()
    adaptive = items_per_second(items, None, store=store)
    # The best pair of the sweep in the test above (here 24 x 400 ties with it).
    best = items_per_second(items, Fixed(16), 400)
    ratios = [adaptive / best] + [
        items_per_second(items, None, seed=seed) / items_per_second(items, Fixed(16), 400, seed=seed)
        for seed in (6, 7)
    ]
    assert sorted(ratios)[1] >= 0.9 and min(ratios) >= 0.895, ratios
    # The same job run again starts from what the first run learned: its limit, its chunk
    # size and its latency baseline per size, so it measures no baseline at 3 permits first
    # (before the baseline was kept, the second run was the slower one: 0.80 of the pair).
    again = items_per_second(items, None, store=store)
    assert again >= 0.93 * best, (again, best)
