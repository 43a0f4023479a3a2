"""The default store: one SQLite file per environment, one JSON record per governor."""

from __future__ import annotations

import atexit
import builtins
import contextlib
import json
import logging
import math
import os
import sqlite3
import stat
import sys
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from aiogovernor._names import check_environment
from aiogovernor._persistence import StateStoreError
from aiogovernor._record import SCHEMA_VERSION, LearnedState

__all__ = ["JsonFileStore", "default_state_dir"]

logger = logging.getLogger("aiogovernor.state")

T = TypeVar("T")

_FORMAT = "aiogovernor-state"  # the legacy whole-environment JSON file's "format"
_SUFFIX = ".sqlite3"
_APPLICATION_ID = 0x61696F67  # "aiog": tells our databases from any other SQLite file
_LAYOUT_VERSION = 1  # PRAGMA user_version: the table layout, not the record's schema
_MAX_RECORD_BYTES = 1 << 20  # a record is a few hundred bytes; room for a decision history
_MAX_LEGACY_BYTES = 64 << 20
_MAX_THREADS = 4  # state I/O's share of threads: never anyio's whole default pool
_MAX_CONNECTIONS = 32  # open databases kept per process (3 descriptors each)

# Files are opened without following a symbolic link, and without blocking on a FIFO.
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_BINARY = getattr(os, "O_BINARY", 0)

# SQLite's result codes for a file that is not, or no longer, a database.
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


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


def _make_private_dirs(directory: Path) -> None:
    """Create ``directory`` and its missing parents, each 0700 whatever the umask."""
    missing: builtins.list[Path] = []
    d = directory
    while not d.exists():
        missing.append(d)
        if d.parent == d:
            break
        d = d.parent
    for d in reversed(missing):
        with contextlib.suppress(FileExistsError):
            os.mkdir(d, 0o700)
            os.chmod(d, 0o700)  # the umask may have taken bits away (or 0o700 & ~umask < 0o700)
    if not directory.is_dir():
        raise NotADirectoryError(f"{directory} is not a directory")


def _make_private(path: Path) -> None:
    """Give a file we moved or made mode 0600 (never through a symbolic link)."""
    with contextlib.suppress(OSError):
        if stat.S_ISREG(os.lstat(path).st_mode):
            os.chmod(path, 0o600)


