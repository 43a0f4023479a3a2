"""A worker process's resident memory, for the per-worker memory ceiling."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["memory_reader"]


def memory_reader() -> Callable[[int], int | None]:
    """A function from a pid to its resident set size in bytes (None: the process is gone).

    psutil when installed (the ``resources`` extra), else ``/proc/<pid>/status`` on Linux.

    Raises:
        RuntimeError: When neither is available (a memory ceiling cannot be kept).
    """
    try:
        import psutil
    except ImportError:
        pass
    else:

        def from_psutil(pid: int) -> int | None:
            try:
                return int(psutil.Process(pid).memory_info().rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                return None

        return from_psutil
    if sys.platform.startswith("linux"):
        return _from_proc
    raise RuntimeError(
        "max_worker_memory_mb needs psutil on this platform: pip install 'aiogovernor[resources]'"
    )


def _from_proc(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        return None
    return None  # a zombie has no VmRSS line
