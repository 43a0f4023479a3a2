"""The manifest: a JSON-lines record of every item's outcome, so that a rerun skips what is done."""

from __future__ import annotations

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

    A rerun given the same manifest skips every key a line marks
    ``uploaded``: creates may not be idempotent, so nothing recorded as done
    is sent twice, even after a crash. Lines are written whole with one
    append each and synced before the upload goes on; a line torn by a crash
    is ignored (with a log warning) on the next load. The file is created
    readable by its owner only. It holds keys, statuses and reasons, never
    headers or bodies.

    An item whose request was in flight when the process died is not in the
    manifest and is sent again: only the upstream can make that case exactly-once.

    Args:
        path: The manifest file; made (with its folder) if missing.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not isinstance(path, str | os.PathLike):
            raise TypeError(f"path must be a str or os.PathLike, got {path!r}")
        self._path = Path(path)
        self._done: set[str] = set()
        self._fd: int | None = None
        self._loaded = False

    @property
    def path(self) -> Path:
        """The manifest file."""
        return self._path

    @property
    def done(self) -> frozenset[str]:
        """The keys recorded as uploaded (after `load`)."""
        return frozenset(self._done)

    def load(self) -> frozenset[str]:
        """Read the file (if any) and open it for appending; return the keys already uploaded."""
        if self._loaded:
            return self.done
        self._path.parent.mkdir(parents=True, exist_ok=True)
        torn = 0
        try:
            with self._path.open("rb") as f:
                for line in f:
                    try:
                        record = json.loads(line)
                        key, status = record["key"], record["status"]
                    except (ValueError, KeyError, TypeError):
                        torn += 1
                        continue
                    if status == ItemStatus.UPLOADED.value and isinstance(key, str):
                        self._done.add(key)
        except FileNotFoundError:
            pass
        if torn:
            logger.warning("manifest %s: ignored %d unreadable line(s)", self._path, torn)
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        # A line torn by a crash has no newline: start the next one on a line of its own.
        size = os.fstat(self._fd).st_size
        if size:
            with self._path.open("rb") as f:
                f.seek(size - 1)
                if f.read(1) != b"\n":
                    os.write(self._fd, b"\n")
        self._loaded = True
        return self.done

    def _write(self, results: Sequence[ItemResult]) -> None:
        if self._fd is None:
            raise RuntimeError("load() the manifest before recording into it")
        now = time.time()  # wall-clock: a timestamp for people, not a measurement
        lines = [
            json.dumps(
                {
                    "key": r.key,
                    "status": r.status.value,
                    "reason": r.reason,
                    "attempts": r.attempts,
                    "at": now,
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in results
        ]
        os.write(self._fd, "".join(lines).encode("utf-8"))
        os.fsync(self._fd)
        for r in results:
            if r.status is ItemStatus.UPLOADED:
                self._done.add(r.key)

    async def record(self, results: Sequence[ItemResult]) -> None:
        """Append one line per result and fsync, off the event loop."""
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
