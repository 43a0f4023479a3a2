"""The uploader: requests gated by a governor, batches sized by a chunker, every item accounted for."""

from __future__ import annotations

import os
import random
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

import anyio
import httpx

from aiogovernor._governor import Governor, Permit
from aiogovernor._retry import Retry
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_int
from aiogovernor.httpx import GovernedTransport, HTTPClassifier, _classify_with, retry_after_s

from ._items import ItemReadError, ItemResult, ItemStatus, UploadItem, UploadReport
from ._manifest import Manifest, ManifestError
from ._multipart import MultipartBody
from ._progress import UploadProgress

__all__ = ["Chunker", "RequestBuilder", "UploadBatch", "upload_files", "upload_items"]

DEFAULT_RETRY = Retry(attempts=4, retry_on=frozenset({Outcome.OVERLOAD, Outcome.ERROR}))


@runtime_checkable
class Chunker(Protocol):
    """Sets how many items one request carries, from how long requests took.

    `aiogovernor`'s adaptive chunker fits; any object with these two members does.
    """

    @property
    def size(self) -> int:
        """Items the next request should carry."""
        ...

    def record(self, size: int, duration_s: float) -> int:
        """Take one request's size and duration; return the next size."""
        ...


@dataclass(frozen=True, slots=True)
class UploadBatch:
    """The items one request carries, handed to a `RequestBuilder`.

    Attributes:
        items: The items, in order.
        sizes: Each item's size in bytes.
        attempt: Which attempt this is, from 1.
        chunk_size_bytes: The most read from a file at once.
    """

    items: tuple[UploadItem, ...]
    sizes: tuple[int, ...]
    attempt: int
    chunk_size_bytes: int
    _sent: Callable[[int], None] = field(repr=False)

    def multipart(
        self,
        *,
        field: str = "file",
        checksum_field: str | None = "sha256",
        data: Mapping[str, str] | None = None,
    ) -> MultipartBody:
        """A streaming multipart/form-data body of these items (see `MultipartBody`)."""
        return MultipartBody(
            self.items,
            self.sizes,
            field=field,
            checksum_field=checksum_field,
            data=data,
            chunk_size_bytes=self.chunk_size_bytes,
            sent=self._sent,
        )


RequestBuilder: TypeAlias = Callable[[UploadBatch], httpx.Request]
"""Builds the request for one batch, e.g. ``client.build_request("POST", url, content=body, headers=...)``."""


def _describe(exc: BaseException) -> str:
    # The exception's type and message only: httpx messages name no header values.
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}"[:200] if text else type(exc).__name__


