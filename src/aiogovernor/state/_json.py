"""The default store: one JSON file per environment, written atomically under a file lock."""

from __future__ import annotations

import builtins
import contextlib
import glob
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from aiogovernor._names import check_environment
from aiogovernor._persistence import StateStoreError
from aiogovernor._record import SCHEMA_VERSION, LearnedState

__all__ = ["JsonFileStore", "default_state_dir"]

logger = logging.getLogger("aiogovernor.state")

T = TypeVar("T")

_FORMAT = "aiogovernor-state"


def default_state_dir() -> Path:
    """Where learned state lives: ``$AIOGOVERNOR_STATE_DIR``, else the user's state directory.

    The user's state directory is the one ``platformdirs.user_state_dir("aiogovernor",
    appauthor=False)`` names (``$XDG_STATE_HOME/aiogovernor`` or
    ``~/.local/state/aiogovernor`` on Linux, ``~/Library/Application Support/aiogovernor``
    on macOS, ``%LOCALAPPDATA%\\aiogovernor`` on Windows), computed here so that
    the default store needs no extra dependency.
    """
    override = os.environ.get("AIOGOVERNOR_STATE_DIR")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "aiogovernor"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "aiogovernor"
    xdg = os.environ.get("XDG_STATE_HOME", "").strip()
    base_dir = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base_dir / "aiogovernor"


def _is_environment(stem: str) -> bool:
    """Whether a file's stem is an environment's name (a foreign file's may not be one)."""
    try:
        check_environment(stem)
    except ValueError:
        return False
    return True


class _Damaged(Exception):
    """The file exists but holds nothing this store can read."""


