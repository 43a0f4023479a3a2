"""The applications the real servers of ``real_upstreams.py`` run (gunicorn, uvicorn, nginx's backend).

Kept apart and free of imports beyond the standard library so that a gunicorn or
uvicorn worker loads them in milliseconds. What each request costs comes from the
environment, set by the benchmark when it starts the server:

- ``REAL_APP_SLEEP_S``: seconds each request sleeps (waits, no CPU);
- ``REAL_APP_CPU_S``: seconds of CPU each request burns (measured as process CPU time,
  so a worker that the OS deschedules keeps burning until it has had its share).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

SLEEP_S = float(os.environ.get("REAL_APP_SLEEP_S", "0"))
CPU_S = float(os.environ.get("REAL_APP_CPU_S", "0"))
BODY = b"ok"


def burn_cpu(seconds: float) -> None:
    """Spin until this process has used ``seconds`` more CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """A WSGI app (gunicorn's sync workers): sleep, or burn CPU, then answer 200."""
    if SLEEP_S:
        time.sleep(SLEEP_S)
    if CPU_S:
        burn_cpu(CPU_S)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))])
    return [BODY]


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


async def asgi(
    scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
) -> None:
    """An ASGI app (uvicorn): sleep without blocking, or burn CPU on the event loop, then answer 200."""
    if scope["type"] != "http":
        return
    if SLEEP_S:
        await asyncio.sleep(SLEEP_S)
    if CPU_S:
        burn_cpu(CPU_S)  # on the loop, as a CPU-bound handler does: nothing else runs meanwhile
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})
