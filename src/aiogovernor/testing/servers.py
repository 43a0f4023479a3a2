"""A real local HTTP upstream for tests, examples and benchmarks (starlette on uvicorn).

Needs the ``testing`` extra (``pip install 'aiogovernor[testing]'``: starlette,
uvicorn and python-multipart); nothing else in the package imports it. The
tests, ``examples/`` and ``benchmarks/`` share this one copy, and so can
anyone testing their own governed client against a real server.

The upstream models what governors meet in the field:

- ``/work``: a capacity knee. ``capacity`` requests are served at once in
  ``service_time_s``; more queue, so latency grows past the knee.
- a hard bound: past ``max_inflight`` requests at once, a 429 with Retry-After.
- ``/upload``: multipart/form-data; every file part is counted and hashed as
  it streams, and checked against the ``sha256`` text part that follows it
  (the `aiogovernor.uploads` protocol). A mismatch fails the whole request (422)
  and stores nothing.
- ``failure_rate``: a seeded fraction of requests fails with a 500.
- ``/stats``: the counters, as JSON.

Run it in a thread with `LocalUpstream` (tests), or as a process with
``python -m aiogovernor.testing.servers`` (benchmarks: it prints ``READY <url>``
once it accepts connections).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import socket
import threading
from collections import Counter
from dataclasses import dataclass, field, fields
from types import TracebackType
from typing import Any

try:
    import uvicorn
    from python_multipart.multipart import MultipartParser, parse_options_header
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"aiogovernor.testing.servers needs the testing extra ({exc.name} is missing): "
        "pip install 'aiogovernor[testing]'"
    ) from exc

__all__ = ["LocalUpstream", "UpstreamConfig", "UpstreamState", "make_app"]


@dataclass(kw_only=True)
class UpstreamConfig:
    """How the upstream behaves; tests running it in a thread may change it live."""

    capacity: int = 24
    service_time_s: float = 0.05
    max_inflight: int | None = None
    retry_after: str = "1"
    failure_rate: float = 0.0
    seed: int = 0


@dataclass
class UpstreamState:
    """What the upstream saw."""

    requests: int = 0
    ok: int = 0
    rejected: int = 0
    failed: int = 0
    checksum_failures: int = 0
    inflight: int = 0
    peak_inflight: int = 0
    bytes_received: int = 0
    files: Counter[str] = field(default_factory=Counter)


class _Part:
    __slots__ = ("data", "digest", "filename", "name", "size")

    def __init__(self) -> None:
        self.name = ""
        self.filename: str | None = None
        self.digest = hashlib.sha256()
        self.size = 0
        self.data = bytearray()  # text fields only


def make_app(config: UpstreamConfig) -> tuple[Starlette, UpstreamState]:
    """The ASGI app and the state it records into."""
    state = UpstreamState()
    rng = random.Random(config.seed)
    workers = asyncio.Semaphore(config.capacity)

    def admit() -> Response | None:
        state.requests += 1
        if config.max_inflight is not None and state.inflight >= config.max_inflight:
            state.rejected += 1
            return Response(status_code=429, headers={"Retry-After": config.retry_after})
        return None

    async def work(request: Request) -> Response:
        refused = admit()
        if refused is not None:
            return refused
        state.inflight += 1
        state.peak_inflight = max(state.peak_inflight, state.inflight)
        try:
            async with workers:
                await asyncio.sleep(config.service_time_s)
            if rng.random() < config.failure_rate:
                state.failed += 1
                return Response("random failure", status_code=500)
            state.ok += 1
            return Response("ok")
        finally:
            state.inflight -= 1

    async def upload(request: Request) -> Response:
        refused = admit()
        if refused is not None:
            return refused
        state.inflight += 1
        state.peak_inflight = max(state.peak_inflight, state.inflight)
        try:
            async with workers:
                parts = await _read_multipart(request, state)
                await asyncio.sleep(config.service_time_s)
            if rng.random() < config.failure_rate:
                state.failed += 1
                return Response("random failure", status_code=500)
            files, bad = _check_parts(parts)
            if bad:
                state.checksum_failures += len(bad)
                return JSONResponse({"error": "checksum mismatch", "files": bad}, status_code=422)
            for f in files:
                state.files[f["filename"]] += 1
            state.ok += 1
            return JSONResponse({"files": files})
        finally:
            state.inflight -= 1

    async def stats(request: Request) -> Response:
        # Not asdict(): it rebuilds the Counter from (key, count) pairs, counting the pairs.
        doc = {f.name: getattr(state, f.name) for f in fields(state)}
        doc["files"] = dict(state.files)
        return JSONResponse(doc)

    app = Starlette(
        routes=[
            Route("/work", work, methods=["GET", "POST"]),
            Route("/upload", upload, methods=["POST", "PUT"]),
            Route("/stats", stats),
        ]
    )
    return app, state


async def _read_multipart(request: Request, state: UpstreamState) -> list[_Part]:
    """Stream the body through a multipart parser, hashing file parts as they arrive."""
    _, params = parse_options_header(request.headers.get("content-type", ""))
    boundary = params.get(b"boundary")
    if not boundary:
        return []
    parts: list[_Part] = []
    header_field = bytearray()
    header_value = bytearray()
    headers: dict[bytes, bytes] = {}

    def on_part_begin() -> None:
        parts.append(_Part())
        headers.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_field.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        headers[bytes(header_field).lower()] = bytes(header_value)
        header_field.clear()
        header_value.clear()

    def on_headers_finished() -> None:
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        part = parts[-1]
        part.name = disp.get(b"name", b"").decode("latin-1")
        filename = disp.get(b"filename")
        part.filename = None if filename is None else filename.decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = parts[-1]
        chunk = data[start:end]
        part.size += len(chunk)
        if part.filename is None:
            part.data.extend(chunk)
        else:
            part.digest.update(chunk)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
        },
    )
    async for chunk in request.stream():
        state.bytes_received += len(chunk)
        parser.write(chunk)
    parser.finalize()
    return parts


def _check_parts(parts: list[_Part]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Pair each file part with the ``sha256`` field after it; return (files, mismatches)."""
    files: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    for i, part in enumerate(parts):
        if part.filename is None:
            continue
        digest = part.digest.hexdigest()
        after = parts[i + 1] if i + 1 < len(parts) else None
        claimed = after.data.decode("ascii", "replace") if after and after.name == "sha256" else None
        entry = {"filename": part.filename, "bytes": part.size, "sha256": digest}
        if claimed is not None and claimed != digest:
            bad.append({**entry, "claimed": claimed})
        files.append(entry)
    return files, bad


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()


