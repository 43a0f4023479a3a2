"""The uploader: requests gated by a governor, batches sized by a chunker, every item accounted for."""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import random
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypedDict, Unpack

import anyio
import httpx

from aiogovernor._attempt import Gate
from aiogovernor._chunking import Chunker, FixedChunker, as_chunker
from aiogovernor._governor import Governor, Permit
from aiogovernor._names import warn_if_ambiguous
from aiogovernor._progress import ProgressCallback, Reporter, check_progress
from aiogovernor._retry import Retry
from aiogovernor._samples import Outcome
from aiogovernor._validate import check_int
from aiogovernor.httpx import GovernedTransport, HTTPAttempts, HTTPClassifier

from ._items import ItemReadError, ItemResult, ItemStatus, UploadItem, UploadReport
from ._manifest import Manifest, ManifestError
from ._multipart import MultipartBody

__all__ = ["RequestBuilder", "UploadBatch", "UploadOptions", "upload_files", "upload_items"]

logger = logging.getLogger("aiogovernor.uploads")

DEFAULT_RETRY = Retry(attempts=4, retry_on=frozenset({Outcome.OVERLOAD, Outcome.ERROR}))


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


class _NotSent(Exception):
    """The manifest could not be written: a batch waiting to be retried is not sent again."""


@dataclass(frozen=True, slots=True)
class _Settings:
    """One upload run's options, checked once."""

    build_request: RequestBuilder
    governor: Governor
    manifest: Manifest | None
    chunker: Chunker
    retry: Retry
    classify: HTTPClassifier | None
    chunk_size_bytes: int
    seed: int | None
    destination: str | None


class _UploadAttempts(HTTPAttempts):
    """The attempt loop for upload requests: an unreadable item is the item's fault, a 2xx is final."""

    __slots__ = ("_run",)

    def __init__(self, run: _Run, settings: _Settings) -> None:
        super().__init__(settings.classify, retry=settings.retry, rng=random.Random(settings.seed))
        self._run = run

    def classify(self, governor: Gate, result: httpx.Response | BaseException) -> Outcome:
        if isinstance(result, ItemReadError | _NotSent):
            return Outcome.IGNORED  # says nothing about the upstream
        return super().classify(governor, result)

    def retryable(self, result: httpx.Response | BaseException) -> bool:
        if isinstance(result, httpx.Response):
            return not result.is_success
        return not isinstance(result, ItemReadError | _NotSent)

    async def wait(self, delay_s: float) -> None:
        await super().wait(delay_s)
        if self._run.manifest_error is not None:
            # What this request uploads could not be recorded: a rerun would send it twice.
            raise _NotSent


