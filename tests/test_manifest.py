"""The upload manifest: whole lines or a clear error, and skips only for the same destination and content."""

from __future__ import annotations

import errno
import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from aiogovernor import Fixed, Governor
from aiogovernor.uploads import ItemStatus, Manifest, ManifestError, UploadItem, upload_files
from aiogovernor.uploads import _manifest as manifest_module

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiofiles


class Upstream:
    """Accepts every upload and counts the files it received, by name."""

    def __init__(self) -> None:
        self.files: Counter[str] = Counter()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        for name in re.findall(rb'filename="([^"]*)"', body):
            self.files[name.decode()] += 1
        return httpx.Response(201)

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(transport=httpx.MockTransport(self.handle))


def lines(path: Path) -> list[dict[str, Any]]:
    data = path.read_bytes()
    assert not data or data.endswith(b"\n"), "the manifest ends in a partial line"
    return [json.loads(line) for line in data.splitlines()]  # every line parses


class ShortDisk:
    """``os`` for the manifest, on a disk with ``room`` bytes left: a short write, then ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: bytes) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = min(len(data), self.room)
        self.room -= n
        return os.write(fd, bytes(data[:n]))


async def test_a_short_write_is_an_error_and_leaves_no_partial_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [UploadItem.from_bytes(f"k{i}", b"x", filename=f"f{i}") for i in range(6)]
    path = tmp_path / "m.jsonl"
    upstream = Upstream()
    # Room for one line and a half: the second record is cut short.
    monkeypatch.setattr(manifest_module, "os", ShortDisk(room=300))
    async with upstream.client() as client:
        with pytest.raises(ManifestError, match="No space left on device") as caught:
            await upload_files(
                client, items, url="http://up/upload", manifest=path, governor=Governor("u", Fixed(1))
            )
    monkeypatch.undo()
    report = caught.value.report
    assert [r.status for r in report][:2] == [ItemStatus.UPLOADED] * 2  # the second was not recorded
    recorded = lines(path)
    assert [r["key"] for r in recorded] == ["k0"]  # the cut record is gone, nothing after it
    # The rerun skips what was recorded and sends what was not.
    async with upstream.client() as client:
        again = await upload_files(client, items, url="http://up/upload", manifest=path)
    assert [r.key for r in again.skipped] == ["k0"]
    assert len(again.uploaded) == 5
    assert sorted(r["key"] for r in lines(path)) == [f"k{i}" for i in range(6)]


async def test_a_manifest_refuses_records_after_a_failed_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manifest = Manifest(tmp_path / "m.jsonl")
    manifest.load()
    from aiogovernor.uploads import ItemResult

    monkeypatch.setattr(manifest_module, "os", ShortDisk(room=10))
    with pytest.raises(OSError, match="No space left"):
        await manifest.record([ItemResult(key="a", status=ItemStatus.UPLOADED)])
    monkeypatch.undo()
    with pytest.raises(OSError, match="an earlier write failed"):
        await manifest.record([ItemResult(key="b", status=ItemStatus.UPLOADED)])
    manifest.close()
    assert lines(tmp_path / "m.jsonl") == []


async def test_another_jobs_manifest_never_makes_a_run_skip_its_files(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    upstream = Upstream()
    job_a = [UploadItem.from_bytes(f"k{i}", b"A", filename=f"a{i}") for i in range(10)]
    job_b = [UploadItem.from_bytes(f"k{i}", b"B", filename=f"b{i}") for i in range(10)]
    async with upstream.client() as client:
        await upload_files(client, job_a, url="http://up/upload", manifest=path)
        # Same keys, other content: every one is sent.
        other_content = await upload_files(client, job_b, url="http://up/upload", manifest=path)
        # Same keys and content, another destination: every one is sent there.
        other_place = await upload_files(client, job_a, url="http://other/upload", manifest=path)
        # Same everything: skipped.
        same = await upload_files(client, job_a, url="http://up/upload", manifest=path)
    assert len(other_content.uploaded) == 10
    assert len(other_place.uploaded) == 10
    assert len(same.skipped) == 10
    assert upstream.files == Counter({**{f"a{i}": 2 for i in range(10)}, **{f"b{i}": 1 for i in range(10)}})


async def test_a_file_changed_after_its_upload_is_sent_again(tmp_path: Path) -> None:
    paths = []
    for i in range(4):
        p = tmp_path / f"f{i}.bin"
        p.write_bytes(b"one")
        paths.append(p)
    path = tmp_path / "m.jsonl"
    upstream = Upstream()
    async with upstream.client() as client:
        await upload_files(client, paths, url="http://up/upload", manifest=path)
        paths[1].write_bytes(b"two")  # same size: the modification time tells
        st = paths[1].stat()
        os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
        again = await upload_files(client, paths, url="http://up/upload", manifest=path)
    assert [r.key for r in again.uploaded] == [str(paths[1])]
    assert len(again.skipped) == 3
    assert upstream.files["f1.bin"] == 2


async def test_an_old_manifest_keeps_loading(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "m.jsonl"
    old = [{"key": f"k{i}", "status": "uploaded", "reason": None, "attempts": 1, "at": 0.0} for i in range(3)]
    path.write_text("".join(json.dumps(line) + "\n" for line in old))
    items = [UploadItem.from_bytes(f"k{i}", b"x") for i in range(5)]
    upstream = Upstream()
    with caplog.at_level(logging.WARNING, logger="aiogovernor.uploads"):
        async with upstream.client() as client:
            report = await upload_files(client, items, url="http://up/upload", manifest=path)
    assert [r.key for r in report.skipped] == ["k0", "k1", "k2"]
    assert "earlier version" in caplog.text
    new = lines(path)[3:]
    # k3 and k4 upload at once: the manifest records them in the order they finish.
    assert sorted(r["key"] for r in new) == ["k3", "k4"]
    assert all(
        r["destination"] == "POST http://up/upload" and r["fingerprint"].startswith("sha256:") for r in new
    )


async def test_the_manifest_records_no_secret_of_the_url(tmp_path: Path) -> None:
    path = tmp_path / "m.jsonl"
    async with Upstream().client() as client:
        await upload_files(
            client,
            [UploadItem.from_bytes("k", b"x")],
            url="http://user:hunter2@up/upload?token=t0ps3cret",
            manifest=path,
        )
    text = path.read_text()
    assert "hunter2" not in text and "t0ps3cret" not in text
    assert lines(path)[0]["destination"].startswith("POST http://up/upload?sha256:")