def _read_bounded(path: Path, limit: int) -> bytes | None:
    """The bytes of the regular file at ``path``, at most ``limit``; None if there is no file.

    Never follows a symbolic link, never blocks on a FIFO, never reads a
    device or a file larger than ``limit`` (``/dev/zero`` would never end).

    Raises:
        _Damaged: The path holds something else, or cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | _O_NOFOLLOW | _O_NONBLOCK | _O_CLOEXEC | _O_BINARY)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if os.path.islink(path):
            raise _Damaged("is a symbolic link") from None
        if os.path.isdir(path):
            raise _Damaged("is a directory") from None
        raise _Damaged(f"cannot be read ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise _Damaged("is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise _Damaged("is not a regular file")
        if st.st_size > limit:
            raise _Damaged(f"is larger than {limit} bytes")
        chunks = []
        left = limit + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        data = b"".join(chunks)
        if len(data) > limit:
            raise _Damaged(f"is larger than {limit} bytes")
        return data
    except OSError as exc:
        raise _Damaged(f"cannot be read ({exc.strerror or exc})") from None
    finally:
        os.close(fd)


def _parse_json(raw: bytes | str) -> Any:
    """``json.loads`` whose every failure is a ValueError (deep nesting raises RecursionError)."""
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(type(exc).__name__) from None


def _read_legacy(path: Path) -> dict[str, Any] | None:
    """The raw governor entries of an environment's legacy JSON file; None if there is none.

    Raises:
        _Damaged: The file cannot be read as a state file (the message says why).
        _NewerSchema: The file has an unknown schema version.
    """
    raw = _read_bounded(path, _MAX_LEGACY_BYTES)
    if raw is None:
        return None
    if not raw.strip():
        raise _Damaged("is empty")
    try:
        doc = _parse_json(raw)
    except ValueError:
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


def _decode(raw: object) -> LearnedState:
    """A record's text as a `LearnedState`.

    Raises:
        ValueError: If it is not one (bad JSON, a field out of range, another schema version).
    """
    if not isinstance(raw, str):
        raise ValueError(f"a record must be JSON text, got {type(raw).__name__}")
    return LearnedState.from_json(_parse_json(raw))


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock between processes (and threads) on ``lock_path``.

    The lock file is opened without following a symbolic link: a link planted
    in its place must not make the store create or touch a file elsewhere.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
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

            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise OSError(f"{lock_path} is not a regular file")
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _Database:
    """One open environment database, shared by every store of the process that uses its path.

    A connection is used by one thread at a time (``lock``); it is reopened
    when the file at the path is no longer the file it opened (moved aside,
    deleted, replaced) and after a ``fork``.
    """

    __slots__ = ("conn", "identity", "lock", "pid")

    def __init__(self, conn: sqlite3.Connection, identity: tuple[int, int]) -> None:
        self.conn = conn
        self.identity = identity
        self.lock = threading.Lock()
        self.pid = os.getpid()


_databases: OrderedDict[str, _Database] = OrderedDict()
_databases_lock = threading.Lock()


def _forget_database(path: Path, *, wait_s: float = -1) -> None:
    """Close and drop the process's connection to ``path`` (one inherited over a fork is only dropped).

    With ``wait_s`` >= 0, give up closing after that long if another thread holds the
    connection (a write stuck on a stalled disk): the operating system closes it at exit,
    and SQLite recovers the write-ahead log on the next open.
    """
    with _databases_lock:
        db = _databases.pop(str(path), None)
    if db is None or db.pid != os.getpid():
        return
    if not db.lock.acquire(timeout=wait_s):
        return
    try:
        with contextlib.suppress(sqlite3.Error):
            db.conn.close()
    finally:
        db.lock.release()


_EXIT_CLOSE_WAIT_S = 1.0


@atexit.register
def _close_databases() -> None:
    # Closed, not left to the collector: the last connection to close checkpoints the
    # WAL into the database, and newer Pythons warn about connections never closed.
    # Bounded: an exit hook must never hang the exit, even behind a writer stuck on its disk.
    with _databases_lock:
        paths = list(_databases)
    for path in paths:
        _forget_database(Path(path), wait_s=_EXIT_CLOSE_WAIT_S)


def _connect(path: Path, *, check: bool = True) -> sqlite3.Connection:
    """Open the existing database at ``path`` (never creating one: ``mode=rw``).

    With ``check``, the file must be one of ours (see `_check_layout`),
    checked before anything is written to it: another program's database is
    left as it was.
    """
    uri = f"file:{quote(str(path.absolute()))}?mode=rw"
    conn = sqlite3.connect(uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False)
    try:
        if check:
            _check_layout(conn)
        # WAL: readers never wait for the writer, and a commit appends to one file.
        # synchronous=NORMAL: a commit survives the process being killed (kill -9); a
        # power cut may lose the last commits, never the file. Learned state is a hint.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


def _is_damage(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code in (_SQLITE_CORRUPT, _SQLITE_NOTADB) or (type(exc) is sqlite3.DatabaseError and code is None)


class _Uninitialised(Exception):
    """An empty database: being made by another process, or an empty file."""


def _check_layout(conn: sqlite3.Connection) -> None:
    """Check that ``conn`` is one of our databases, in a layout this version reads.

    Raises:
        _Uninitialised: An empty database (no tables, no marks).
        _Damaged: Another program's SQLite file.
        _NewerSchema: Ours, written by a newer aiogovernor.
    """
    # One statement, so one snapshot: read one by one, another process's initialising
    # transaction could commit between the reads, and a half-seen header (tables but no
    # marks yet) would pass for another program's file and be moved aside.
    app, version, tables = conn.execute(
        "SELECT (SELECT application_id FROM pragma_application_id),"
        " (SELECT user_version FROM pragma_user_version),"
        " (SELECT count(*) FROM sqlite_master)"
    ).fetchone()
    if app == 0 and version == 0 and tables == 0:
        raise _Uninitialised
    if app != _APPLICATION_ID:
        raise _Damaged("is not an aiogovernor state database")
    if version != _LAYOUT_VERSION:
        raise _NewerSchema(f"has unknown layout version {version!r}")


def _initialise(conn: sqlite3.Connection) -> None:
    # WITHOUT ROWID: the records are stored in the name's own index. The record is
    # JSON text, so a field added later (a decision history, a chunk size) needs no
    # new column, and `state export` shows it as it is. One transaction: another
    # process sees an empty database or a whole one.
    with conn:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS governors (name TEXT PRIMARY KEY NOT NULL, record TEXT NOT NULL)"
            " WITHOUT ROWID"
        )
        conn.execute(f"PRAGMA application_id={_APPLICATION_ID}")
        conn.execute(f"PRAGMA user_version={_LAYOUT_VERSION}")


_thread_limiter: Any = None


def _state_threads() -> Any:
    """The capacity limiter of state I/O in the running event loop (made on first use)."""
    global _thread_limiter
    import anyio
    from anyio.lowlevel import RunVar

    if _thread_limiter is None:
        _thread_limiter = RunVar("aiogovernor_state_threads")
    try:
        return _thread_limiter.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(_MAX_THREADS)
        _thread_limiter.set(limiter)
        return limiter


class JsonFileStore:
    """Learned state in files, one per environment: the default store.

    ``<directory>/<environment>.sqlite3`` is an SQLite database (the
    standard library's ``sqlite3``) holding one JSON record per governor,
    keyed by its name. A save is one atomic upsert of that governor's record
    and a load reads that record alone, so both cost the same with ten or
    ten thousand other governors in the environment. The database runs in
    WAL mode: processes saving at once wait for each other briefly and lose
    nothing, readers never wait, and a process killed mid-write (kill -9)
    leaves every committed record intact. Files and the directory are created
    private to the user (0600, 0700, whatever the umask).

    A damaged file (not a database, another program's database, a FIFO,
    a symbolic link or a directory in its place) and a damaged record are
    logged as one warning and read as absent; the next save moves a damaged
    file aside to ``<environment>.sqlite3.corrupt`` rather than destroy it,
    and refuses to overwrite one written by a newer aiogovernor.

    The whole-environment JSON files of earlier versions (``<environment>.json``)
    are migrated on first use: their records are copied, bad ones included
    (so that ``state reset`` can remove them), and the file is kept as
    ``<environment>.json.migrated``.

    The blocking work runs in a worker thread (``anyio.to_thread``), one hop
    per call, on asyncio and on trio alike, on at most four threads of the
    shared pool whatever the number of governors.

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
        """The database file holding ``environment``'s state."""
        return self._directory / f"{check_environment(environment)}{_SUFFIX}"

    def _legacy_path(self, environment: str) -> Path:
        return self._directory / f"{environment}.json"

    def __repr__(self) -> str:
        return f"JsonFileStore({str(self._directory)!r})"

    # -- the async surface -------------------------------------------------

    async def load(self, environment: str, name: str) -> LearnedState | None:
        """The state saved for ``name`` in ``environment``; None if none or damaged."""
        return await self._run(self._load_sync, environment, name)

    async def save(self, environment: str, name: str, state: LearnedState) -> None:
        """Write ``state`` as ``name``'s record in ``environment``, leaving the others untouched.

        Raises:
            StateStoreError: If the file cannot be written.
        """
        record = state.to_json_text()
        check_environment(environment)
        await _committer().save(self, environment, name, record)

    async def save_record(self, environment: str, name: str, record: str) -> None:
        """`save` of a record already turned into JSON text (`LearnedState.to_json_text`).

        What a governor calls: the decisions it keeps are kept as text, joined into
        the record as they are rather than built again as objects at every save.

        Raises:
            StateStoreError: If the file cannot be written.
        """
        check_environment(environment)
        await _committer().save(self, environment, name, record)

    def save_blocking(self, environment: str, name: str, state: LearnedState) -> None:
        """`save`, blocking the calling thread: how a governor's state is written at interpreter exit.

        The environment's connection is closed afterwards (the exit's order of hooks is not ours).

        Raises:
            StateStoreError: If the file cannot be written.
        """
        self.save_record_blocking(environment, name, state.to_json_text())

    def save_record_blocking(self, environment: str, name: str, record: str) -> None:
        """`save_blocking` of a record already turned into JSON text (what a governor writes at exit).

        Raises:
            StateStoreError: If the file cannot be written.
        """
        check_environment(environment)
        try:
            self._save_sync(environment, name, record)
        finally:
            # At exit this may run after `_close_databases`: leave no connection open behind.
            _forget_database(self.path_for(environment))

    async def delete(self, environment: str, name: str) -> bool:
        """Remove ``name``'s record (readable or not) from ``environment``; return whether it was there.

        Raises:
            StateStoreError: If the file cannot be written.
        """
        return await self._run(self._delete_sync, environment, name)

    async def list(self, environment: str) -> dict[str, LearnedState]:
        """Every readable governor record of ``environment`` (a bad one is skipped with a warning)."""
        return await self._run(self._list_sync, environment)

    async def names(self, environment: str) -> builtins.list[str]:
        """Every governor name with a record in ``environment``, readable or not, sorted.

        What ``state reset`` removes: a record too damaged to load is listed here.
        """
        return await self._run(self._names_sync, environment)

    async def environments(self) -> builtins.list[str]:
        """The environments that have a file, sorted (skipping files not named like one)."""
        return await self._run(self._environments_sync)

    async def aclose(self) -> None:
        """Nothing to release: the process's open databases are shared by every store."""

    @staticmethod
    async def _run(func: Callable[..., T], *args: Any) -> T:
        import anyio.to_thread

        return await anyio.to_thread.run_sync(func, *args, limiter=_state_threads())

    # -- the blocking work, in a worker thread -------------------------------

    def _warn_once(self, path: Path, problem: str) -> None:
        key = (str(path), problem)
        if key not in self._warned:
            self._warned.add(key)
            logger.warning("aiogovernor state file %s %s; using defaults", path, problem)

    def _database(self, environment: str, *, create: bool) -> _Database | None:
        """The open database of ``environment``; None if it has none (and ``create`` is False).

        Migrates a legacy JSON file first, when there is one.

        Raises:
            _Damaged: The file is not a database of ours.
            _NewerSchema: It was written by a newer aiogovernor.
            OSError, sqlite3.Error: It cannot be opened (or created).
        """
        path = self.path_for(environment)
        key = str(path)
        try:
            st: os.stat_result | None = os.lstat(path)
        except FileNotFoundError:
            st = None
        if st is not None:
            # Checked before SQLite opens it: a FIFO would block the open, a device
            # (/dev/zero) would never end, a link would lead out of the directory.
            if stat.S_ISLNK(st.st_mode):
                raise _Damaged("is a symbolic link")
            if stat.S_ISDIR(st.st_mode):
                raise _Damaged("is a directory")
            if not stat.S_ISREG(st.st_mode):
                raise _Damaged("is not a regular file")
            identity = (st.st_dev, st.st_ino)
            with _databases_lock:
                db = _databases.get(key)
                if db is not None and db.identity == identity and db.pid == os.getpid():
                    _databases.move_to_end(key)
                    return db
            if db is not None:
                _forget_database(path)  # moved aside, replaced, or inherited over a fork
            try:
                db = self._open(path, identity)
            except _Uninitialised:
                pass
            else:
                if self._legacy_path(environment).exists():
                    self._migrate(environment, path)  # a migration cut short, or an older writer
                return db
        if not create and not self._legacy_path(environment).exists():
            return None
        self._create(environment, path)
        try:
            return self._database(environment, create=False)
        except _Uninitialised:  # pragma: no cover - made and initialised just now
            return None

    def _open(self, path: Path, identity: tuple[int, int]) -> _Database:
        db = _Database(_connect(path), identity)
        with _databases_lock:
            _databases[str(path)] = db
            while len(_databases) > _MAX_CONNECTIONS:
                _, old = _databases.popitem(last=False)
                if old.pid == os.getpid():
                    with old.lock, contextlib.suppress(sqlite3.Error):
                        old.conn.close()
        return db

    def _create(self, environment: str, path: Path) -> None:
        """Make and initialise ``environment``'s database, importing its legacy file, under its lock."""
        _make_private_dirs(self._directory)
        with _locked(self._directory / f".{environment}.lock"):
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                # A WAL or shared-memory file without its database is left over from a file
                # moved aside: it must not be replayed into the new one.
                for extra in ("-wal", "-shm", "-journal"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(f"{path}{extra}")
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC, 0o600)
                try:
                    if sys.platform != "win32":
                        os.fchmod(fd, 0o600)  # exactly 0600, whatever the umask
                finally:
                    os.close(fd)
            else:
                if not stat.S_ISREG(st.st_mode):
                    return  # the caller reports what is there
            try:
                conn = _connect(path)
            except _Uninitialised:
                conn = _connect(path, check=False)
                try:
                    _initialise(conn)
                finally:
                    conn.close()
            except (_Damaged, _NewerSchema):
                return  # the caller reports it
            else:
                conn.close()
            self._migrate_locked(environment, path)

    def _migrate(self, environment: str, path: Path) -> None:
        with _locked(self._directory / f".{environment}.lock"):
            self._migrate_locked(environment, path)

    def _migrate_locked(self, environment: str, path: Path) -> None:
        """Copy the legacy file's records into the database, then keep it as ``.json.migrated``."""
        legacy = self._legacy_path(environment)
        try:
            governors = _read_legacy(legacy)
        except _NewerSchema as exc:
            self._warn_once(legacy, f"{exc}; leaving it alone")
            return
        except _Damaged as exc:
            self._warn_once(legacy, str(exc))
            self._move_aside(legacy)
            return
        if governors is None:
            return
        rows = []
        for name, entry in governors.items():
            try:
                text = json.dumps(entry)
            except (TypeError, ValueError):
                continue
            rows.append((name, text))
        conn = _connect(path)
        try:
            # OR IGNORE: a record saved since (by a newer process) is newer than the legacy one.
            with conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT OR IGNORE INTO governors (name, record) VALUES (?, ?)", rows)
        finally:
            conn.close()
        migrated = legacy.with_name(legacy.name + ".migrated")
        os.replace(legacy, migrated)
        _make_private(migrated)
        logger.info("aiogovernor state file %s migrated into %s", legacy, path)

    def _move_aside(self, path: Path) -> None:
        backup = path.with_name(path.name + ".corrupt")
        with contextlib.suppress(OSError):
            os.replace(path, backup)
            _make_private(backup)  # a backup must not keep a world-readable mode

    def _reading(self, environment: str) -> _Database | None:
        """The database to read; None (with a warning when damaged) when there is nothing to read."""
        path = self.path_for(environment)
        try:
            return self._database(environment, create=False)
        except (_Damaged, _NewerSchema) as exc:
            self._warn_once(path, str(exc))
        except sqlite3.Error as exc:
            if _is_damage(exc):
                self._warn_once(path, "is not a readable database")
            else:
                self._warn_once(path, f"cannot be read ({exc})")
        except OSError as exc:
            self._warn_once(path, f"cannot be read ({exc.strerror or exc})")
        return None

    def _records(self, environment: str, name: str | None = None) -> builtins.list[tuple[str, Any]]:
        """(name, record text) of every governor of ``environment``, or of ``name`` alone."""
        db = self._reading(environment)
        if db is None:
            return self._legacy_records(environment, name)
        sql = "SELECT name, record FROM governors"
        args: tuple[str, ...] = ()
        if name is not None:
            sql, args = sql + " WHERE name = ?", (name,)
        try:
            with db.lock:
                return db.conn.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            path = self.path_for(environment)
            if _is_damage(exc):
                _forget_database(path)
                self._warn_once(path, "is not a readable database")
            else:
                self._warn_once(path, f"cannot be read ({exc})")
            return []

    def _legacy_records(self, environment: str, name: str | None) -> builtins.list[tuple[str, Any]]:
        """Records read straight from a legacy file that could not be migrated (a read-only folder)."""
        legacy = self._legacy_path(environment)
        if not legacy.exists():
            return []
        try:
            governors = _read_legacy(legacy) or {}
        except (_Damaged, _NewerSchema) as exc:
            self._warn_once(legacy, str(exc))
            return []
        return [(n, json.dumps(entry)) for n, entry in governors.items() if name in (None, n)]

    def _decoded(self, environment: str, name: str, raw: object) -> LearnedState | None:
        try:
            return _decode(raw)
        except ValueError as exc:
            self._warn_once(self.path_for(environment), f"has a bad record for {name!r} ({exc})")
            return None

    def _load_sync(self, environment: str, name: str) -> LearnedState | None:
        rows = self._records(environment, name)
        return self._decoded(environment, name, rows[0][1]) if rows else None

    def _list_sync(self, environment: str) -> dict[str, LearnedState]:
        decoded = ((name, self._decoded(environment, name, raw)) for name, raw in self._records(environment))
        return {name: state for name, state in decoded if state is not None}

    def _names_sync(self, environment: str) -> builtins.list[str]:
        return sorted(name for name, _ in self._records(environment))

    def _environments_sync(self) -> builtins.list[str]:
        try:
            entries = builtins.list(os.scandir(self._directory))
        except OSError:
            return []
        found = set()
        for entry in entries:
            for suffix in (_SUFFIX, ".json"):
                stem = entry.name[: -len(suffix)]
                if entry.name.endswith(suffix) and _is_environment(stem):
                    with contextlib.suppress(OSError):
                        if entry.is_file(follow_symlinks=False):
                            found.add(stem)
        return sorted(found)

    def _write(self, environment: str, action: Callable[[sqlite3.Connection], int]) -> int:
        """Run ``action`` (statements that write) on the environment's database; return its count.

        A damaged file is moved aside (once) and the statement runs on a new one.

        Raises:
            StateStoreError: The file cannot be written (or was written by a newer aiogovernor).
        """
        path = self.path_for(environment)
        for attempt in (1, 2):
            try:
                try:
                    db = self._database(environment, create=True)
                    if db is None:  # pragma: no cover - made just now
                        raise OSError("the database could not be made")
                    with db.lock:
                        return action(db.conn)
                except _Damaged as exc:
                    problem = str(exc)
                except sqlite3.DatabaseError as exc:
                    if not _is_damage(exc):
                        raise
                    problem = "is not a readable database"
                if attempt == 2 or os.path.isdir(path):
                    raise StateStoreError(f"cannot write {path}: it {problem}")
                self._warn_once(path, problem)
                self._replace_damaged(environment, path)
            except _NewerSchema as exc:
                raise StateStoreError(f"{path} {exc}: refusing to overwrite it") from None
            except sqlite3.Error as exc:
                raise StateStoreError(f"cannot write {path}: {exc}") from exc
            except OSError as exc:
                raise StateStoreError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    def _replace_damaged(self, environment: str, path: Path) -> None:
        _forget_database(path)
        _make_private_dirs(self._directory)
        with _locked(self._directory / f".{environment}.lock"):
            try:
                self._database(environment, create=False)
            except (_Damaged, sqlite3.DatabaseError):
                pass
            else:
                return  # another process replaced it first
            self._move_aside(path)
            for extra in ("-wal", "-shm"):
                backup = Path(f"{path}.corrupt{extra}")
                with contextlib.suppress(OSError):
                    os.replace(f"{path}{extra}", backup)
                    _make_private(backup)

    def _save_sync(self, environment: str, name: str, record: str) -> None:
        self._save_many_sync(environment, {name: record})

    def _save_many_sync(self, environment: str, records: dict[str, str]) -> None:
        """Upsert ``records`` (name: record text) in one transaction."""
        rows = list(records.items())

        def upsert(conn: sqlite3.Connection) -> int:
            with conn:  # commits, or rolls back on an error
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_UPSERT, rows)
            return len(rows)

        self._write(environment, upsert)

    def _delete_sync(self, environment: str, name: str) -> bool:
        if self._reading(environment) is None and not self._legacy_path(environment).exists():
            return False  # nothing to delete: do not create a file to find that out
        return self._write(environment, lambda conn: conn.execute(_DELETE, (name,)).rowcount) > 0


