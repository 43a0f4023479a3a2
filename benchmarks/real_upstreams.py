"""Control quality against real servers on loopback: every policy beside the best fixed concurrency.

Each row is an upstream made of real software nobody here wrote (gunicorn, uvicorn, nginx)
or the project's own Python knee server, started by this script on free 127.0.0.1 ports
and stopped when the row ends (each server in its own process group; nothing is left
behind, also on Ctrl-C). For each row:

1. a sweep of fixed concurrencies (``Fixed(c)``) finds the best fixed goodput;
2. every policy and profile runs with the same 200 callers through `GovernedTransport`;
3. the runs are interleaved (fixed 8, fixed 12, default, Gradient, ..., then again) and
   repeated, so that the machine's slow drifts hit every contender alike.

Reported per policy: goodput divided by the best fixed concurrency's goodput in the same
repetition (median and worst repetition), overload share (429, 503 and timeouts), p99 of
the request latency inside the permit, the mean of the gate's limit, and the client's CPU
per response (this process's CPU time over the responses it got). Goodput counts 200s
completed after the warm-up, so a slow start costs what it costs in the first seconds.

    .venv/bin/python benchmarks/real_upstreams.py --quick            # 3 rows, short: ~5 min
    .venv/bin/python benchmarks/real_upstreams.py                    # every row: ~20 min
    .venv/bin/python benchmarks/real_upstreams.py --rows uvicorn-sleep,knee16 --policies default,Gradient
    .venv/bin/python benchmarks/real_upstreams.py --policy mine=my_module:make_policy --plot docs/img
    .venv/bin/python benchmarks/real_upstreams.py --pool-compare --rows uvicorn-sleep --policies default

``--policy NAME=module:callable`` (repeatable; ``module`` may be a path to a ``.py`` file)
adds a policy under development: the callable takes no argument and returns a policy
instance, or a `aiogovernor.limits.Profile` (its window rules are used too). Run the
script with the Python environment where that policy is importable, e.g. another
checkout's ``.venv/bin/python path/to/real_upstreams.py --policy ...``.

``--pool-compare`` adds "default, pool not trimmed": the same default governor with the
connection pool hidden from `GovernedTransport`, so idle connections beyond the limit stay
open (as with a transport that does not trim them); compare its client CPU per response.

Needs gunicorn (``pip install --group bench``) and nginx (``scripts/bootstrap.sh`` installs
both); rows whose server is missing are skipped with a message. Figures are ratios taken in
one run on one machine; on a shared machine they are noisy: read the median and the worst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import math
import os
import pathlib
import pickle
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from aiogovernor import Governor, WindowConfig
from aiogovernor.httpx import GovernedTransport
from aiogovernor.limits import (
    AIMD,
    PROFILES,
    Fixed,
    Gradient,
    LimitPolicy,
    Profile,
    ThroughputAIMD,
    Vegas,
    default_policy,
)
from aiogovernor.limits import profile as profile_named

HERE = pathlib.Path(__file__).resolve().parent
CALLERS = 200
OVERLOAD_CODES = (429, 503)

# -- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    """A free loopback port (bound and released: a small race with other processes, checked at start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM if this benchmark dies (even by SIGKILL)."""
    if sys.platform == "linux":
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Servers:
    """The processes this benchmark started; `stop` ends each one's process group, and only those."""

    def __init__(self) -> None:
        self.procs: list[tuple[str, subprocess.Popen[bytes], pathlib.Path]] = []
        self.folder = pathlib.Path(tempfile.mkdtemp(prefix="aiogovernor-real-"))

    def start(
        self, name: str, args: list[str], *, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env={**os.environ, **(env or {})},
                start_new_session=True,  # its own process group: workers are stopped with it
                preexec_fn=_die_with_parent,
            )
        self.procs.append((name, proc, log))
        return proc

    def log_tail(self, name: str) -> str:
        for pname, _, log in self.procs:
            if pname == name:
                with contextlib.suppress(OSError):
                    return log.read_text(errors="replace")[-2000:]
        return ""

    def wait_ready(self, name: str, url: str, timeout_s: float = 30.0) -> None:
        """Poll ``url`` until it answers (any status), or raise with the server's log."""
        proc = next(p for n, p, _ in self.procs if n == name)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{self.log_tail(name)}")
            try:
                httpx.get(url, timeout=2.0)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"{name} did not answer at {url} within {timeout_s:.0f} s:\n{self.log_tail(name)}")

    def stop(self) -> None:
        for _name, proc, _ in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc, _ in reversed(self.procs):
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.procs.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


