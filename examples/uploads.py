"""Upload 200 files to the local upstream with a governor, a manifest and a progress bar.

    .venv/bin/python examples/uploads.py

The upstream (aiogovernor's test server, in a thread) serves 8 requests at once, refuses past 24
with a 429, and fails 5 % of requests at random; the uploader retries, and the manifest lets a
second run skip everything the first one uploaded.
"""

from __future__ import annotations

import asyncio
import random
import tempfile
from pathlib import Path

import httpx

from aiogovernor import Governor
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig
from aiogovernor.uploads import upload_files


async def main(url: str, folder: Path) -> None:
    rng = random.Random(0)
    paths = []
    for i in range(200):
        path = folder / f"file-{i:03d}.bin"
        path.write_bytes(rng.randbytes(rng.randrange(10_000, 200_000)))
        paths.append(path)
    manifest = folder / "manifest.jsonl"
    gov = Governor("uploads", store=None)  # store=None: the example leaves no learned state behind
    async with httpx.AsyncClient() as client:
        first = await upload_files(client, paths, url=url, governor=gov, manifest=manifest, progress=True)
        print(f"first run: {len(first.uploaded)} uploaded, {len(first.failed)} failed, limit {gov.limit}")
        second = await upload_files(client, paths, url=url, governor=gov, manifest=manifest)
        print(f"second run: {len(second.skipped)} skipped, {len(second.uploaded)} uploaded")


if __name__ == "__main__":
    config = UpstreamConfig(capacity=8, service_time_s=0.02, max_inflight=24, failure_rate=0.05)
    with tempfile.TemporaryDirectory() as tmp, LocalUpstream(config) as upstream:
        asyncio.run(main(f"{upstream.url}/upload", Path(tmp)))
        stored = upstream.state.files
        print(f"server stored {len(stored)} files, none twice: {max(stored.values()) == 1}")