_UPSERT = (
    "INSERT INTO governors (name, record) VALUES (?, ?)"
    " ON CONFLICT (name) DO UPDATE SET record = excluded.record"
)
_DELETE = "DELETE FROM governors WHERE name = ?"


class _Batch:
    """The saves of one group commit: records by (store directory, environment), and how each ended."""

    __slots__ = ("done", "errors", "records", "stores")

    def __init__(self) -> None:
        import anyio

        self.records: dict[tuple[str, str], dict[str, str]] = {}
        self.stores: dict[str, JsonFileStore] = {}
        self.errors: dict[tuple[str, str], BaseException] = {}
        self.done = anyio.Event()

    def write(self) -> None:
        """Write every group, one transaction each (in a worker thread)."""
        for (directory, environment), records in self.records.items():
            try:
                self.stores[directory]._save_many_sync(environment, records)
            except Exception as exc:
                self.errors[(directory, environment)] = exc


class _Committer:
    """Saves of one event loop, gathered for `_GROUP_COMMIT_S` into one thread hop and transaction.

    A thread hop costs far more CPU than the upsert it carries (it wakes a
    thread and then the loop again); a thousand governors saving every few
    seconds would spend most of their state CPU on hops. The first save of a
    batch leads it: while saves come thick it waits the window, then writes
    every record gathered meanwhile; the others wait for that write and get
    its outcome. Batches
    are written one after another, so a later save of a governor is never
    overwritten by an earlier one.
    """

    def __init__(self) -> None:
        import anyio

        self._batch: _Batch | None = None
        self._writing = anyio.Lock()
        self._last_write_at = -math.inf

    async def save(self, store: JsonFileStore, environment: str, name: str, record: str) -> None:
        import anyio
        import anyio.to_thread

        directory = str(store.directory)
        batch = self._batch
        leader = batch is None
        if batch is None:
            batch = self._batch = _Batch()
        batch.stores.setdefault(directory, store)
        batch.records.setdefault((directory, environment), {})[name] = record
        # Shielded, as a thread hop is: once in a batch, the record is written, and the
        # other saves of the batch are not left waiting for a leader that went away.
        with anyio.CancelScope(shield=True):
            if leader:
                try:
                    if anyio.current_time() - self._last_write_at < _BUSY_S:
                        await anyio.sleep(_GROUP_COMMIT_S)  # saves are coming thick: gather them
                    self._batch = None
                    async with self._writing:
                        await anyio.to_thread.run_sync(batch.write, limiter=_state_threads())
                finally:
                    self._batch = None if self._batch is batch else self._batch
                    self._last_write_at = anyio.current_time()
                    batch.done.set()
            else:
                await batch.done.wait()
        error = batch.errors.get((directory, environment))
        if error is not None:
            raise error


# A save waits this long for others to share its hop, but only while saves come thick
# (the last write ended less than _BUSY_S ago): a lone save is written at once.
_GROUP_COMMIT_S = 0.02
_BUSY_S = 0.25
_committer_var: Any = None


def _committer() -> _Committer:
    global _committer_var
    from anyio.lowlevel import RunVar

    if _committer_var is None:
        _committer_var = RunVar("aiogovernor_state_committer")
    try:
        committer: _Committer = _committer_var.get()
    except LookupError:
        committer = _Committer()
        _committer_var.set(committer)
    return committer