def app_env(*, sleep_s: float = 0.0, cpu_s: float = 0.0) -> dict[str, str]:
    return {"REAL_APP_SLEEP_S": str(sleep_s), "REAL_APP_CPU_S": str(cpu_s)}


def start_gunicorn(servers: Servers, *, workers: int, sleep_s: float = 0.0, cpu_s: float = 0.0) -> str:
    port = free_port()
    args = [sys.executable, "-m", "gunicorn", "--chdir", str(HERE), "--workers", str(workers)]
    args += ["--worker-class", "sync", "--bind", f"127.0.0.1:{port}", "--backlog", "2048"]
    args += ["--log-level", "warning", "--timeout", "60", "_real_apps:wsgi"]
    servers.start("gunicorn", args, env=app_env(sleep_s=sleep_s, cpu_s=cpu_s))
    url = f"http://127.0.0.1:{port}/"
    servers.wait_ready("gunicorn", url)
    return url


def start_uvicorn(
    servers: Servers, *, name: str = "uvicorn", limit: int | None, sleep_s: float = 0.0, cpu_s: float = 0.0
) -> str:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    args += ["--log-level", "warning", "--no-access-log", "--lifespan", "off"]
    if limit is not None:
        args += ["--limit-concurrency", str(limit)]
    servers.start(name, [*args, "_real_apps:asgi"], env=app_env(sleep_s=sleep_s, cpu_s=cpu_s))
    url = f"http://127.0.0.1:{port}/"
    servers.wait_ready(name, url)
    return url


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    limit_conn_zone $binary_remote_addr zone=conns:1m;
    limit_req_zone $binary_remote_addr zone=rate:1m rate={rate}r/s;
    upstream backend {{
        server 127.0.0.1:{backend_port};
        keepalive 64;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            {limit}
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(servers: Servers, *, limit: str, rate: int = 150, backend_sleep_s: float) -> str:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        raise Skip("nginx is not installed (scripts/bootstrap.sh installs it with apt-get)")
    backend = start_uvicorn(servers, name="backend", limit=None, sleep_s=backend_sleep_s)
    backend_port = httpx.URL(backend).port
    prefix = servers.folder / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(
        NGINX_CONF.format(prefix=prefix, port=port, backend_port=backend_port, limit=limit, rate=rate)
    )
    servers.start("nginx", [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")])
    url = f"http://127.0.0.1:{port}/"
    servers.wait_ready("nginx", url)
    return url


def start_knee(servers: Servers, *, workers: int, service_time_s: float, failure_rate: float = 0.0) -> str:
    module = "aiogovernor.testing.servers"
    args = [sys.executable, "-m", module, "--capacity", str(workers), "--service-time-s", str(service_time_s)]
    args += ["--failure-rate", str(failure_rate), "--seed", "1"]
    servers.start("knee", args)
    # It prints "READY <url>" once it accepts connections; the log file has it.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for line in servers.log_tail("knee").splitlines():
            if line.startswith("READY "):
                url = line.split()[1] + "/work"
                servers.wait_ready("knee", url)
                return url
        time.sleep(0.1)
    raise RuntimeError(f"the knee server did not start:\n{servers.log_tail('knee')}")


class Skip(Exception):
    """A row that cannot run here (a server is not installed)."""


@dataclass(frozen=True)
class Row:
    key: str
    title: str
    sweep: tuple[int, ...]
    start: Callable[[Servers], str]
    client_cpu_s: float = 0.0
    quick: bool = False


def _need_gunicorn() -> None:
    if importlib.util.find_spec("gunicorn") is None:
        raise Skip("gunicorn is not installed (pip install --group bench)")


def _gunicorn(**kw: Any) -> Callable[[Servers], str]:
    def start(servers: Servers) -> str:
        _need_gunicorn()
        return start_gunicorn(servers, **kw)

    return start


ROWS: list[Row] = [
    Row(
        "gunicorn-sleep",
        "gunicorn, 8 sync workers, 40 ms sleep",
        (6, 8, 10, 12, 14, 16, 20, 24),
        _gunicorn(workers=8, sleep_s=0.04),
        quick=True,
    ),
    Row(
        "gunicorn-cpu",
        "gunicorn, 8 sync workers, ~27 ms CPU each",
        (1, 2, 3, 4, 8),
        _gunicorn(workers=8, cpu_s=0.027),
    ),
    Row(
        "uvicorn-sleep",
        "uvicorn --limit-concurrency 16, 50 ms sleep (503 past 16)",
        (8, 10, 12, 14, 16),
        lambda s: start_uvicorn(s, limit=16, sleep_s=0.05),
        quick=True,
    ),
    Row(
        "uvicorn-cpu",
        "uvicorn --limit-concurrency 16, ~11 ms CPU on the loop",
        (1, 2, 4, 8),
        lambda s: start_uvicorn(s, limit=16, cpu_s=0.011),
    ),
    Row(
        "nginx-conn",
        "nginx limit_conn 16 (503) -> backend 50 ms",
        (8, 12, 14, 16),
        lambda s: start_nginx(s, limit="limit_conn conns 16;", backend_sleep_s=0.05),
    ),
    Row(
        "nginx-rate",
        "nginx limit_req 150 r/s burst 20 -> backend 50 ms",
        (6, 8, 12, 20, 28),
        lambda s: start_nginx(s, limit="limit_req zone=rate burst=20;", backend_sleep_s=0.05),
    ),
    Row(
        "knee16",
        "Python knee server, 16 workers, 60 ms",
        (8, 12, 16, 20, 24, 28, 32),
        lambda s: start_knee(s, workers=16, service_time_s=0.06),
        quick=True,
    ),
    Row(
        "knee32",
        "Python knee server, 32 workers, 60 ms",
        (8, 12, 16, 24, 32),
        lambda s: start_knee(s, workers=32, service_time_s=0.06),
    ),
    Row(
        "knee64",
        "Python knee server, 64 workers, 60 ms",
        (8, 12, 16, 24, 32, 40),
        lambda s: start_knee(s, workers=64, service_time_s=0.06),
    ),
    Row(
        "knee16-20ms",
        "Python knee server, 16 workers, 20 ms",
        (4, 6, 8, 12, 16, 20, 24),
        lambda s: start_knee(s, workers=16, service_time_s=0.02),
    ),
    Row(
        "knee16-500s",
        "Python knee server, 16 workers, 60 ms, 5 % unrelated 500s",
        (8, 12, 16, 20, 24, 28, 32, 40),
        lambda s: start_knee(s, workers=16, service_time_s=0.06, failure_rate=0.05),
    ),
    Row(
        "knee16-busy-client",
        "Python knee server, 16 workers, 60 ms, client burns ~1 ms CPU per response",
        (6, 8, 12, 16, 20, 24),
        lambda s: start_knee(s, workers=16, service_time_s=0.06),
        client_cpu_s=0.001,
    ),
]

# -- contenders ------------------------------------------------------------------------------

PolicySpec = tuple[LimitPolicy | None, WindowConfig | None]


@dataclass(frozen=True)
class Entry:
    """One contender: a policy (None: the governor's default) and its window rules."""

    name: str
    make: Callable[[], PolicySpec]
    fixed: int | None = None
    trim_pool: bool = True


def _profile_spec(name: str) -> Callable[[], PolicySpec]:
    def make() -> PolicySpec:
        p = profile_named(name)
        return p.policy(), p.window

    return make


def _same_as_default(name: str) -> bool:
    """Whether profile ``name`` builds exactly the policy and windows a plain ``Governor()`` gets."""
    p = profile_named(name)
    try:
        return p.window == WindowConfig() and pickle.dumps(p.policy()) == pickle.dumps(default_policy())
    except Exception:
        return False


def builtin_entries() -> dict[str, Entry]:
    entries = {
        "default": Entry("default", lambda: (None, None)),
        "Gradient": Entry("Gradient", lambda: (Gradient(), None)),
        "Vegas": Entry("Vegas", lambda: (Vegas(), None)),
        "AIMD": Entry("AIMD", lambda: (AIMD(), None)),
        "ThroughputAIMD": Entry("ThroughputAIMD", lambda: (ThroughputAIMD(), None)),
    }
    for name in PROFILES:
        entries[name] = Entry(name, _profile_spec(name))
    return entries


DEFAULT_POLICIES = ["default", "Gradient", "Vegas", "AIMD", *PROFILES]


def load_callable(spec: str) -> tuple[str, Entry]:
    """``[NAME=]module:callable`` (module may be a path to a .py file) as an entry."""
    name, _, target = spec.rpartition("=") if "=" in spec else ("", "", spec)
    module_name, _, attr = target.rpartition(":")
    if not module_name or not attr:
        raise SystemExit(f"--policy {spec!r}: expected [NAME=]module:callable")
    if module_name.endswith(".py") or os.sep in module_name:
        path = pathlib.Path(module_name).resolve()
        loaded = importlib.util.spec_from_file_location(path.stem, path)
        if loaded is None or loaded.loader is None:
            raise SystemExit(f"--policy {spec!r}: cannot load {path}")
        module = importlib.util.module_from_spec(loaded)
        sys.modules[path.stem] = module
        loaded.loader.exec_module(module)
    else:
        module = importlib.import_module(module_name)
    factory = getattr(module, attr)
    name = name or attr

    def make() -> PolicySpec:
        made = factory()
        if isinstance(made, Profile):
            return made.policy(), made.window
        if not isinstance(made, LimitPolicy):
            raise TypeError(f"--policy {spec!r} returned {made!r}, not a policy or a Profile")
        return made, None

    make()  # fail now, not halfway through the run
    return name, Entry(name, make)


# -- one run ---------------------------------------------------------------------------------


class _TimedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, timing each request inside the permit (headers received)."""

    def __init__(self, sink: list[tuple[float, float, int]], **kw: Any) -> None:
        super().__init__(**kw)
        self.sink = sink

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        start = time.monotonic()
        try:
            response = await super().handle_async_request(request)
        except httpx.TimeoutException:
            now = time.monotonic()
            self.sink.append((now, now - start, -1))
            raise
        except Exception:
            now = time.monotonic()
            self.sink.append((now, now - start, -2))
            raise
        now = time.monotonic()
        self.sink.append((now, now - start, response.status_code))
        return response

    def pool_connections(self) -> int:
        return len(self._pool.connections)


class _Opaque(httpx.AsyncBaseTransport):
    """Hides the wrapped transport's connection pool from `GovernedTransport` (no trimming)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class RunResult:
    goodput: float
    ok: int
    overload: int
    errors: int
    p99_ms: float
    limit_mean: float
    cpu_ms_per_response: float
    peak_connections: int
    trace: list[tuple[float, int, int, int]] = field(default_factory=list)  # t, limit, inflight, connections
    decisions: list[tuple[float, int, int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.ok + self.overload + self.errors


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


async def run_once(
    url: str, entry: Entry, *, duration_s: float, warmup_s: float, client_cpu_s: float
) -> RunResult:
    if entry.fixed is not None:
        policy: LimitPolicy | None
        policy, window = Fixed(entry.fixed), None
    else:
        policy, window = entry.make()
    gov = Governor("real-upstream", policy, store=None, window=window)
    max_limit = gov.policy.max_limit
    records: list[tuple[float, float, int]] = []
    inner = _TimedTransport(
        records, limits=httpx.Limits(max_connections=max_limit, max_keepalive_connections=max_limit)
    )
    wrapped: httpx.AsyncBaseTransport = inner if entry.trim_pool else _Opaque(inner)
    transport = GovernedTransport(gov, transport=wrapped)
    decisions: list[tuple[float, int, int, str]] = []
    t0 = time.monotonic()
    gov.add_listener(
        lambda d: (
            decisions.append((time.monotonic() - t0, d.old_limit, d.new_limit, d.reason))
            if d.old_limit != d.new_limit
            else None
        )
    )
    stop = asyncio.Event()
    trace: list[tuple[float, int, int, int]] = []
    peak_connections = 0

    async def caller(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            try:
                await client.get(url)
            except httpx.HTTPError:
                await asyncio.sleep(0.01)  # a refused connection would otherwise spin
            if client_cpu_s:
                burn_cpu(client_cpu_s)

    async def sample() -> None:
        nonlocal peak_connections
        while not stop.is_set():
            connections = inner.pool_connections()
            trace.append((time.monotonic() - t0, gov.limit, gov.inflight, connections))
            peak_connections = max(peak_connections, connections)
            await asyncio.sleep(0.02)

    async with httpx.AsyncClient(transport=transport, timeout=5.0) as client:
        tasks = [asyncio.create_task(caller(client)) for _ in range(CALLERS)]
        sampler = asyncio.create_task(sample())
        await asyncio.sleep(warmup_s)
        cpu0, start = time.process_time(), time.monotonic()
        await asyncio.sleep(duration_s - warmup_s)
        cpu1, end = time.process_time(), time.monotonic()
        stop.set()
        # Callers still queued at the gate would each send one more request: cancel them all
        # (a cancelled request is an ignored sample and gives its permit back).
        for t in [*tasks, sampler]:
            t.cancel()
        await asyncio.gather(*tasks, sampler, return_exceptions=True)

    measured = [r for r in records if start <= r[0] < end]
    ok = sum(1 for r in measured if r[2] == 200)
    overload = sum(1 for r in measured if r[2] in OVERLOAD_CODES or r[2] == -1)
    latencies = sorted(r[1] for r in measured)
    p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)] * 1000 if latencies else math.nan
    in_window = [lim for t, lim, _, _ in trace if start - t0 <= t < end - t0]
    return RunResult(
        goodput=ok / (end - start),
        ok=ok,
        overload=overload,
        errors=len(measured) - ok - overload,
        p99_ms=p99,
        limit_mean=statistics.fmean(in_window) if in_window else math.nan,
        cpu_ms_per_response=(cpu1 - cpu0) * 1000 / len(measured) if measured else math.nan,
        peak_connections=peak_connections,
        trace=trace,
        decisions=decisions,
    )


# -- a row, and the report ------------------------------------------------------------------


@dataclass
class RowResult:
    row: Row
    fixed: dict[int, list[RunResult]]
    entries: dict[str, list[RunResult]]
    best_fixed: int = 0

    def best_per_rep(self) -> list[float]:
        return [r.goodput for r in self.fixed[self.best_fixed]]


def drain(url: str, timeout_s: float = 60.0) -> float:
    """Wait until the upstream has served what the last run left behind; return the seconds waited.

    The callers of a run are cancelled at its end, but the requests they had sent are
    still queued at the upstream (in gunicorn's accept backlog, behind the knee server's
    workers) and would be served during the next run, which would then see a server busy
    with another contender's work. One request queues behind them on these FIFO servers,
    so its answer says they are done; 503s (a limit still counting the closed
    connections) are retried.
    """
    start = time.monotonic()
    deadline = start + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=timeout_s).status_code not in OVERLOAD_CODES:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    return time.monotonic() - start


def run_row(row: Row, entries: list[Entry], args: argparse.Namespace) -> RowResult:
    servers = Servers()
    try:
        t_start = time.monotonic()
        url = row.start(servers)
        print(f"  started in {time.monotonic() - t_start:.1f} s: {url}", flush=True)
        sweep = row.sweep
        contenders = [Entry(f"fixed {c}", lambda: (None, None), fixed=c) for c in sweep] + entries
        # A short warm-up: imports, worker start, first connections.
        asyncio.run(run_once(url, contenders[0], duration_s=0.5, warmup_s=0.25, client_cpu_s=0.0))
        drain(url)
        results: dict[str, list[RunResult]] = {e.name: [] for e in contenders}
        for rep in range(args.reps):
            for e in contenders:
                r = asyncio.run(
                    run_once(
                        url,
                        e,
                        duration_s=args.duration_s,
                        warmup_s=args.warmup_s,
                        client_cpu_s=row.client_cpu_s,
                    )
                )
                results[e.name].append(r)
                print(
                    f"  [{row.key} rep {rep + 1}/{args.reps}] {e.name:<28} {r.goodput:7.1f}/s "
                    f"overload {r.overload / max(r.total, 1):6.2%} p99 {r.p99_ms:6.0f} ms "
                    f"limit {r.limit_mean:5.1f} cpu {r.cpu_ms_per_response:5.2f} ms/resp "
                    f"conns {r.peak_connections} drained in {drain(url):.1f} s",
                    flush=True,
                )
    finally:
        servers.stop()
    fixed = {c: results[f"fixed {c}"] for c in sweep}
    out = RowResult(row, fixed, {e.name: results[e.name] for e in entries})
    out.best_fixed = max(fixed, key=lambda c: statistics.median(r.goodput for r in fixed[c]))
    return out


def ratios(rr: RowResult, runs: list[RunResult]) -> list[float]:
    """Each repetition's goodput over the best fixed concurrency's goodput in the same repetition."""
    return [r.goodput / b if b else math.nan for r, b in zip(runs, rr.best_per_rep(), strict=True)]


def summarise(runs: list[RunResult]) -> dict[str, float]:
    total = sum(r.total for r in runs)
    return {
        "goodput": statistics.median(r.goodput for r in runs),
        "overload": sum(r.overload for r in runs) / total if total else math.nan,
        "errors": sum(r.errors for r in runs) / total if total else math.nan,
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "limit_mean": statistics.median(r.limit_mean for r in runs),
        "cpu_ms": statistics.median(r.cpu_ms_per_response for r in runs),
        "connections": max(r.peak_connections for r in runs),
    }


def row_table(rr: RowResult) -> str:
    edge = rr.best_fixed in (min(rr.fixed), max(rr.fixed)) and rr.best_fixed != 1
    lines = [
        f"**{rr.row.title}** (best fixed: {rr.best_fixed}, "
        f"{statistics.median(rr.best_per_rep()):.0f}/s median"
        f"{'; at the edge of the sweep: the true best may lie beyond' if edge else ''})",
        "",
        "| contender | goodput / best fixed: median | worst | goodput/s | overload | p99 ms | limit mean "
        "| client CPU ms/response | peak connections |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    named: list[tuple[str, list[RunResult]]] = [(f"fixed {c}", runs) for c, runs in rr.fixed.items()]
    named += list(rr.entries.items())
    for name, runs in named:
        s = summarise(runs)
        rs = ratios(rr, runs)
        lines.append(
            f"| {name} | {statistics.median(rs):.2f} | {min(rs):.2f} | {s['goodput']:.0f} "
            f"| {s['overload']:.2%} | {s['p99_ms']:.0f} | {s['limit_mean']:.1f} | {s['cpu_ms']:.2f} "
            f"| {s['connections']} |"
        )
    return "\n".join(lines)


def summary_table(results: list[RowResult], names: list[str]) -> str:
    lines = [
        "| upstream | best fixed | " + " | ".join(names) + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for rr in results:
        cells = []
        for name in names:
            rs = ratios(rr, rr.entries[name])
            cells.append(f"{statistics.median(rs):.2f} ({min(rs):.2f})")
        lines.append(f"| {rr.row.title} | {rr.best_fixed} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list[RowResult], folder: pathlib.Path, warmup_s: float) -> None:
    """One figure per row: a panel per contender, its limit over time in every repetition."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    for rr in results:
        names = list(rr.entries)
        cols = 3
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(
            rows, cols, figsize=(10, 1.9 * rows + 0.6), sharex=True, sharey=True, squeeze=False
        )
        top = max(rr.best_fixed * 3, 8)
        for ax, name in zip(axes.flat, names, strict=False):
            for k, r in enumerate(rr.entries[name]):
                ax.step(
                    [t for t, *_ in r.trace],
                    [lim for _, lim, *_ in r.trace],
                    where="post",
                    linewidth=1,
                    label=f"rep {k + 1}",
                )
            ax.axhline(rr.best_fixed, color="black", linestyle=":", linewidth=1)
            ax.axvline(warmup_s, color="grey", linewidth=0.5)
            ratio = statistics.median(ratios(rr, rr.entries[name]))
            ax.set_title(f"{name}: {ratio:.2f} of best fixed", fontsize=8)
            ax.set_ylim(0, top)
            ax.tick_params(labelsize=7)
        for ax in axes.flat[len(names) :]:
            ax.set_visible(False)
        fig.suptitle(
            f"limit over time: {rr.row.title}; dotted: best fixed ({rr.best_fixed}); "
            f"grey: end of warm-up; off-scale lines: see the table",
            fontsize=8,
        )
        fig.supxlabel("seconds", fontsize=8)
        fig.supylabel("limit", fontsize=8)
        fig.tight_layout()
        path = folder / f"real-{rr.row.key}.png"
        fig.savefig(path, dpi=72)
        plt.close(fig)
        print(f"wrote {path}")


def to_json(results: list[RowResult]) -> list[dict[str, Any]]:
    def run(r: RunResult) -> dict[str, Any]:
        return {
            "goodput": r.goodput,
            "ok": r.ok,
            "overload": r.overload,
            "errors": r.errors,
            "p99_ms": r.p99_ms,
            "limit_mean": r.limit_mean,
            "cpu_ms_per_response": r.cpu_ms_per_response,
            "peak_connections": r.peak_connections,
            "trace": r.trace,
            "decisions": r.decisions,
        }

    return [
        {
            "row": rr.row.key,
            "title": rr.row.title,
            "best_fixed": rr.best_fixed,
            "fixed": {str(c): [run(r) for r in runs] for c, runs in rr.fixed.items()},
            "entries": {name: [run(r) for r in runs] for name, runs in rr.entries.items()},
        }
        for rr in results
    ]


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="3 rows, 2 s runs, 3 repetitions (~5 min)")
    parser.add_argument("--rows", help="comma-separated row keys (default: every row; see --list)")
    parser.add_argument(
        "--policies", help=f"comma-separated built-in contenders (default: {','.join(DEFAULT_POLICIES)})"
    )
    parser.add_argument("--policy", action="append", default=[], metavar="[NAME=]module:callable")
    parser.add_argument("--pool-compare", action="store_true", help="add 'default, pool not trimmed'")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--duration-s", type=float, default=None, help="seconds per run (default 3, --quick 2)"
    )
    parser.add_argument(
        "--warmup-s", type=float, default=None, help="seconds not counted (default 0.8, --quick 0.5)"
    )
    parser.add_argument(
        "--plot", type=pathlib.Path, metavar="DIR", help="write real-<row>.png (limit over time)"
    )
    parser.add_argument(
        "--json", type=pathlib.Path, metavar="FILE", help="write every run, traces and decisions"
    )
    parser.add_argument("--list", action="store_true", help="list the rows and contenders, and exit")
    args = parser.parse_args(argv)
    if args.duration_s is None:
        args.duration_s = 2.0 if args.quick else 3.0
    if args.warmup_s is None:
        args.warmup_s = 0.5 if args.quick else 0.8
    if not 0 <= args.warmup_s < args.duration_s:
        parser.error("need 0 <= --warmup-s < --duration-s")
    if args.reps < 1:
        parser.error("--reps must be at least 1")
    return args


def choose(args: argparse.Namespace) -> tuple[list[Row], list[Entry]]:
    by_key = {r.key: r for r in ROWS}
    if args.rows:
        unknown = [k for k in args.rows.split(",") if k not in by_key]
        if unknown:
            raise SystemExit(f"unknown rows {unknown}; known: {', '.join(by_key)}")
        rows = [by_key[k] for k in args.rows.split(",")]
    elif args.quick:
        rows = [r for r in ROWS if r.quick]
    else:
        rows = list(ROWS)
    builtins = builtin_entries()
    if args.policies:
        names = args.policies.split(",")
        unknown = [n for n in names if n not in builtins]
        if unknown:
            raise SystemExit(f"unknown policies {unknown}; known: {', '.join(builtins)}")
    else:
        names = [n for n in DEFAULT_POLICIES if not (n in PROFILES and _same_as_default(n))]
    entries = [builtins[n] for n in names]
    if args.pool_compare:
        entries.append(Entry("default, pool not trimmed", lambda: (None, None), trim_pool=False))
    for spec in args.policy:
        _, entry = load_callable(spec)
        entries.append(entry)
    return rows, entries


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    rows, entries = choose(args)
    if args.list:
        for r in ROWS:
            print(f"{r.key:<20} {r.title}  sweep {r.sweep}{'  (quick)' if r.quick else ''}")
        print("contenders:", ", ".join(e.name for e in entries))
        return
    if os.environ.get("AIOGOVERNOR_PROFILE"):
        print(f"note: $AIOGOVERNOR_PROFILE={os.environ['AIOGOVERNOR_PROFILE']} sets 'default'")
    runs = sum(len(r.sweep) + len(entries) for r in rows) * args.reps
    print(
        f"{len(rows)} rows x ({len(entries)} contenders + sweep) x {args.reps} reps = {runs} runs of "
        f"{args.duration_s:g} s (~{runs * (args.duration_s + 0.4) / 60:.0f} min); {CALLERS} callers; "
        f"contenders: {', '.join(e.name for e in entries)}",
        flush=True,
    )
    started = time.monotonic()
    results: list[RowResult] = []
    # SIGTERM ends the run through the same cleanup as Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    for row in rows:
        print(f"{row.title}", flush=True)
        try:
            results.append(run_row(row, entries, args))
        except Skip as exc:
            print(f"  skipped: {exc}")
    print(
        f"\n{len(results)} rows in {(time.monotonic() - started) / 60:.1f} min; "
        f"{args.reps} reps of {args.duration_s:g} s ({args.warmup_s:g} s warm-up), {CALLERS} callers\n"
    )
    if results:
        print(summary_table(results, [e.name for e in entries]))
        print()
        for rr in results:
            print(row_table(rr))
            print()
    if args.plot and results:
        plot(results, args.plot, args.warmup_s)
    if args.json:
        args.json.write_text(json.dumps(to_json(results)))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
