"""Uploads against a real local upstream (starlette on uvicorn, in a thread), in real time, on asyncio.

aiofiles runs on asyncio's executor, so these tests run on asyncio only.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import httpx
import pytest

from aiogovernor import AIMD, Fixed, Governor, Outcome, Retry
from aiogovernor.httpx import GovernedTransport
from aiogovernor.testing.servers import LocalUpstream, UpstreamConfig
from aiogovernor.uploads import (
    ItemResult,
    ItemStatus,
    Manifest,
    ManifestError,
    UploadBatch,
    UploadItem,
    upload_files,
    upload_items,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # real time: a real server


@pytest.fixture
def upstream() -> Iterator[LocalUpstream]:
    config = UpstreamConfig(capacity=16, service_time_s=0.0, max_inflight=48, retry_after="0", seed=7)
    with LocalUpstream(config) as up:
        yield up


def _files(folder: Path, n: int, *, seed: int = 0, size: int = 300) -> list[Path]:
    rng = random.Random(seed)
    paths = []
    for i in range(n):
        path = folder / f"f{i:04d}.bin"
        path.write_bytes(rng.randbytes(size + rng.randrange(size)))
        paths.append(path)
    return paths


async def test_a_thousand_files_against_random_failures_are_all_accounted_for(
    upstream: LocalUpstream, tmp_path: Path
) -> None:
    upstream.config.failure_rate = 0.15
    paths = _files(tmp_path, 1000)
    gov = Governor("uploads", AIMD(max_limit=32))
    # No retry budget: 15% failures need about as many retries (0.18 per request) as the default
    # budget earns (0.2), so whether it runs dry depended on the order responses came back in.
    # Without it, an item fails only once its four attempts all failed, which is checked exactly.
    retry = Retry(attempts=4, retry_on=frozenset({Outcome.OVERLOAD, Outcome.ERROR}), budget_ratio=None)
    async with httpx.AsyncClient() as client:
        report = await upload_files(
            client, paths, url=f"{upstream.url}/upload", governor=gov, chunker=4, seed=1, retry=retry
        )
    assert len(report) == 1000 and [r.key for r in report] == [str(p) for p in paths]
    assert {r.status for r in report} <= {ItemStatus.UPLOADED, ItemStatus.FAILED}
    for r in report.failed:
        assert r.reason and r.reason.startswith("HTTP 500") and r.attempts == 4
    uploaded = {Path(r.key).name for r in report.uploaded}
    assert uploaded == set(upstream.state.files)  # exactly what the server stored
    assert all(n == 1 for n in upstream.state.files.values())  # none twice
    # Retries did their job: every 500 was retried except each failed batch's fourth.
    assert upstream.state.failed > 0 and upstream.state.rejected == 0
    assert report.requests == upstream.state.requests == 250 + upstream.state.failed - len(report.failed) // 4
    assert len(report.uploaded) >= 990
    assert upstream.state.checksum_failures == 0
    assert gov.inflight == 0


async def test_a_resumed_run_uploads_only_the_rest(upstream: LocalUpstream, tmp_path: Path) -> None:
    paths = _files(tmp_path, 30)
    manifest = tmp_path / "state" / "manifest.jsonl"
    async with httpx.AsyncClient() as client:
        first = await upload_files(client, paths[:12], url=f"{upstream.url}/upload", manifest=manifest)
        assert len(first.uploaded) == 12
        # A crash mid-write leaves a torn last line: it is ignored, and the next line starts fresh.
        with manifest.open("ab") as f:
            f.write(b'{"key": "torn')
        second = await upload_files(client, paths, url=f"{upstream.url}/upload", manifest=manifest)
    assert [r.key for r in second.skipped] == [str(p) for p in paths[:12]]
    assert [r.key for r in second.uploaded] == [str(p) for p in paths[12:]]
    assert all(n == 1 for n in upstream.state.files.values()) and len(upstream.state.files) == 30
    assert Manifest(manifest).load() == {str(p) for p in paths}
    assert oct(manifest.stat().st_mode & 0o777) == "0o600"
    for line in manifest.read_text().splitlines()[-18:]:
        assert json.loads(line)["status"] == "uploaded"


async def test_checksums_are_verified_server_side(upstream: LocalUpstream, tmp_path: Path) -> None:
    item = UploadItem.from_bytes("k", b"payload")

    def lying(batch: UploadBatch) -> httpx.Request:
        body = b"".join(
            [
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="k"\r\n\r\npayload\r\n',
                b'--b\r\nContent-Disposition: form-data; name="sha256"\r\n\r\n',
                hashlib.sha256(b"other").hexdigest().encode(),
                b"\r\n--b--\r\n",
            ]
        )
        return httpx.Request(
            "POST",
            f"{upstream.url}/upload",
            content=body,
            headers={"Content-Type": "multipart/form-data; boundary=b"},
        )

    async with httpx.AsyncClient() as client:
        bad = await upload_items(client, [item], build_request=lying)
        good = await upload_files(client, [item], url=f"{upstream.url}/upload")
    assert bad.failed[0].reason == "HTTP 422" and bad.failed[0].attempts == 1  # a 4xx is not retried
    assert upstream.state.checksum_failures == 1
    assert good.uploaded[0].key == "k" and upstream.state.files["k"] == 1


async def test_bad_items_fail_alone_and_the_batch_goes_on(
    upstream: LocalUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths: list[str | os.PathLike[str]] = [*_files(tmp_path, 6)]
    locked = tmp_path / "locked.bin"
    locked.write_bytes(b"secret")
    vanishing = tmp_path / "vanishing.bin"
    vanishing.write_bytes(b"here at stat time")
    bad = [tmp_path / "missing.bin", tmp_path, locked, vanishing]
    real_open = __import__("aiofiles").open

    def failing_open(path: object, *args: object, **kwargs: object) -> object:
        if Path(str(path)) == locked:
            raise PermissionError(13, "Permission denied")
        if Path(str(path)) == vanishing:
            raise FileNotFoundError(2, "No such file or directory")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("aiofiles.open", failing_open)
    async with httpx.AsyncClient() as client:
        report = await upload_files(client, [*bad, *paths], url=f"{upstream.url}/upload", chunker=3)
    reasons = {Path(r.key).name: r.reason for r in report.failed}
    assert reasons == {
        "missing.bin": "file not found",
        tmp_path.name: "is a directory",
        "locked.bin": "cannot read: Permission denied",
        "vanishing.bin": "cannot read: No such file or directory",
    }
    assert len(report.uploaded) == 6 and set(upstream.state.files) == {Path(p).name for p in paths}


async def test_bad_arguments_are_refused_clearly(upstream: LocalUpstream) -> None:
    async with httpx.AsyncClient(transport=GovernedTransport()) as governed, httpx.AsyncClient() as plain:
        with pytest.raises(ValueError, match="GovernedTransport"):
            await upload_files(governed, [], url=upstream.url)
        with pytest.raises(TypeError, match="client"):
            await upload_files("client", [], url=upstream.url)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="duplicate"):
            await upload_files(plain, ["a", "a"], url=upstream.url)
        with pytest.raises(ValueError, match="chunker"):
            await upload_files(plain, ["a"], url=upstream.url, chunker=0)
        with pytest.raises(TypeError, match="chunker"):
            await upload_files(plain, ["a"], url=upstream.url, chunker="4")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="unexpected keyword argument 'batchsize'"):
            await upload_files(plain, ["a"], url=upstream.url, batchsize=4)  # type: ignore[call-arg]
        # The old name still works, with a warning.
        with pytest.warns(DeprecationWarning, match="chunker"), pytest.raises(ValueError, match="batch_size"):
            await upload_files(plain, ["a"], url=upstream.url, batch_size=0)
        with pytest.raises(TypeError, match="path"):
            await upload_files(plain, [3], url=upstream.url)  # type: ignore[list-item]


async def test_an_adaptive_chunker_sets_how_many_files_a_request_carries(
    upstream: LocalUpstream, tmp_path: Path
) -> None:
    from aiogovernor import AdaptiveChunker

    paths = _files(tmp_path, 200, size=100)
    # Requests here take tens of milliseconds: a target of half a second asks for bigger batches.
    chunker = AdaptiveChunker(initial_size=1, max_size=32, target_duration_s=0.5, min_samples=2)
    async with httpx.AsyncClient() as client:
        report = await upload_files(client, paths, url=f"{upstream.url}/upload", chunker=chunker)
    assert len(report.uploaded) == 200
    assert chunker.size > 1
    assert upstream.state.requests < 200  # batches carried several files
    assert all(n == 1 for n in upstream.state.files.values()) and len(upstream.state.files) == 200


def _accept_all() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(201)))


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd")
async def test_a_manifest_given_as_a_path_is_closed_after_the_run(tmp_path: Path) -> None:
    items = [UploadItem.from_bytes(f"k{i}", b"x") for i in range(3)]
    async with _accept_all() as client:
        await upload_files(client, items, url="http://up/upload", manifest=tmp_path / "m.jsonl")
        before = _open_fds()
        for _ in range(5):
            report = await upload_files(client, items, url="http://up/upload", manifest=tmp_path / "m.jsonl")
            assert len(report.skipped) == 3
        assert _open_fds() == before


async def test_a_manifest_that_cannot_be_written_leaks_no_permit(tmp_path: Path) -> None:
    class Full(Manifest):
        async def record(self, results: object) -> None:
            raise OSError(28, "No space left on device")

    missing = UploadItem.from_path(tmp_path / "missing.bin")  # fails while its batch is pulled
    gov = Governor("uploads", AIMD(max_limit=4))
    async with _accept_all() as client:
        with pytest.raises(ManifestError) as caught:
            await upload_files(
                client, [missing], url="http://up/upload", manifest=Full(tmp_path / "m.jsonl"), governor=gov
            )
    assert isinstance(caught.value.__cause__, OSError)
    assert [r.status for r in caught.value.report] == [ItemStatus.FAILED]
    assert gov.inflight == 0


async def test_a_manifest_that_fails_stops_the_upload_with_one_clear_error_and_the_report(
    tmp_path: Path,
) -> None:
    class FullAfterOne(Manifest):
        calls = 0

        async def record(self, results: Sequence[ItemResult]) -> None:
            self.calls += 1
            if self.calls > 1:
                raise OSError(28, "No space left on device")
            await super().record(results)

    items = [UploadItem.from_bytes(f"k{i}", b"x") for i in range(8)]
    gov = Governor("uploads", Fixed(1))
    manifest = FullAfterOne(tmp_path / "m.jsonl")
    try:
        async with _accept_all() as client:
            with pytest.raises(ManifestError, match="No space left on device") as caught:
                await upload_files(client, items, url="http://up/upload", manifest=manifest, governor=gov)
    finally:
        manifest.close()
    assert isinstance(caught.value.__cause__, OSError)
    report = caught.value.report
    assert [r.key for r in report] == [it.key for it in items]  # every item has an outcome
    assert [r.status for r in report][:2] == [ItemStatus.UPLOADED] * 2  # the second is not in the manifest
    unsent = report.failed
    assert unsent and report.results[-1] in unsent
    assert all(r.reason is not None and "manifest" in r.reason and r.attempts == 0 for r in unsent)
    assert report.requests == len(report.uploaded) < len(items)  # nothing new was sent
    assert gov.inflight == 0
    assert Manifest(tmp_path / "m.jsonl").load() == {"k0"}


async def test_the_manifest_is_read_off_the_event_loop(tmp_path: Path) -> None:
    threads: list[int] = []

    class Watched(Manifest):
        def load(self) -> frozenset[str]:
            threads.append(threading.get_ident())
            return super().load()

    manifest = Watched(tmp_path / "m.jsonl")
    try:
        async with _accept_all() as client:
            report = await upload_files(
                client, [UploadItem.from_bytes("k", b"x")], url="http://up/u", manifest=manifest
            )
    finally:
        manifest.close()
    assert report.ok
    assert threads and threading.get_ident() not in threads


async def test_progress_is_the_maps_progress_with_bytes(upstream: LocalUpstream, tmp_path: Path) -> None:
    from aiogovernor import Progress

    paths = _files(tmp_path, 20)
    reports: list[Progress] = []
    async with httpx.AsyncClient() as client:
        report = await upload_files(
            client, [*paths, tmp_path / "missing"], url=f"{upstream.url}/upload", progress=reports.append
        )
    last = reports[-1]
    assert (last.done, last.failed, last.total) == (20, 1, 21)
    assert last.bytes_sent == report.bytes_sent > 0
    assert last.limit >= 1 and last.elapsed_s > 0


async def test_the_old_batch_size_name_still_works_with_a_warning(
    upstream: LocalUpstream, tmp_path: Path
) -> None:
    paths = _files(tmp_path, 6)
    async with httpx.AsyncClient() as client:
        with pytest.warns(DeprecationWarning, match="chunker"):
            report = await upload_files(client, paths, url=f"{upstream.url}/upload", batch_size=3)
    assert len(report.uploaded) == 6 and report.requests == 2
