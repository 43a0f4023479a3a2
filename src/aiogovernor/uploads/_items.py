"""What is uploaded (`UploadItem`) and how each item ended (`ItemResult`, `UploadReport`)."""

from __future__ import annotations

import enum
import hashlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from aiogovernor._validate import check_int

__all__ = ["ItemReadError", "ItemResult", "ItemStatus", "UploadItem", "UploadReport"]


class ItemStatus(enum.StrEnum):
    """How one item ended."""

    UPLOADED = "uploaded"
    """The upstream accepted it."""
    FAILED = "failed"
    """It was not uploaded; `ItemResult.reason` says why."""
    SKIPPED = "skipped"
    """The manifest says an earlier run uploaded it: it was not sent again."""


class ItemReadError(Exception):
    """An item's content could not be read (missing, a directory, unreadable, changed size).

    Raised from `UploadItem.aiter_bytes` while a request body streams; the
    uploader fails that item with the reason and sends the rest of its batch again.

    Args:
        key: The item's key.
        reason: What went wrong, in words.
    """

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class UploadItem:
    """One thing to upload: a file, streamed from disk, or bytes in memory.

    Use `from_path` or `from_bytes`. ``key`` names the item in results and
    in the manifest, so it must be stable between runs and unique in a batch.

    Attributes:
        key: The item's identity in results and in the manifest.
        path: The file to stream, or None for in-memory data.
        data: The bytes to send, or None for a file.
        filename: The name the upstream is told.
        content_type: The part's media type.
    """

    key: str
    path: Path | None = None
    data: bytes | None = None
    filename: str = ""
    content_type: str = "application/octet-stream"

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise ValueError(f"key must be a non-empty string, got {self.key!r}")
        if (self.path is None) == (self.data is None):
            raise ValueError(f"{self.key}: give exactly one of path and data")
        if self.data is not None and not isinstance(self.data, bytes | bytearray | memoryview):
            raise TypeError(f"{self.key}: data must be bytes, got {type(self.data).__name__}")
        if not self.filename:
            name = self.path.name if self.path is not None else self.key
            object.__setattr__(self, "filename", name)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, key: str | None = None) -> UploadItem:
        """A file to stream; its key defaults to the path as given."""
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
        return cls(key=key if key is not None else os.fspath(path), path=Path(path))

    @classmethod
    def from_bytes(cls, key: str, data: bytes, *, filename: str = "") -> UploadItem:
        """Bytes held in memory, under ``key``."""
        return cls(key=key, data=bytes(data), filename=filename)

    def size(self) -> int:
        """The content's length in bytes (a ``stat`` for files).

        Raises:
            ItemReadError: If the file is missing, not a regular file, or unreadable.
        """
        if self.data is not None:
            return len(self.data)
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ItemReadError(self.key, "file not found") from None
        except OSError as exc:
            raise ItemReadError(self.key, f"cannot stat: {exc.strerror or exc}") from None
        if self.path.is_dir():
            raise ItemReadError(self.key, "is a directory")
        if not self.path.is_file():
            raise ItemReadError(self.key, "not a regular file")
        if not os.access(self.path, os.R_OK):
            raise ItemReadError(self.key, "permission denied")
        return st.st_size

    def fingerprint(self) -> str:
        """What the manifest records to tell this content from other content under the same key.

        A file's size and modification time (what ``stat`` gives, so no read
        is needed to decide a skip), or the SHA-256 of bytes held in memory.

        Raises:
            ItemReadError: If the file cannot be stat'ed.
        """
        if self.data is not None:
            return f"sha256:{hashlib.sha256(self.data).hexdigest()}"
        assert self.path is not None
        try:
            st = self.path.stat()
        except FileNotFoundError:
            raise ItemReadError(self.key, "file not found") from None
        except OSError as exc:
            raise ItemReadError(self.key, f"cannot stat: {exc.strerror or exc}") from None
        return f"size:{st.st_size},mtime_ns:{st.st_mtime_ns}"

    async def aiter_bytes(
        self, *, size: int, chunk_size_bytes: int, sent: Callable[[int], None] | None = None
    ) -> AsyncIterator[bytes]:
        """The content in chunks, read from disk with aiofiles (a file is never read whole).

        Args:
            size: The length announced for the content (from `size`); a file
                that no longer has exactly this length fails the item.
            chunk_size_bytes: The most read at once.
            sent: Called with each chunk's length (progress counters).

        Raises:
            ItemReadError: If the file cannot be opened or read, or its size changed.
        """
        check_int("chunk_size_bytes", chunk_size_bytes, low=1)
        if self.data is not None:
            view = memoryview(self.data)
            for i in range(0, len(view), chunk_size_bytes):
                chunk = bytes(view[i : i + chunk_size_bytes])
                if sent is not None:
                    sent(len(chunk))
                yield chunk
            return
        try:
            import aiofiles  # the files extra, needed only once a file is read
        except ImportError as exc:  # the optional extra: say which one, not a bare module name
            raise ImportError("uploading files needs aiofiles: pip install 'aiogovernor[files]'") from exc

        assert self.path is not None
        remaining = size
        try:
            async with aiofiles.open(self.path, "rb") as f:
                while remaining > 0:
                    chunk = await f.read(min(chunk_size_bytes, remaining))
                    if not chunk:
                        raise ItemReadError(self.key, "file shrank while it was uploaded")
                    remaining -= len(chunk)
                    if sent is not None:
                        sent(len(chunk))
                    yield chunk
                if await f.read(1):
                    raise ItemReadError(self.key, "file grew while it was uploaded")
        except OSError as exc:
            raise ItemReadError(self.key, f"cannot read: {exc.strerror or exc}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class ItemResult:
    """How one item ended.

    Attributes:
        key: The item's key.
        status: Uploaded, failed or skipped.
        reason: Why it failed (None otherwise).
        attempts: Requests that carried it.
        size_bytes: The item's size, when it was known.
        status_code: The last response's status code, if a response came.
    """

    key: str
    status: ItemStatus
    reason: str | None = None
    attempts: int = 0
    size_bytes: int | None = None
    status_code: int | None = None


@dataclass(slots=True)
class UploadReport:
    """Every item's outcome, in the order the items were given.

    Attributes:
        results: One result per item.
        bytes_sent: Body bytes streamed, retries included.
        requests: HTTP requests sent, retries included.
    """

    results: list[ItemResult] = field(default_factory=list)
    bytes_sent: int = 0
    requests: int = 0

    def _having(self, status: ItemStatus) -> list[ItemResult]:
        return [r for r in self.results if r.status is status]

    @property
    def uploaded(self) -> list[ItemResult]:
        """The items uploaded in this run."""
        return self._having(ItemStatus.UPLOADED)

    @property
    def failed(self) -> list[ItemResult]:
        """The items that failed, each with its reason."""
        return self._having(ItemStatus.FAILED)

    @property
    def skipped(self) -> list[ItemResult]:
        """The items an earlier run uploaded (per the manifest)."""
        return self._having(ItemStatus.SKIPPED)

    @property
    def ok(self) -> bool:
        """Whether no item failed."""
        return not any(r.status is ItemStatus.FAILED for r in self.results)

    def __iter__(self) -> Iterator[ItemResult]:
        return iter(self.results)

    def __len__(self) -> int:
        return len(self.results)
