"""Two knobs that help each other: the chunker's batch size and the default governor's limit.

The upstream serves 16 calls at once, each taking 20 ms plus 1 ms per row (a batch API).
Every call tells its permit how many rows it carries, so a larger batch is judged against
the no-load latency of its own size and is not mistaken for queueing. Virtual time.
"""

from __future__ import annotations

import asyncio

import httpx

from aiogovernor import AdaptiveChunker, Governor, governed_batches
from aiogovernor.limits import Fixed, LimitPolicy
from aiogovernor.sim import ServerUpstream, run_virtual
from aiogovernor.uploads import UploadBatch, UploadItem, upload_items

ROWS = 400_000
UPLOAD_ITEMS = 100_000


def rows_per_second(policy: LimitPolicy | None, size: int | None = None) -> tuple[float, Governor]:
    async def main() -> tuple[float, Governor]:
        loop = asyncio.get_running_loop()
        upstream = ServerUpstream(workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=5)
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
        done = await governed_batches(call, range(ROWS), chunker=chunker, governor=gov)
        assert len(done) == ROWS
        return ROWS / (loop.time() - start), gov

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


def test_uploads_with_an_adaptive_chunker_under_the_default_governor() -> None:
    # Each request's permit carries its bytes; the same upstream, 1 000-byte items.
    items = [UploadItem.from_bytes(f"k{i}", b"x" * 1000) for i in range(UPLOAD_ITEMS)]

    def items_per_second(policy: LimitPolicy | None) -> float:
        async def main() -> float:
            loop = asyncio.get_running_loop()
            upstream = ServerUpstream(
                workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=5
            )

            async def handler(request: httpx.Request) -> httpx.Response:
                await upstream(int(request.headers["x-items"]))
                return httpx.Response(201)

            def build(batch: UploadBatch) -> httpx.Request:
                return httpx.Request("POST", "http://up/u", headers={"x-items": str(len(batch.items))})

            gov = Governor("uploads", policy, store=None)
            chunker = AdaptiveChunker(clock=loop.time)
            async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
                start = loop.time()
                report = await upload_items(client, items, build_request=build, governor=gov, chunker=chunker)
            assert len(report.uploaded) == UPLOAD_ITEMS
            return UPLOAD_ITEMS / (loop.time() - start)

        return run_virtual(main())

    # Below the 0.9 of the best fixed (limit, batch size) pair that governed_batches reaches:
    # 100 000 items take ~8 s, of which the start (chunker and limit both growing) is ~2 s;
    # measured 0.85 of Fixed(16) with 400 items per request, 0.91 of the same chunker under
    # Fixed(16) (before sizes were judged: 0.13).
    assert items_per_second(None) >= 0.9 * items_per_second(Fixed(16))