class _Run:
    """One call of `upload_items`: the queue, the results, the counters."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        items: list[UploadItem],
        build_request: RequestBuilder,
        governor: Governor,
        manifest: Manifest | None,
        done: frozenset[str],
        batch_size: int | Chunker,
        retry: Retry,
        classify: HTTPClassifier | None,
        chunk_size_bytes: int,
        progress: UploadProgress,
        rng: random.Random,
    ) -> None:
        self.client = client
        self.build_request = build_request
        self.governor = governor
        self.manifest = manifest
        self.batch_size = batch_size
        self.retry = retry
        self.budget = retry.new_budget()
        self.classify = classify
        self.chunk_size_bytes = chunk_size_bytes
        self.progress = progress
        self.rng = rng
        self.order = [item.key for item in items]
        self.results: dict[str, ItemResult] = {}
        self.attempts: dict[str, int] = {}
        self.pending: deque[UploadItem] = deque()
        self.report = UploadReport()
        self.manifest_error: Exception | None = None  # the first write that failed: send nothing more
        for item in items:
            if item.key in done:
                self.results[item.key] = ItemResult(key=item.key, status=ItemStatus.SKIPPED)
            else:
                self.pending.append(item)

    def _sent(self, n: int) -> None:
        self.report.bytes_sent += n
        self.progress.sent(n)

    def _outcome(self, result: httpx.Response | BaseException) -> Outcome:
        return _classify_with(self.classify, result)

    async def _finish(self, results: Sequence[ItemResult]) -> None:
        for r in results:
            self.results[r.key] = r
            self.progress.finished(failed=r.status is ItemStatus.FAILED)
        if self.manifest is not None:
            try:
                await self.manifest.record(results)
            except Exception as exc:
                # Keep the outcomes (they are in self.results); stop sending, and say so at the end.
                if self.manifest_error is None:
                    self.manifest_error = exc

    async def next_batch(self) -> tuple[list[UploadItem], list[int]]:
        """Up to the chunk size of pending items whose size could be read; the rest fail here."""
        want = self.batch_size if isinstance(self.batch_size, int) else max(1, self.batch_size.size)
        batch: list[UploadItem] = []
        sizes: list[int] = []
        while self.pending and len(batch) < want:
            item = self.pending.popleft()
            try:
                sizes.append(item.size())
            except ItemReadError as exc:
                await self._finish([ItemResult(key=item.key, status=ItemStatus.FAILED, reason=exc.reason)])
                continue
            batch.append(item)
        return batch, sizes

    async def run_batch(self, items: list[UploadItem], sizes: list[int], permit: Permit | None) -> None:
        if self.budget is not None:
            self.budget.record_request()
        attempt = 1
        while items:
            if self.manifest_error is not None:
                # What this request uploads could not be recorded: a rerun would send it twice.
                if permit is not None:
                    permit.release(Outcome.IGNORED)
                await self._fail_all(items, sizes, self._not_sent(), None)
                return
            if permit is None:
                permit = await self.governor.acquire()
            for item in items:
                self.attempts[item.key] = self.attempts.get(item.key, 0) + 1
            started = anyio.current_time()
            try:
                batch = UploadBatch(tuple(items), tuple(sizes), attempt, self.chunk_size_bytes, self._sent)
                request = self.build_request(batch)
                self.report.requests += 1
                response = await self.client.send(request)
            except ItemReadError as exc:
                # The item's fault, not the upstream's: fail it, send the others again now.
                permit.release(Outcome.IGNORED)
                permit = None
                i = next(i for i, it in enumerate(items) if it.key == exc.key)
                bad = items.pop(i)
                size = sizes.pop(i)
                await self._finish([self._result(bad, ItemStatus.FAILED, exc.reason, size, None)])
                continue
            except BaseException as exc:
                outcome = self._outcome(exc)
                permit.release(outcome)
                permit = None
                if isinstance(exc, Exception) and self._may_retry(attempt, outcome):
                    await anyio.sleep(self.retry.delay_s(attempt, rng=self.rng))
                    attempt += 1
                    continue
                if not isinstance(exc, Exception):
                    raise
                await self._fail_all(items, sizes, _describe(exc), None)
                return
            outcome = self._outcome(response)
            if response.is_success:
                permit.release(outcome)
                if not isinstance(self.batch_size, int):
                    self.batch_size.record(len(items), anyio.current_time() - started)
                await self._finish(
                    [
                        self._result(it, ItemStatus.UPLOADED, None, size, response.status_code)
                        for it, size in zip(items, sizes, strict=True)
                    ]
                )
                return
            asked = retry_after_s(response) if outcome is Outcome.OVERLOAD else None
            if asked is not None:
                asked = min(asked, self.retry.max_retry_after_s)
                self.governor.pause(asked * (1.0 + 0.1 * self.rng.random()))
            permit.release(outcome)
            permit = None
            if self._may_retry(attempt, outcome):
                await anyio.sleep(self.retry.delay_s(attempt, rng=self.rng, retry_after_s=asked))
                attempt += 1
                continue
            await self._fail_all(items, sizes, f"HTTP {response.status_code}", response.status_code)
            return

    def _not_sent(self) -> str:
        return (
            f"not sent: the manifest could not be written ({_describe(self.manifest_error or Exception())})"
        )

    def _may_retry(self, attempt: int, outcome: Outcome) -> bool:
        if not self.retry.should_retry(attempt, outcome):
            return False
        return self.budget is None or self.budget.try_spend()

    def _result(
        self, item: UploadItem, status: ItemStatus, reason: str | None, size: int, code: int | None
    ) -> ItemResult:
        return ItemResult(
            key=item.key,
            status=status,
            reason=reason,
            attempts=self.attempts.get(item.key, 0),
            size_bytes=size,
            status_code=code,
        )

    async def _fail_all(
        self, items: list[UploadItem], sizes: list[int], reason: str, code: int | None
    ) -> None:
        await self._finish(
            [self._result(it, ItemStatus.FAILED, reason, s, code) for it, s in zip(items, sizes, strict=True)]
        )

    async def run(self) -> UploadReport:
        async with anyio.create_task_group() as tg:
            while self.pending and self.manifest_error is None:
                # Permit first, then the batch: its size is the chunker's latest word.
                permit = await self.governor.acquire()
                try:
                    items, sizes = await self.next_batch()
                except BaseException:
                    permit.release(Outcome.IGNORED)  # the caller cancelled
                    raise
                if not items:
                    permit.release(Outcome.IGNORED)
                    break
                tg.start_soon(self.run_batch, items, sizes, permit)
        if self.manifest_error is not None:
            reason = self._not_sent()
            while self.pending:
                item = self.pending.popleft()
                self.results[item.key] = ItemResult(key=item.key, status=ItemStatus.FAILED, reason=reason)
                self.progress.finished(failed=True)
        self.report.results = [self.results[key] for key in self.order]
        if self.manifest_error is not None:
            assert self.manifest is not None
            raise ManifestError(
                self.manifest.path, self.report, _describe(self.manifest_error)
            ) from self.manifest_error
        return self.report


def _governed_transport(client: httpx.AsyncClient) -> bool:
    return isinstance(getattr(client, "_transport", None), GovernedTransport)


async def upload_items(
    client: httpx.AsyncClient,
    items: Iterable[UploadItem],
    *,
    build_request: RequestBuilder,
    governor: Governor | None = None,
    manifest: Manifest | str | os.PathLike[str] | None = None,
    batch_size: int | Chunker = 1,
    retry: Retry = DEFAULT_RETRY,
    classify: HTTPClassifier | None = None,
    chunk_size_bytes: int = 256 * 1024,
    progress: bool = False,
    seed: int | None = None,
) -> UploadReport:
    """Upload items with requests you build; every item ends uploaded, failed (with a reason) or skipped.

    The lower-level form of `upload_files`. The governor sets how many
    requests run at once (each request holds one permit and is one sample,
    classified like `aiogovernor.httpx.classify_http`); ``batch_size`` sets
    how many items a request carries. A response in 2xx uploads every item
    it carried; other outcomes are retried per ``retry`` (a Retry-After on
    an overload also pauses the governor), then fail the batch's items.
    An item that cannot be read fails alone, and the rest of its batch is
    sent again.

    Asyncio only: files are read with aiofiles.

    Args:
        client: A plain `httpx.AsyncClient` (not one with a `GovernedTransport`:
            the uploader takes the permits itself).
        items: The items; keys must be unique.
        build_request: Builds one batch's request (see `UploadBatch.multipart`).
        governor: Sets how many requests run at once; None makes ``Governor("uploads")``.
        manifest: A `Manifest` or its path: items it marks uploaded are
            skipped, and every outcome is appended to it (see `ManifestError`).
        batch_size: Items per request: a fixed number, or a `Chunker` that
            adapts it from request durations (for endpoints taking several files).
        retry: How failed requests are retried (by default 4 attempts, on
            overload and error, with a retry budget).
        classify: Maps a response or an exception to an outcome; None defers
            to `aiogovernor.httpx.classify_http`.
        chunk_size_bytes: The most read from a file at once: peak memory is
            about (requests in flight) × this.
        progress: Show a rich progress bar (the ``rich`` extra).
        seed: Seeds the backoff jitter.

    Returns:
        One result per item, in the order given.

    Raises:
        TypeError: For a client that is not an `httpx.AsyncClient`, a
            non-callable builder, or items that are not `UploadItem`.
        ValueError: For duplicate keys, a client whose transport is
            already governed, or out-of-range numbers.
        ManifestError: When the manifest could not be written: nothing more
            was sent, and its ``report`` holds every item's outcome.
        OSError: When the manifest could not be opened or read (before
            anything is sent).
    """
    if not isinstance(client, httpx.AsyncClient):
        raise TypeError(f"client must be an httpx.AsyncClient, got {client!r}")
    if _governed_transport(client):
        raise ValueError(
            "client's transport is a GovernedTransport: the uploader takes the permits itself; "
            "pass a plain client and give the governor to the uploader"
        )
    if not callable(build_request):
        raise TypeError(f"build_request must be callable, got {build_request!r}")
    if governor is None:
        governor = Governor("uploads")
    elif not isinstance(governor, Governor):
        raise TypeError(f"governor must be an aiogovernor.Governor or None, got {governor!r}")
    if isinstance(batch_size, int):
        check_int("batch_size", batch_size, low=1)
    elif not isinstance(batch_size, Chunker):
        raise TypeError(f"batch_size must be an int or a Chunker, got {batch_size!r}")
    if not isinstance(retry, Retry):
        raise TypeError(f"retry must be an aiogovernor.Retry, got {retry!r}")
    if classify is not None and not callable(classify):
        raise TypeError(f"classify must be callable, got {classify!r}")
    check_int("chunk_size_bytes", chunk_size_bytes, low=1)
    item_list = list(items)
    seen: set[str] = set()
    for item in item_list:
        if not isinstance(item, UploadItem):
            raise TypeError(f"items must be UploadItem, got {item!r}")
        if item.key in seen:
            raise ValueError(f"duplicate item key {item.key!r}")
        seen.add(item.key)
    owned: Manifest | None = None
    if manifest is not None and not isinstance(manifest, Manifest):
        manifest = owned = Manifest(manifest)
    try:
        # Reading the manifest is file I/O: off the event loop, like every write to it.
        done = await anyio.to_thread.run_sync(manifest.load) if manifest is not None else frozenset()
        with UploadProgress(total_items=len(item_list), governor=governor, enabled=progress) as bar:
            run = _Run(
                client,
                item_list,
                build_request,
                governor,
                manifest,
                done,
                batch_size,
                retry,
                classify,
                chunk_size_bytes,
                bar,
                random.Random(seed),
            )
            for _ in run.results:  # the skipped ones
                bar.finished(failed=False)
            return await run.run()
    finally:
        if owned is not None:
            owned.close()  # made from a path here: its file is ours to close


async def upload_files(
    client: httpx.AsyncClient,
    paths: Iterable[str | os.PathLike[str] | UploadItem],
    *,
    url: str | httpx.URL,
    method: str = "POST",
    field: str = "file",
    checksum_field: str | None = "sha256",
    data: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | None = None,
    governor: Governor | None = None,
    manifest: Manifest | str | os.PathLike[str] | None = None,
    batch_size: int | Chunker = 1,
    retry: Retry = DEFAULT_RETRY,
    classify: HTTPClassifier | None = None,
    chunk_size_bytes: int = 256 * 1024,
    progress: bool = False,
    seed: int | None = None,
) -> UploadReport:
    """Upload files (streamed from disk in chunks, never read whole) as multipart/form-data.

    Each request is a multipart body with one file part named ``field`` per
    item, each followed by a ``checksum_field`` text part holding the hex
    SHA-256 of the bytes sent (None leaves it out), after the text fields
    of ``data``. A missing file, a directory or an unreadable file fails
    alone with its reason; the rest of the batch goes on. See `upload_items`
    for the governor, batching, retries, the manifest and the arguments
    they share.

    Args:
        client: A plain `httpx.AsyncClient`.
        paths: Paths (the key is the path as given) or `UploadItem` objects.
        url: Where to send them.
        method: The HTTP method.
        field: The file parts' form name.
        checksum_field: The checksum parts' form name, or None.
        data: Extra text fields sent with every request.
        headers: Extra request headers (never logged nor recorded).
        governor: See `upload_items`.
        manifest: See `upload_items`.
        batch_size: See `upload_items`.
        retry: See `upload_items`.
        classify: See `upload_items`.
        chunk_size_bytes: See `upload_items`.
        progress: See `upload_items`.
        seed: See `upload_items`.

    Returns:
        One result per item, in the order given.
    """
    items = [p if isinstance(p, UploadItem) else UploadItem.from_path(p) for p in paths]
    extra = dict(headers or {})
    form = dict(data or {})

    def build(batch: UploadBatch) -> httpx.Request:
        body = batch.multipart(field=field, checksum_field=checksum_field, data=form)
        return client.build_request(method, url, content=body, headers={**extra, **body.headers})

    return await upload_items(
        client,
        items,
        build_request=build,
        governor=governor,
        manifest=manifest,
        batch_size=batch_size,
        retry=retry,
        classify=classify,
        chunk_size_bytes=chunk_size_bytes,
        progress=progress,
        seed=seed,
    )
