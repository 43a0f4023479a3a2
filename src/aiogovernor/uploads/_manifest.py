"""The manifest: a JSON-lines record of every item's outcome, so that a rerun skips what is done."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import anyio.to_thread

from ._items import ItemResult, ItemStatus, UploadReport

__all__ = ["Manifest", "ManifestError"]

logger = logging.getLogger("aiogovernor.uploads")


class ManifestError(Exception):
    """The manifest could not be written: the upload stopped early, and `report` says how every item ended.

    Raised by `upload_items` and `upload_files` (from the write's own error)
    once the requests in flight have ended. No request is sent after the
    first failed write, since what it uploaded could not be recorded: the
    items not sent are failed with a reason naming the manifest. Items
    uploaded but not recorded are ``uploaded`` in the report, and are sent
    again by a rerun with this manifest.

    Attributes:
        path: The manifest file.
        report: One result per item, in the order given.
    """

    def __init__(self, path: Path, report: UploadReport, reason: str) -> None:
        super().__init__(
            f"cannot write the upload manifest {str(path)!r} ({reason}); the upload stopped, "
            f"{len(report.failed)} item(s) failed or were not sent (see .report)"
        )
        self.path = path
        self.report = report


class Manifest:
    """A JSON-lines file with one line per finished item, appended and fsynced as items end.

    A rerun given the same manifest skips every item a line marks
    ``uploaded`` **to the same destination with the same content**: creates
    may not be idempotent, so nothing recorded as done is sent twice, even
    after a crash. Each line records the item's key, the destination (the
    method and URL of `upload_files`, without user info; a query is kept
    only as a hash) and the content's fingerprint (a file's size and
    modification time, or the SHA-256 of bytes; see `UploadItem.fingerprint`).
    Another job's manifest therefore never makes a run skip its own files,
    and a file changed since its upload is sent again.

    Lines are written whole or not at all: a write cut short (a full disk)
    is undone, raises, and leaves the manifest refusing further records, so
    no record is ever appended after a partial line. A line torn by a crash
    is ignored (with a log warning) on the next load. The file is created
    readable by its owner only. It holds keys, statuses, reasons,
    destinations and fingerprints, never headers or bodies.

    Lines written by earlier versions (a key and a status only) keep
    loading: they skip their key whatever the destination and content, as
    they did, and one warning says how many there are.

    An item whose request was in flight when the process died is not in the
    manifest and is sent again: only the upstream can make that exactly-once.

    Args:
        path: The manifest file; made (with its folder) if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
        self._path = Path(path)
        # key -> the (destination, fingerprint) pairs it was uploaded as; None: a legacy line.
        self._done: dict[str, set[tuple[str | None, str] | None]] = {}
        self._meta: dict[str, tuple[str | None, str | None]] = {}  # set by the uploader per item
        self._fd: int | None = None
        self._loaded = False
        self._broken: str | None = None  # why records are refused: a write was cut short

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self._path

    @property
    def done(self) -> frozenset[str]:
        """The keys recorded as uploaded, to any destination (after `load`)."""
        return frozenset(self._done)

    def uploaded(self, key: str, *, destination: str | None, fingerprint: str) -> bool:
        """Whether a line records ``key`` uploaded to ``destination`` with content ``fingerprint``.

        A line from an earlier version (no destination, no fingerprint) matches any.
        """
        seen = self._done.get(key)
        return seen is not None and (None in seen or (destination, fingerprint) in seen)

    def _describe(self, key: str, destination: str | None, fingerprint: str | None) -> None:
        """What the next record of ``key`` says it was sent to, and as what (the uploader's call)."""
        self._meta[key] = (destination, fingerprint)

    def load(self) -> frozenset[str]:
        """Read the file (if any) and open it for appending; return the keys recorded uploaded."""
        if self._loaded:
            return self.done
        self._path.parent.mkdir(parents=True, exist_ok=True)
        torn = legacy = 0
        try:
            with self._path.open("rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        key, status = record["key"], record["status"]
                    except (ValueError, KeyError, TypeError, RecursionError):
                        torn += 1
                        continue
                    if status != ItemStatus.UPLOADED.value or not isinstance(key, str):
                        continue
                    destination, fingerprint = record.get("destination"), record.get("fingerprint")
                    if isinstance(fingerprint, str) and (destination is None or isinstance(destination, str)):
                        self._done.setdefault(key, set()).add((destination, fingerprint))
                    else:
                        legacy += 1
                        self._done.setdefault(key, set()).add(None)
        except FileNotFoundError:
            pass
        if torn:
            logger.warning("manifest %s: ignored %d unreadable line(s)", self._path, torn)
        if legacy:
            logger.warning(
                "manifest %s: %d line(s) from an earlier version record no destination or content; "
                "their keys are skipped whatever was changed since",
                self._path,
                legacy,
            )
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # A line torn by a crash has no newline: start the next one on a line of its own.
        size = os.fstat(self._fd).st_size
        if size:
            with self._path.open("rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    self._append(b"\n")
        self._loaded = True
        return self.done

    def _append(self, data: bytes) -> None:
        """Append ``data`` whole, or undo what part of it was written and raise.

        ``os.write`` may write less than it was given (a full disk gives a short
        write before it gives ENOSPC): the rest is written until it all is, and a
        write that fails half-way is cut off again, so that the file never ends
        in a partial line that a later record would be glued to.

        Raises:
            OSError: The write failed; the manifest then refuses every later record.
        """
        assert self._fd is not None
        if self._broken is not None:
            raise OSError(errno.EIO, f"an earlier write failed ({self._broken}); nothing more is recorded")
        start = os.fstat(self._fd).st_size
        view = memoryview(data)
        try:
            while view:
                written = os.write(self._fd, view)
                if written <= 0:
                    raise OSError(errno.ENOSPC, "the write made no progress (is the disk full?)")
                view = view[written:]
        except OSError as exc:
            # Undone (O_APPEND: a later write would go to the new end), and refused from
            # now on: the disk that cut this write short would cut the next one too.
            self._broken = exc.strerror or str(exc)
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, start)
            raise

    def _write(self, results: Sequence[ItemResult]) -> None:
        if self._fd is None:
            raise RuntimeError("load() the manifest before recording into it")
        now = time.time()  # wall-clock: a timestamp for people, not a measurement
        lines = []
        for r in results:
            destination, fingerprint = self._meta.get(r.key, (None, None))
            lines.append(
                json.dumps(
                    {
                        "key": r.key,
                        "status": r.status.value,
                        "reason": r.reason,
                        "attempts": r.attempts,
                        "at": now,
                        "destination": destination,
                        "fingerprint": fingerprint,
                    },
                    ensure_ascii=False,
                )
                + "\n"
            )
        self._append("".join(lines).encode("utf-8"))
        os.fsync(self._fd)
        for r in results:
            if r.status is ItemStatus.UPLOADED:
                destination, fingerprint = self._meta.pop(r.key, (None, None))
                seen = self._done.setdefault(r.key, set())
                seen.add((destination, fingerprint) if fingerprint is not None else None)

    async def record(self, results: Sequence[ItemResult]) -> None:
        """Append one line per result and fsync, off the event loop.

        Raises:
            OSError: The write failed or was cut short (nothing of it is left in the file).
        """
        if results:
            await anyio.to_thread.run_sync(self._write, list(results))

    def close(self) -> None:
        """Close the file (a later `load` opens it again)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            self._loaded = False

    def __repr__(self) -> str:
        return f"Manifest({str(self._path)!r}, done={len(self._done)})"
