"""Two knobs, batch size and concurrency: the default governor with the default chunker, side by side.

The workload: an upstream serving 16 calls at once, each taking 20 ms plus 1 ms per item
(a batch API), in virtual time. Two paths reach it: `governed_batches` (rows handed to a
coroutine in chunks) and `upload_items` (each request's permit carrying its bytes, 1 kB
per item). For each upstream seed, both are run four ways:

- the default governor with the default `AdaptiveChunker` (what a user gets);
- the same chunker under `Fixed(16)` (the limit known in advance);
- the best of the fixed (limit, batch size) pairs (12, 400), (16, 200), (16, 400), (24, 400),
  around the best of a sweep of 8-32 calls x 50-400 items;
- with ``--second-run``, also the default a second time, restored from what the first run
  learned (its limit, chunk size and latency baseline, in a `MemoryStore`): the same job run twice.

It prints each seed's items/s and the ratio of the default to the best pair, then the median
and worst ratio over the seeds.

    .venv/bin/python benchmarks/two_knobs.py                      # 100 000 items, seeds 1-7
    .venv/bin/python benchmarks/two_knobs.py --items 400000 --seeds 5 --paths batches
    .venv/bin/python benchmarks/two_knobs.py --second-run

Virtual time: the figures are deterministic, not timings.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics

import httpx

from aiogovernor import AdaptiveChunker, Governor, governed_batches
from aiogovernor.limits import Fixed, LimitPolicy
from aiogovernor.sim import ServerUpstream, run_virtual
from aiogovernor.state import MemoryStore
from aiogovernor.uploads import UploadBatch, UploadItem, upload_items

PAIRS = ((12, 400), (16, 200), (16, 400), (24, 400))


def upstream(seed: int) -> ServerUpstream:
    return ServerUpstream(workers=16, service_time_s=0.02, per_item_s=0.001, backlog=100_000, seed=seed)


def batches(
    count: int, seed: int, policy: LimitPolicy | None, size: int | None, store: MemoryStore | None = None
) -> float:
    """Items/s of `governed_batches` over ``count`` rows (learning in ``store`` when given)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        serve = upstream(seed)
        gov = Governor("batches", policy, store=store)
        chunker = AdaptiveChunker(clock=loop.time) if size is None else size

        async def call(chunk: list[int]) -> list[int]:
            await serve(len(chunk))
            return chunk

        start = loop.time()
        done = await governed_batches(call, range(count), chunker=chunker, governor=gov)
        assert len(done) == count
        rate = count / (loop.time() - start)
        await gov.aclose()
        return rate

    return run_virtual(main())


def uploads(
    items: list[UploadItem],
    seed: int,
    policy: LimitPolicy | None,
    size: int | None,
    store: MemoryStore | None = None,
) -> float:
    """Items/s of `upload_items` over ``items`` (learning in ``store`` when given)."""

    async def main() -> float:
        loop = asyncio.get_running_loop()
        serve = upstream(seed)

        async def handler(request: httpx.Request) -> httpx.Response:
            await serve(int(request.headers["x-items"]))
            return httpx.Response(201)

        def build(batch: UploadBatch) -> httpx.Request:
            return httpx.Request("POST", "http://up/u", headers={"x-items": str(len(batch.items))})

        gov = Governor("uploads", policy, store=store)
        chunker = AdaptiveChunker(clock=loop.time) if size is None else size
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            start = loop.time()
            report = await upload_items(client, items, build_request=build, governor=gov, chunker=chunker)
        assert len(report.uploaded) == len(items)
        rate = len(items) / (loop.time() - start)
        await gov.aclose()
        return rate

    return run_virtual(main())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--items", type=int, default=100_000, help="items (rows) per run")
    parser.add_argument("--seeds", default="1,2,3,4,5,6,7", help="upstream seeds, comma-separated")
    parser.add_argument("--paths", default="batches,uploads", help="batches, uploads or both")
    parser.add_argument(
        "--second-run", action="store_true", help="also run the default again from what its first run learned"
    )
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    paths = args.paths.split(",")
    items = []
    if "uploads" in paths:
        items = [UploadItem.from_bytes(f"k{i}", b"x" * 1000) for i in range(args.items)]
    print(f"{args.items} items per run; items/s and the default's ratio to the best fixed pair")
    second = " second run | ratio |" if args.second_run else ""
    print(f"| path | seed | default + chunker | chunker, Fixed(16) | best pair | ratio |{second}")
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: | ---: |" if second else ""))
    for path in paths:
        ratios = []
        seconds = []
        for seed in seeds:

            def run(
                policy: LimitPolicy | None,
                size: int | None = None,
                store: MemoryStore | None = None,
                seed: int = seed,
                path: str = path,
            ) -> float:
                if path == "batches":
                    return batches(args.items, seed, policy, size, store)
                return uploads(items, seed, policy, size, store)

            # Interleaved: each seed's ways run one after another.
            store = MemoryStore() if args.second_run else None
            default = run(None, store=store)
            again = run(None, store=store) if store is not None else 0.0
            fixed16 = run(Fixed(16))
            best, pair = max((run(Fixed(limit), size), (limit, size)) for limit, size in PAIRS)
            ratios.append(default / best)
            seconds.append(again / best)
            row = f"| {path} | {seed} | {default:,.0f} | {fixed16:,.0f} | {best:,.0f} {pair} | "
            row += f"{default / best:.3f} |"
            if store is not None:
                row += f" {again:,.0f} | {again / best:.3f} |"
            print(row, flush=True)
        row = f"| {path} | median (worst) | | | | {statistics.median(ratios):.3f} ({min(ratios):.3f}) |"
        if args.second_run:
            row += f" | {statistics.median(seconds):.3f} ({min(seconds):.3f}) |"
        print(row)


if __name__ == "__main__":
    main()
