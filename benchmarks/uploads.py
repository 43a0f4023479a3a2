"""Memory of a batched upload: files streamed with aiofiles vs. files read whole.

    .venv/bin/python benchmarks/uploads.py                # 40 files of 20 MB
    .venv/bin/python benchmarks/uploads.py --files 200    # the full 200 x 20 MB (4 GB on disk)

The local upstream runs in its own process (its memory is not counted): it parses each
multipart body as it streams and checks every file's sha256, storing nothing. Peak RSS growth
of this process is sampled every 20 ms while each client uploads the same files:

- `upload_files` under a governor (the default policy): files are read in 256 KiB chunks,
  so memory is bounded by about limit x chunk size, whatever the files' size;
- the common hand-written way: `asyncio.Semaphore(16)` and `client.post(files=...)` with each
  file read whole, so memory grows with concurrency x file size.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import psutil

from aiogovernor import Governor
from aiogovernor.uploads import upload_files


async def peak_rss_growth(job: Callable[[], Awaitable[int]]) -> tuple[float, int, float]:
    """Run ``job`` while sampling RSS; return (peak growth in MB, job's result, seconds)."""
    process = psutil.Process()
    base = process.memory_info().rss
    peak = base
    done = asyncio.Event()

    async def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, process.memory_info().rss)
            await asyncio.sleep(0.02)

    sampler = asyncio.create_task(sample())
    start = time.perf_counter()
    try:
        result = await job()
    finally:
        done.set()
        await sampler
    return (peak - base) / 2**20, result, time.perf_counter() - start


async def governed(url: str, paths: list[Path]) -> int:
    gov = Governor("bench-uploads", store=None)
    async with httpx.AsyncClient(timeout=120) as client:
        report = await upload_files(client, paths, url=url, governor=gov)
    return len(report.uploaded)


async def read_whole(url: str, paths: list[Path], concurrency: int = 16) -> int:
    semaphore = asyncio.Semaphore(concurrency)
    uploaded = 0

    async def one(client: httpx.AsyncClient, path: Path) -> None:
        nonlocal uploaded
        async with semaphore:
            body = path.read_bytes()  # noqa: ASYNC240 - the naive way, on purpose
            digest = hashlib.sha256(body).hexdigest()
            response = await client.post(url, files={"file": (path.name, body)}, data={"sha256": digest})
            uploaded += response.status_code == 200

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(one(client, p) for p in paths))
    return uploaded


def make_files(folder: Path, count: int, size_mb: int) -> list[Path]:
    rng = random.Random(0)
    block = rng.randbytes(2**20)
    paths = []
    for i in range(count):
        path = folder / f"f{i:03d}.bin"
        with path.open("wb") as f:
            f.write(i.to_bytes(8, "big"))  # every file different
            for _ in range(size_mb):
                f.write(block)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=40)
    parser.add_argument("--size-mb", type=int, default=20)
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "aiogovernor.testing.servers", "--capacity", "16", "--service-time-s", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1] + "/upload"
        with tempfile.TemporaryDirectory() as tmp:
            paths = make_files(Path(tmp), args.files, args.size_mb)
            total_mb = args.files * args.size_mb
            print(f"{args.files} files of {args.size_mb} MB ({total_mb} MB)\n")
            print("| client | uploaded | peak RSS growth | MB/s |")
            print("| --- | ---: | ---: | ---: |")
            for name, run in (
                ("upload_files, governed, streamed", governed),
                ("Semaphore(16), files read whole", read_whole),
            ):
                growth, uploaded, seconds = asyncio.run(peak_rss_growth(lambda run=run: run(url, paths)))
                print(f"| {name} | {uploaded}/{args.files} | {growth:.0f} MB | {total_mb / seconds:.0f} |")
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