def _server(app: Starlette) -> _Server:
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", ws="none", http="h11")
    return _Server(config)


def _bind() -> socket.socket:
    # proto=IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say
    # they are TCP; without it, Nagle meets delayed ACKs and every response stalls 40 ms.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LocalUpstream:
    """The upstream served by uvicorn in a background thread, on a free loopback port.

    ```python
    with LocalUpstream(UpstreamConfig(capacity=4)) as upstream:
        ...  # requests to upstream.url; counters in upstream.state
    ```

    Entering returns once the server accepts connections.
    """

    def __init__(self, config: UpstreamConfig | None = None) -> None:
        self.config = config or UpstreamConfig()
        self.app, self.state = make_app(self.config)
        self.url = ""
        self._server = _server(self.app)
        self._thread: threading.Thread | None = None

    def __enter__(self) -> LocalUpstream:
        sock = _bind()
        host, port = sock.getsockname()
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="aiogovernor-upstream", daemon=True
        )
        self._thread.start()
        if not self._server.ready.wait(timeout=30):
            raise RuntimeError("the local upstream did not start within 30 s")
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=30)


def main(argv: list[str] | None = None) -> None:
    """Serve the upstream in this process; print ``READY <url>`` once it accepts connections."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--capacity", type=int, default=24)
    parser.add_argument("--service-time-s", type=float, default=0.05)
    parser.add_argument("--max-inflight", type=int, default=None)
    parser.add_argument("--retry-after", default="1")
    parser.add_argument("--failure-rate", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    config = UpstreamConfig(
        capacity=args.capacity,
        service_time_s=args.service_time_s,
        max_inflight=args.max_inflight,
        retry_after=args.retry_after,
        failure_rate=args.failure_rate,
        seed=args.seed,
    )
    app, _ = make_app(config)
    server = _server(app)
    sock = _bind()
    host, port = sock.getsockname()

    def announce() -> None:
        server.ready.wait()
        print(f"READY http://{host}:{port}", flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