class _Run:
    """One call of `upload_items`: the queue, the results, the counters."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        items: list[UploadItem],
        settings: _Settings,
        done: frozenset[str],
        reporter: Reporter,
    ) -> None:
        self.client = client
        self.settings = settings
        self.governor = settings.governor
        self.manifest = settings.manifest
        self.chunker = settings.chunker
        self.attempts_loop = _UploadAttempts(self, settings)
        self.reporter = reporter
        self.order = [item.key for item in items]
        self.results: dict[str, ItemResult] = {}
        self.attempts: dict[str, int] = {}
        self.pending: deque[UploadItem] = deque()
        self.report = UploadReport()
        self.manifest_error: Exception | None = None  # the first write that failed: send nothing more
        for item in items:
            if item.key in done:
                self.results[item.key] = ItemResult(key=item.key, status=ItemStatus.SKIPPED)
                reporter.done += 1
            else:
                self.pending.append(item)

    def _sent(self, n: int) -> None:
        self.report.bytes_sent += n
        reporter = self.reporter
        if reporter.bytes_sent is not None:
            reporter.bytes_sent += n
        reporter.tick()

    async def _finish(self, results: Sequence[ItemResult]) -> None:
        reporter = self.reporter
        for r in results:
            self.results[r.key] = r
            if r.status is ItemStatus.FAILED:
                reporter.failed += 1
            else:
                reporter.done += 1
        reporter.tick()
        if self.manifest is not None:
            try:
                await self.manifest.record(results)
            except Exception as exc:
                # Keep the outcomes (they are in self.results); stop sending, and say so at the end.
                if self.manifest_error is None:
                    self.manifest_error = exc

    async def next_batch(self) -> tuple[list[UploadItem], list[int]]:
        """Up to the chunk size of pending items whose size could be read; the rest fail here."""
        want = max(1, self.chunker.size)
        batch: list[UploadItem] = []
        sizes: list[int] = []
        while self.pending and len(batch) < want:
            item = self.pending.popleft()
            try:
                size = item.size()
                if self.manifest is not None:
                    # Taken before the content is sent: a change made while it is sent
                    # makes the next run send it again, never skip it.
                    self.manifest._describe(item.key, self.settings.destination, item.fingerprint())
                sizes.append(size)
            except ItemReadError as exc:
                await self._finish([ItemResult(key=item.key, status=ItemStatus.FAILED, reason=exc.reason)])
                continue
            batch.append(item)
        return batch, sizes

    async def run_batch(self, items: list[UploadItem], sizes: list[int], permit: Permit | None) -> None:
        attempt = 1
        duration_s = 0.0

        async def send(permit: Permit, n: int) -> httpx.Response:
            nonlocal attempt, duration_s
            attempt = n
            for item in items:
                self.attempts[item.key] = self.attempts.get(item.key, 0) + 1
            # The request's bytes are its work: a larger batch is not read as queueing.
            permit.size = max(1, sum(sizes))
            started = anyio.current_time()
            batch = UploadBatch(tuple(items), tuple(sizes), n, self.settings.chunk_size_bytes, self._sent)
            request = self.settings.build_request(batch)
            self.report.requests += 1
            response = await self.client.send(request)
            duration_s = anyio.current_time() - started
            return response

        counted = False
        while items:
            if self.manifest_error is not None:
                if permit is not None:
                    permit.release(Outcome.IGNORED)
                await self._fail_all(items, sizes, self._not_sent(), None)
                return
            try:
                response = await self.attempts_loop.run(
                    self.governor, send, permit=permit, attempt=attempt, counted=counted
                )
            except ItemReadError as exc:
                # The item's fault, not the upstream's: fail it, send the others again now
                # (the attempt did not count).
                permit, counted = None, True
                i = next(i for i, it in enumerate(items) if it.key == exc.key)
                bad = items.pop(i)
                size = sizes.pop(i)
                await self._finish([self._result(bad, ItemStatus.FAILED, exc.reason, size, None)])
                continue
            except _NotSent:
                permit = None
                continue  # failed above, with the reason
            except Exception as exc:
                await self._fail_all(items, sizes, _describe(exc), None)
                return
            if response.is_success:
                self.chunker.record(len(items), duration_s)
                await self._finish(
                    [
                        self._result(it, ItemStatus.UPLOADED, None, size, response.status_code)
                        for it, size in zip(items, sizes, strict=True)
                    ]
                )
                return
            await self._fail_all(items, sizes, f"HTTP {response.status_code}", response.status_code)
            return

    def _not_sent(self) -> str:
        return (
            f"not sent: the manifest could not be written ({_describe(self.manifest_error or Exception())})"
        )

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
                self.reporter.failed += 1
        self.report.results = [self.results[key] for key in self.order]
        if self.manifest_error is not None:
            assert self.manifest is not None
            raise ManifestError(
                self.manifest.path, self.report, _describe(self.manifest_error)
            ) from self.manifest_error
        return self.report


def _governed_transport(client: httpx.AsyncClient) -> bool:
    return isinstance(getattr(client, "_transport", None), GovernedTransport)


class UploadOptions(TypedDict, total=False):
    """The keyword options `upload_items` and `upload_files` share, written once.

    Attributes:
        governor: Sets how many requests run at once; None makes one: named after
            the destination's origin by `upload_files` (``uploads:https://host``),
            ``Governor("uploads")`` by `upload_items` (warned about once when it keeps state).
        manifest: A `Manifest` or its path: items it marks uploaded (to
            ``destination``, with the same content) are skipped, and every
            outcome is appended to it (see `ManifestError`).
        destination: Where the requests go, in words (e.g. the URL), recorded
            in the manifest so that a manifest shared by jobs sending to
            different places never makes one skip what another uploaded.
            `upload_files` sets it to the method and URL (without user info,
            a query only as a hash); for `upload_items` keep secrets out of
            it: it is written to the manifest as given.
        chunker: Items per request: a fixed number (1 by default), or any
            `aiogovernor.Chunker` (such as `aiogovernor.AdaptiveChunker`) that
            adapts it from request durations (for endpoints taking several files).
        batch_size: Deprecated name of ``chunker``.
        retry: How failed requests are retried (by default 4 attempts, on
            overload and error, with a retry budget); it also caps and
            jitters every Retry-After pause.
        classify: Maps a response or an exception to an outcome; None defers
            to `aiogovernor.httpx.classify_http`.
        chunk_size_bytes: The most read from a file at once: peak memory is
            about (requests in flight) × this.
        progress: A callback receiving `aiogovernor.Progress` (items, with
            ``bytes_sent``; at most every 0.1 s, and once at the end), or True
            for a rich progress bar (the ``rich`` extra).
        seed: Seeds the backoff jitter.
    """

    governor: Governor | None
    manifest: Manifest | str | os.PathLike[str] | None
    destination: str | None
    chunker: int | Chunker
    batch_size: int | Chunker
    retry: Retry
    classify: HTTPClassifier | None
    chunk_size_bytes: int
    progress: ProgressCallback | bool | None
    seed: int | None


def _settings(build_request: RequestBuilder, options: UploadOptions, form: str) -> tuple[_Settings, object]:
    """Check the options (a clear error for each); the manifest option is returned as given."""
    unknown = options.keys() - UploadOptions.__annotations__.keys()
    if unknown:
        raise TypeError(f"{form}() got an unexpected keyword argument {min(unknown)!r}")
    if not callable(build_request):
        raise TypeError(f"build_request must be callable, got {build_request!r}")
    governor = options.get("governor")
    if governor is None:
        governor = Governor("uploads")
        # upload_items sees requests, not a destination: every such call shares this name.
        why = "upload_items cannot tell destinations apart"
        # stacklevel: from here, _settings, upload_items, its caller.
        warn_if_ambiguous(governor.name, why, persisted=governor.store is not None, stacklevel=3)
    elif not isinstance(governor, Governor):
        raise TypeError(f"governor must be an aiogovernor.Governor or None, got {governor!r}")
    chunker: object = options.get("chunker", 1)
    if "batch_size" in options:
        if "chunker" in options:
            raise TypeError("pass chunker (batch_size is its deprecated name), not both")
        warnings.warn(
            f"{form}(batch_size=...) is deprecated; pass chunker=... (an int or a Chunker)",
            DeprecationWarning,
            stacklevel=3,
        )
        chunker = options["batch_size"]
    retry = options.get("retry", DEFAULT_RETRY)
    if not isinstance(retry, Retry):
        raise TypeError(f"retry must be an aiogovernor.Retry, got {retry!r}")
    classify = options.get("classify")
    if classify is not None and not callable(classify):
        raise TypeError(f"classify must be callable, got {classify!r}")
    chunk_size_bytes = check_int("chunk_size_bytes", options.get("chunk_size_bytes", 256 * 1024), low=1)
    check_progress(options.get("progress"))
    destination = options.get("destination")
    if destination is not None and not isinstance(destination, str):
        raise TypeError(f"destination must be a str or None, got {destination!r}")
    settings = _Settings(
        build_request=build_request,
        governor=governor,
        manifest=None,
        chunker=as_chunker(chunker, "batch_size" if "batch_size" in options else "chunker"),
        retry=retry,
        classify=classify,
        chunk_size_bytes=chunk_size_bytes,
        seed=options.get("seed"),
        destination=destination,
    )
    return settings, options.get("manifest")


def _already_uploaded(
    manifest: Manifest, items: Sequence[UploadItem], destination: str | None
) -> frozenset[str]:
    """The keys to skip: recorded uploaded to ``destination`` with the content each item has now."""
    recorded = manifest.load()
    skip = set()
    changed = 0
    for item in items:
        if item.key not in recorded:
            continue
        try:
            fingerprint = item.fingerprint()
        except ItemReadError:
            continue  # sent, and failed with its reason, like any unreadable item
        if manifest.uploaded(item.key, destination=destination, fingerprint=fingerprint):
            skip.add(item.key)
        else:
            changed += 1
    if changed:
        logger.info(
            "manifest %s: %d item(s) were uploaded elsewhere or have changed since; sending them",
            manifest.path,
            changed,
        )
    return frozenset(skip)


def _destination_of(method: str, url: str | httpx.URL) -> str:
    """A request target as the manifest records it: no user info, a query only as a hash.

    A URL's user info or query may hold a token, and the manifest is a file
    people read and copy; the hash still tells one query from another.
    """
    parsed = httpx.URL(url)
    host = parsed.netloc.decode("ascii", "replace").rpartition("@")[2]
    target = f"{method.upper()} {parsed.scheme}://{host}{parsed.path}"
    if parsed.query:
        target += "?sha256:" + hashlib.sha256(parsed.query).hexdigest()[:16]
    return target


async def upload_items(
    client: httpx.AsyncClient,
    items: Iterable[UploadItem],
    *,
    build_request: RequestBuilder,
    **options: Unpack[UploadOptions],
) -> UploadReport:
    """Upload items with requests you build; every item ends uploaded, failed (with a reason) or skipped.

    The lower-level form of `upload_files`. The governor sets how many
    requests run at once (each request holds one permit and is one sample,
    classified like `aiogovernor.httpx.classify_http`); the chunker sets
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
        **options: ``governor``, ``manifest``, ``destination``, ``chunker``, ``retry``,
            ``classify``, ``chunk_size_bytes``, ``progress``, ``seed``: see
            `UploadOptions`.

    Returns:
        One result per item, in the order given.

    Raises:
        TypeError: For a client that is not an `httpx.AsyncClient`, a
            non-callable builder, items that are not `UploadItem`, or an
            option of the wrong type or unknown.
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
    made = options.get("governor") is None  # made here: closed here, its final state saved
    settings, manifest = _settings(build_request, options, "upload_items")
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
        manifest = owned = Manifest(manifest)  # type: ignore[arg-type]
    assert manifest is None or isinstance(manifest, Manifest)
    settings = dataclasses.replace(settings, manifest=manifest)
    gov, chunker = settings.governor, settings.chunker
    attach = not isinstance(chunker, FixedChunker)
    if attach:
        gov.attach_chunker(chunker)  # its learned batch size is kept with the limit
    try:
        # Reading the manifest is file I/O: off the event loop, like every write to it.
        done = (
            await anyio.to_thread.run_sync(_already_uploaded, manifest, item_list, settings.destination)
            if manifest is not None
            else frozenset()
        )
        with Reporter(
            options.get("progress"),
            governor=settings.governor,
            description="upload",
            total=len(item_list),
            bytes_sent=0,
        ) as reporter:
            report = await _Run(client, item_list, settings, done, reporter).run()
            reporter.finish()
            return report
    finally:
        if owned is not None:
            owned.close()  # made from a path here: its file is ours to close
        if attach:
            gov.detach_chunker(chunker)
        if made:
            await gov.aclose()  # shielded: saved even when the upload was cancelled


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
    **options: Unpack[UploadOptions],
) -> UploadReport:
    """Upload files (streamed from disk in chunks, never read whole) as multipart/form-data.

    Each request is a multipart body with one file part named ``field`` per
    item, each followed by a ``checksum_field`` text part holding the hex
    SHA-256 of the bytes sent (None leaves it out), after the text fields
    of ``data``. A missing file, a directory or an unreadable file fails
    alone with its reason; the rest of the batch goes on. See `upload_items`
    for the governor, batching, retries, the manifest and the options
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
        **options: As `upload_items` (see `UploadOptions`).

    Returns:
        One result per item, in the order given.
    """
    items = [p if isinstance(p, UploadItem) else UploadItem.from_path(p) for p in paths]
    extra = dict(headers or {})
    form = dict(data or {})

    def build(batch: UploadBatch) -> httpx.Request:
        body = batch.multipart(field=field, checksum_field=checksum_field, data=form)
        return client.build_request(method, url, content=body, headers={**extra, **body.headers})

    if "destination" not in options:
        options["destination"] = _destination_of(method, url)
    if options.get("governor") is not None:
        return await upload_items(client, items, build_request=build, **options)
    # One learned limit per destination, not one for every upload the process makes.
    gov = options["governor"] = Governor(_destination_name(url))
    try:
        return await upload_items(client, items, build_request=build, **options)
    finally:
        await gov.aclose()  # made here: closed here (shielded), its final state saved


def _destination_name(url: str | httpx.URL) -> str:
    """``uploads:<scheme>://<host>[:port]``: the origin only (userinfo, path and query may hold secrets)."""
    parsed = httpx.URL(url)
    port = f":{parsed.port}" if parsed.port is not None else ""
    return f"uploads:{parsed.scheme}://{parsed.host}{port}"
