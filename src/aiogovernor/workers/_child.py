"""The process a Python worker runs: ``python .../_child.py``, speaking pickled frames on stdin/stdout.

Run by path, not with ``-m``: ``-m aiogovernor.workers._child`` would import
``aiogovernor`` and its dependencies first (about 150 ms here), while this
module needs the standard library only. It must stay that way.

The protocol (each frame is a 4-byte big-endian length and a pickle):

1. the parent sends ``(preparation, fn_pickle)``: how to rebuild the parent's
   ``sys.path`` and ``__main__`` (as `multiprocessing`'s spawn start method
   does), and the pickled callable;
2. the child answers ``("ready", pid)``, or ``("start_failed", text)``;
3. then, for each job, the parent sends ``(key, payload_pickle)`` and the child
   answers ``(key, True, result)`` or ``(key, False, (exception_pickle, summary, traceback_text))``.

The end of stdin means "exit now": between jobs it is how the parent retires
a worker; during a job it means the parent died, and the worker must not live
on as an orphan, so a thread watching stdin exits the process at once.
"""

from __future__ import annotations

import os
import queue
import signal
import struct
import sys
import threading

try:
    # The C pickler itself: the `pickle` module around it imports `re` (20-30 ms of every start).
    from _pickle import dumps as _dumps
    from _pickle import loads as _loads
except ImportError:  # pragma: no cover - another Python implementation
    from pickle import dumps as _dumps
    from pickle import loads as _loads

TYPE_CHECKING = False
if TYPE_CHECKING:  # `typing` costs every start 10-20 ms; annotations only need it for checkers
    from typing import Any, BinaryIO

_HEADER = struct.Struct(">I")
_PROTOCOL = 5  # pickle.HIGHEST_PROTOCOL on every supported Python


def _read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(header)
    body = stream.read(size)
    if len(body) < size:
        raise EOFError
    return _loads(body)


def _write(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _write_frame(fd: int, message: Any) -> None:
    body = _dumps(message, protocol=_PROTOCOL)
    _write(fd, _HEADER.pack(len(body)) + body)


def _watch_stdin(stdin: BinaryIO, jobs: queue.SimpleQueue[Any]) -> None:
    try:
        while True:
            jobs.put(_read_frame(stdin))
    except BaseException:
        # EOF (or a broken pipe): the parent retired this worker or died. Exit
        # now, whatever the main thread is doing: no orphan outlives its pool.
        os._exit(0)


_MAIN = b"__main__"  # a pickle that refers to the parent's main module names it


def _prepare(preparation: dict[str, Any]) -> None:
    """Rebuild the parent's import path, as multiprocessing's spawn does."""
    sys.path[:] = preparation["sys_path"]
    sys.argv = preparation["sys_argv"]
    os.chdir(preparation["dir"])


_main_imported = False


def _import_main(preparation: dict[str, Any]) -> None:
    """Run the parent's ``__main__`` again as ``__mp_main__``, as multiprocessing's spawn does.

    Its ``if __name__ == "__main__":`` block does not run. Done only when a
    pickle refers to ``__main__`` (the callable, or a payload, is defined in
    the main script): re-running a script that imports much (aiogovernor,
    asyncio, ...) would cost every worker start that much. Written out rather
    than calling ``multiprocessing.spawn.prepare``: importing multiprocessing
    costs every worker start about 50 ms.
    """
    global _main_imported
    if _main_imported:
        return
    _main_imported = True
    import runpy
    import types

    name = preparation.get("main_name")
    path = preparation.get("main_path")
    if name is not None:
        if name == "__main__" or name.endswith(".__main__"):
            return  # a package's __main__ (python -m pytest, say): nothing of it is needed
        main = types.ModuleType("__mp_main__")
        main.__dict__.update(runpy.run_module(name, run_name="__mp_main__", alter_sys=True))
    elif path is not None:
        main = types.ModuleType("__mp_main__")
        main.__dict__.update(runpy.run_path(path, run_name="__mp_main__"))
    else:
        return
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main


def _traceback_text(exc: BaseException) -> str:
    import traceback  # only when something failed: it costs every start 30-45 ms

    return "".join(traceback.format_exception(exc))


def _failure(exc: BaseException) -> tuple[bytes | None, str, str]:
    summary = f"{type(exc).__qualname__}: {exc}"
    text = _traceback_text(exc)
    try:
        data = _dumps(exc, protocol=_PROTOCOL)
        _loads(data)  # an exception that pickles but cannot be rebuilt is sent as text only
    except Exception:
        return None, summary, text
    return data, summary, text


def main() -> None:
    # The pool decides when a worker stops: Ctrl-C in a terminal reaches the
    # whole process group, and must not kill workers in the middle of a job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the original stdout; anything the job prints goes to stderr.
    out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    stdin = sys.stdin.buffer
    try:
        preparation, fn_pickle = _read_frame(stdin)
    except EOFError:
        return
    try:
        _prepare(preparation)
        if _MAIN in fn_pickle:
            _import_main(preparation)
        fn = _loads(fn_pickle)
    except BaseException as exc:
        _write_frame(out, ("start_failed", _traceback_text(exc)))
        return
    is_async = _is_async(fn)
    loop = None
    if is_async:
        import asyncio

        loop = asyncio.new_event_loop()
    jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
    threading.Thread(target=_watch_stdin, args=(stdin, jobs), daemon=True, name="stdin-watch").start()
    try:
        _write_frame(out, ("ready", os.getpid()))
    except OSError:
        os._exit(0)
    while True:
        key, payload_pickle = jobs.get()
        try:
            if _MAIN in payload_pickle:
                _import_main(preparation)
            payload = _loads(payload_pickle)
            result = loop.run_until_complete(fn(payload)) if loop is not None else fn(payload)
            reply: Any = (key, True, result)
            body = _dumps(reply, protocol=_PROTOCOL)
        except BaseException as exc:
            if isinstance(exc, SystemExit):
                # The job asked the process to exit: it does, at once (the parent reports
                # a worker that died). Not through interpreter shutdown: the stdin watcher
                # thread holds stdin's lock, and finalizing would abort.
                sys.stderr.flush()
                os._exit(exc.code if isinstance(exc.code, int) else 1)
            reply = (key, False, _failure(exc))
            body = _dumps(reply, protocol=_PROTOCOL)
        try:
            _write(out, _HEADER.pack(len(body)) + body)
        except OSError:
            # The parent is gone (a broken pipe): leave at once, as the stdin watcher would.
            os._exit(0)


def _is_async(fn: Any) -> bool:
    """`inspect.iscoroutinefunction` (of ``fn`` or its ``__call__``), without importing `inspect` for it.

    `inspect` costs every start 20-40 ms. A callable can only have been marked
    with ``inspect.markcoroutinefunction`` if `inspect` is loaded already: then it decides.
    """
    call = getattr(fn, "__call__", None)  # noqa: B004
    inspect = sys.modules.get("inspect")
    if inspect is not None:
        return bool(inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(call))
    import functools

    for f in (fn, call):
        while isinstance(f, functools.partial):
            f = f.func
        f = getattr(f, "__func__", f)  # a bound method
        code = getattr(f, "__code__", None)
        if code is not None and code.co_flags & 0x80:  # CO_COROUTINE: an ``async def``
            return True
    return False


if __name__ == "__main__":
    main()
