"""One worker process and the protocol spoken with it: pickled frames (Python) or JSON lines (command)."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import struct
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import anyio.abc
    from anyio.streams.buffered import BufferedByteReceiveStream

__all__ = ["Channel", "Reply", "StartFailed", "encode_job", "send_signal"]

_HEADER = struct.Struct(">I")
_CHILD = str(Path(__file__).with_name("_child.py"))
_MAX_LINE = 256 * 1024 * 1024

Reply = tuple[Any, bool, Any]
"""``(key, ok, value)``: value is the result, or ``(exception_pickle | None, summary, traceback_text)``."""


class StartFailed(Exception):
    """A worker process did not come up: the reason, in words."""


def preparation() -> dict[str, Any]:
    """What a Python worker needs to rebuild the parent's ``sys.path`` and ``__main__`` (as spawn does)."""
    data: dict[str, Any] = {"sys_path": list(sys.path), "sys_argv": list(sys.argv), "dir": os.getcwd()}
    main = sys.modules.get("__main__")
    # A result of a class defined in the main script comes back from ``__mp_main__``.
    if main is not None:
        sys.modules.setdefault("__mp_main__", main)
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name:
        data["main_name"] = spec.name  # run with -m
    else:
        path = getattr(main, "__file__", None)
        if isinstance(path, str) and os.path.isfile(path):
            data["main_path"] = os.path.abspath(path)
    # A relative import path entry means the parent's working directory.
    data["sys_path"] = [os.path.abspath(p) if p else os.getcwd() for p in data["sys_path"]]
    return data


def encode_job(python: bool, key: int, payload: Any) -> bytes:
    """One job as its worker reads it: a pickled frame, or a JSON line.

    Raises:
        TypeError: When the payload cannot be pickled (or, for a command, written as JSON).
    """
    if python:
        try:
            # Pickled apart, so that a payload the worker cannot rebuild fails its job, not the worker.
            payload_pickle = pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(
                f"the payload cannot be pickled for the worker: {type(exc).__name__}: {exc}"
            ) from None
        body = pickle.dumps((key, payload_pickle), protocol=pickle.HIGHEST_PROTOCOL)
        return _HEADER.pack(len(body)) + body
    try:
        line = json.dumps({"id": key, "payload": payload}, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"a command worker's payload must be JSON-serialisable: {exc}") from None
    return line.encode() + b"\n"


def _open_pidfd(pid: int) -> int | None:
    """A handle on exactly this process (Linux), so that a signal can never reach a reused pid."""
    if not hasattr(os, "pidfd_open"):
        return None
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None  # an old kernel, or the process is gone already


def send_signal(proc: anyio.abc.Process, sig: int, pidfd: int | None = None) -> None:
    """Send ``sig`` to a child process that has not been seen to exit, without reaping it.

    Not ``proc.terminate()``: on asyncio it is ``subprocess.Popen.send_signal``,
    which first polls the child with ``waitpid``. A worker that has just exited
    is then reaped behind the event loop's child watcher, which reports the
    exit status as 255 ("Unknown child process pid ..."). The watcher must be
    the only one to wait for the child; a signal to an exited (zombie) child
    does nothing. With a pidfd, a pid reused by another process is never hit.
    """
    if proc.returncode is not None:
        return
    if sys.platform == "win32":  # pragma: no cover - no waitpid race there
        proc.terminate()
        return
    with contextlib.suppress(ProcessLookupError):
        if pidfd is not None:
            signal.pidfd_send_signal(pidfd, sig)
        else:
            os.kill(proc.pid, sig)