class _NewerSchema(Exception):
    """The file was written by a newer aiogovernor: read nothing, overwrite nothing."""


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock between processes (and threads) on ``lock_path``."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        if sys.platform == "win32":
            import msvcrt

            while True:
                try:
                    msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
                    break
                except OSError:  # LK_LOCK gives up after ten seconds: keep waiting
                    continue
            try:
                yield
            finally:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class JsonFileStore:
    """Learned state in one JSON file per environment: the default store.

    ``<directory>/<environment>.json`` holds every governor of that
    environment. Writes are atomic (a temporary file in the same directory,
    fsync, ``os.replace``) and made under an exclusive file lock, as a
    read-modify-write of that governor's entry only: a process killed
    mid-write leaves the previous file, and processes saving different
    governors at once lose none of them. Files and the directory are created
    private to the user (0600, 0700).

    A damaged file (empty, not JSON, not an object, foreign, an unknown
    schema version, a directory in its place) is logged as one warning and
    read as empty; the next save moves a damaged file aside to
    ``<environment>.json.corrupt`` rather than destroy it, and refuses to
    overwrite a file written by a newer schema version.

    The blocking file work runs in a worker thread (``anyio.to_thread``), one
    hop per call, on asyncio and on trio alike. (aiofiles would take one hop
    per file operation, works on asyncio only, and cannot take the lock.)

    Args:
        directory: Where the files go; defaults to `default_state_dir`.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory = Path(directory).expanduser() if directory is not None else default_state_dir()
        self._warned: set[tuple[str, str]] = set()

    @property
    def directory(self) -> Path:
        """The directory holding the files."""
        return self._directory

    def path_for(self, environment: str) -> Path:
        """The file holding ``environment``'s state."""
        return self._directory / f"{check_environment(environment)}.json"

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self._directory)!r})"

    # -- the async surface -------------------------------------------------

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``; None if none or damaged."""
        return (await self.list(environment)).get(name)

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Write ``state`` for ``name`` into ``environment``'s file, keeping the other entries.

        Raises:
            StateStoreError: If the file cannot be written.
        """
        entry = state.to_json()

        def put(governors: dict[str, Any]) -> bool:
            governors[name] = entry
            return True

        await self._run(self._update_sync, environment, put)

    async def delete(self, environment: str, name: str) -> bool:
        """Remove ``name`` from ``environment``'s file; return whether it was there.

        Raises:
            StateStoreError: If the file cannot be written.
        """

        def drop(governors: dict[str, Any]) -> bool:
            return governors.pop(name, None) is not None

        return await self._run(self._update_sync, environment, drop)

    async def list(self, environment: str) -> dict[str, LearnedState]:
        """Every readable governor entry of ``environment``'s file."""
        return await self._run(self._list_sync, environment)

    async def environments(self) -> builtins.list[str]:
        """The environments that have a file, sorted (skipping `.json` files not named like one)."""
        return await self._run(self._environments_sync)

    async def aclose(self) -> None:
        """Nothing to release: files are opened and closed per call."""

    @staticmethod
    async def _run(func: Callable[..., T], *args: Any) -> T:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(func, *args)

    # -- the blocking work, in a worker thread -------------------------------

    def _warn_once(self, path: Path, problem: str) -> None:
        key = (str(path), problem)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("aiogovernor state file %s %s; using defaults", path, problem)

    def _read_document(self, path: Path) -> dict[str, Any]:
        """The governors dict of the file at ``path``; {} if there is no file.

        Raises:
            _Damaged: The file cannot be read as a state file (the message says why).
            _NewerSchema: The file has an unknown schema version.
        """
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return {}
        except IsADirectoryError:
            raise _Damaged("is a directory") from None
        except OSError as exc:
            raise _Damaged(f"cannot be read ({exc.strerror or exc})") from None
        if not raw.strip():
            raise _Damaged("is empty")
        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, ValueError):
            raise _Damaged("is not valid JSON") from None
        if not isinstance(doc, dict):
            raise _Damaged(f"holds a JSON {type(doc).__name__}, not an object")
        if doc.get("format") != _FORMAT:
            raise _Damaged("is not an aiogovernor state file")
        if doc.get("schema_version") != SCHEMA_VERSION:
            raise _NewerSchema(f"has unknown schema version {doc.get('schema_version')!r}")
        governors = doc.get("governors")
        if not isinstance(governors, dict):
            raise _Damaged("has no 'governors' object")
        return governors

    def _list_sync(self, environment: str) -> dict[str, LearnedState]:
        path = self.path_for(environment)
        try:
            governors = self._read_document(path)
        except (_Damaged, _NewerSchema) as exc:
            self._warn_once(path, str(exc))
            return {}
        result: dict[str, LearnedState] = {}
        for name, entry in governors.items():
            try:
                result[name] = LearnedState.from_json(entry)
            except ValueError as exc:
                self._warn_once(path, f"has a bad entry for {name!r} ({exc})")
        return result

    def _environments_sync(self) -> builtins.list[str]:
        try:
            paths = builtins.list(self._directory.glob("*.json"))
        except OSError:
            return []
        return sorted(p.stem for p in paths if p.is_file() and _is_environment(p.stem))

    def _update_sync(self, environment: str, mutate: Callable[[dict[str, Any]], bool]) -> bool:
        path = self.path_for(environment)
        try:
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            with _locked(self._directory / f".{environment}.lock"):
                self._remove_stale_temporaries(environment)
                try:
                    governors = self._read_document(path)
                except _NewerSchema as exc:
                    raise StateStoreError(f"{path} {exc}: refusing to overwrite it") from None
                except _Damaged as exc:
                    if path.is_dir():
                        raise StateStoreError(f"{path} is a directory: cannot write state there") from None
                    self._warn_once(path, str(exc))
                    backup = path.with_name(path.name + ".corrupt")
                    with contextlib.suppress(OSError):
                        os.replace(path, backup)
                    governors = {}
                changed = mutate(governors)
                if changed:
                    self._write_atomically(path, environment, governors)
                return changed
        except OSError as exc:
            raise StateStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc

    def _remove_stale_temporaries(self, environment: str) -> None:
        # Every writer holds the lock while its temporary file exists, so any
        # found while holding it was left by a writer that died (kill -9).
        # The name is escaped: "prod*" must not match (and delete) "prod-eu"'s live temporaries.
        # And the random part is mkstemp's (no dot): "api" must not take "api.json.eu"'s for its own.
        prefix = f".{environment}.json."
        for tmp in self._directory.glob(f"{glob.escape(prefix)}*.tmp"):
            if "." in tmp.name[len(prefix) : -len(".tmp")]:
                continue
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _write_atomically(self, path: Path, environment: str, governors: dict[str, Any]) -> None:
        doc = {
            "format": _FORMAT,
            "schema_version": SCHEMA_VERSION,
            "environment": environment,
            "governors": dict(sorted(governors.items())),
        }
        data = json.dumps(doc, indent=2, allow_nan=False).encode() + b"\n"
        # mkstemp creates the file 0600: private to the user from the start.
        fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=f".{environment}.json.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if sys.platform != "win32":
            # Make the rename itself durable.
            dir_fd = os.open(self._directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