class Channel:
    """A started worker process: send a job, receive replies, close its input.

    Args:
        fn_pickle: The pickled callable of a Python worker, or None.
        command: The argv of a command worker, or None.
        env: The process's whole environment.
    """

    def __init__(self, *, fn_pickle: bytes | None, command: Sequence[str] | None, env: Mapping[str, str]):
        self._fn_pickle = fn_pickle
        self._command = command
        self._env = dict(env)
        self.proc: anyio.abc.Process | None = None
        self._out: BufferedByteReceiveStream | None = None
        self.pid = 0
        self._pidfd: int | None = None

    async def start(self) -> None:
        """Start the process and wait for it to say it is ready; StartFailed (process killed) if not.

        The caller bounds the wait with its startup timeout.
        """
        import anyio
        from anyio.streams.buffered import BufferedByteReceiveStream

        # -P: the child's own folder (this package, whose _queue.py would shadow the
        # standard library's _queue) is not put first on its import path.
        argv = [sys.executable, "-P", _CHILD] if self._command is None else list(self._command)
        try:
            self.proc = await anyio.open_process(argv, stdin=-1, stdout=-1, stderr=None, env=self._env)
        except OSError as exc:
            raise StartFailed(f"could not start {argv[0]!r}: {exc}") from None
        self.pid = self.proc.pid
        self._pidfd = _open_pidfd(self.pid)
        assert self.proc.stdout is not None
        self._out = BufferedByteReceiveStream(self.proc.stdout)
        if self._fn_pickle is not None:
            try:
                await self._send_frame((preparation(), self._fn_pickle))
                kind, detail = await self._receive_frame()
            except EOFError:
                raise StartFailed(
                    f"the worker process {await self._exit_text()} before it was ready"
                ) from None
            if kind != "ready":
                raise StartFailed(f"the worker process could not load its callable:\n{detail}")
            return
        while True:
            try:
                message = await self._receive_line()
            except EOFError:
                raise StartFailed(
                    f"the command {await self._exit_text()} before it printed its ready line"
                ) from None
            if isinstance(message, dict) and message.get("ready") is True:
                return

    async def _exit_text(self) -> str:
        import anyio

        from ._errors import describe_exit

        if self.proc is None:
            return describe_exit(None)
        # Its output closed: it has exited, or is about to. Its status says how.
        with anyio.move_on_after(1.0):
            await self.proc.wait()
        return describe_exit(self.proc.returncode)

    async def send(self, data: bytes) -> None:
        """Send one job, made by `encode_job`; EOFError when the worker is gone."""
        await self._send(data)

    async def receive(self) -> Reply:
        """The next reply; EOFError when the process has closed its output (exited)."""
        if self._fn_pickle is not None:
            reply: Reply = await self._receive_frame()
            return reply
        while True:
            message = await self._receive_line()
            if isinstance(message, dict) and "id" in message:
                if "error" in message:
                    return message["id"], False, (None, str(message["error"]), "")
                return message["id"], True, message.get("result")

    async def close_input(self) -> None:
        """Close the process's stdin: the worker exits when it has no job (the protocol's "stop")."""
        import anyio

        if self.proc is not None and self.proc.stdin is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.proc.stdin.aclose()

    def terminate(self) -> None:
        """SIGTERM, unless the process is known to have exited; never reaps it (see `send_signal`)."""
        if self.proc is not None:
            send_signal(self.proc, signal.SIGTERM, self._pidfd)

    def kill(self) -> None:
        """SIGKILL, unless the process is known to have exited; never reaps it (see `send_signal`)."""
        if self.proc is not None:
            send_signal(self.proc, getattr(signal, "SIGKILL", signal.SIGTERM), self._pidfd)

    async def close(self) -> None:
        """Close every pipe of a process that has exited (and wait for it)."""
        import anyio

        if self.proc is not None:
            with contextlib.suppress(OSError, anyio.BrokenResourceError, anyio.ClosedResourceError):
                await self.proc.aclose()
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    async def _send(self, data: bytes) -> None:
        import anyio

        assert self.proc is not None and self.proc.stdin is not None
        try:
            await self.proc.stdin.send(data)
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            raise EOFError(str(exc)) from None

    async def _send_frame(self, message: Any) -> None:
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        await self._send(_HEADER.pack(len(body)) + body)

    async def _receive_frame(self) -> Any:
        import anyio

        assert self._out is not None
        try:
            (size,) = _HEADER.unpack(await self._out.receive_exactly(_HEADER.size))
            body = await self._out.receive_exactly(size)
        except (
            anyio.EndOfStream,
            anyio.IncompleteRead,
            anyio.BrokenResourceError,
            anyio.ClosedResourceError,
        ):
            raise EOFError from None
        return pickle.loads(body)

    async def _receive_line(self) -> Any:
        import anyio

        assert self._out is not None
        while True:
            try:
                line = await self._out.receive_until(b"\n", _MAX_LINE)
            except (
                anyio.EndOfStream,
                anyio.IncompleteRead,
                anyio.BrokenResourceError,
                anyio.ClosedResourceError,
                anyio.DelimiterNotFound,
            ):
                raise EOFError from None
            try:
                return json.loads(line)
            except ValueError:
                # Not a protocol line (a stray print): skipped, and said so.
                import logging

                logging.getLogger("aiogovernor.workers").warning(
                    "worker %d printed a line that is not JSON; skipped: %.200r", self.pid, line
                )
