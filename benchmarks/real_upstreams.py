"""Control quality against real servers on loopback: every policy beside the best fixed concurrency.

Each row is an upstream made of real software nobody here wrote (gunicorn, uvicorn, nginx)
or the project's own Python knee server, started by this script on free 127.0.0.1 ports
and stopped when the row ends (each server in its own process group; nothing is left
behind, also on Ctrl-C). For each row, two phases:

1. **the sweep**: fixed concurrencies (``Fixed(c)``), every one once per repetition, picks
   the best fixed limit: the one with the best median goodput over the repetitions, among
   those whose median overload is at most 1 % (the simulator's oracle's rule: a limit at a
   wall that refuses most requests while retried callers keep it busy is not one to choose);
2. **the contest**: a copy of that best limit, ``Fixed(best)``, called the *twin*
   (``--twins 2``: two copies, half a cycle apart), then every policy and profile, with the
   same 200 callers through `GovernedTransport`, once per repetition.

In both phases each repetition's running order is the previous one rotated by
``len / reps`` places (``--order fixed``: the same order every time), so that every
contender runs early and late and after different neighbours, and the machine's slow
drifts hit every contender alike.

Three ratios per contender, each a repetition's goodput over a denominator taken in the
same repetition (``_real_method.py`` has the arithmetic):

- **vs twin** (the held-out one): over the twin's goodput. The twin ran beside the policies
  and played no part in choosing the limit, so this compares each policy with an unbiased
  measure of the best fixed limit's goodput.
- **vs best fixed** (the benchmark's first ratio, kept): over the best fixed limit's goodput
  in the sweep. The sweep both chose the limit and measured it, so the denominator is
  biased up (the winner's curse): even the twin scores below 1 on it. The twin's figure in
  this column is the benchmark's noise floor.
- **vs sweep max**: over the highest goodput of any fixed limit in the sweep's repetition:
  the winner's curse at its strongest, shown for comparison.

Each is reported as the median and the worst repetition. Also per contender: the overload
share (429, 503 and timeouts), p99 of the request latency inside the permit, the mean of
the gate's limit, the client's CPU per response (this process's CPU time over the responses
it got), the client loop's lag as the governor measures it (the median over the measured
windows of `Window.loop_lag_s`, the mean of `Window.loop_pause_s`) and the client's time in
its garbage collector per second. Goodput counts 200s completed after the warm-up, so a
slow start costs what it costs in the first seconds. ``--json`` keeps every run with every
window's figures (limit before and after, reason, p50, loop lag and pause, samples), the
200s per quarter second, and each run's repetition, place in the order and predecessor.

    .venv/bin/python benchmarks/real_upstreams.py --quick            # 3 rows, short: ~5 min
    .venv/bin/python benchmarks/real_upstreams.py                    # every row: ~20 min
    .venv/bin/python benchmarks/real_upstreams.py --rows uvicorn-sleep,knee16 --policies default,Gradient
    .venv/bin/python benchmarks/real_upstreams.py --policy mine=my_module:make_policy --plot docs/img
    .venv/bin/python benchmarks/real_upstreams.py --pool-compare --rows uvicorn-sleep --policies default
    .venv/bin/python benchmarks/real_upstreams.py --rows knee16 --policies default --twins 2 --reps 5

``--policy NAME=module:callable`` (repeatable; ``module`` may be a path to a ``.py`` file)
adds a policy under development: the callable takes no argument and returns a policy
instance, or a `aiogovernor.limits.Profile` (its window rules are used too). Run the
script with the Python environment where that policy is importable, e.g. another
checkout's ``.venv/bin/python path/to/real_upstreams.py --policy ...``.

The client's connections go through `GovernedTransport`'s default transport, a
`ShardedTransport` (httpx pools of 8, each shard timed); ``--pool single`` uses one httpx
pool of the governor's ``max_limit`` instead, whose client CPU per response grows with the
square of its connections (the client then collapses past about 32 in flight).

``--pool-compare`` adds "default, pool not trimmed": the same default governor with the
connection pool hidden from `GovernedTransport`, so idle connections beyond the limit stay
open (as with a transport that does not trim them); compare its client CPU per response.
``--second-run`` adds "default, second run": the default governor with a store (a
`MemoryStore` per row), started from what its previous run learned (its limit and latency
baseline), as a job run again on the same machine starts; an untimed first run fills the
store, and each repetition starts where the one before ended.
``--tls-compare`` adds "default, TLS context per shard": shards made as httpx makes a
transport by default, each loading its own TLS context (~20 ms of the client's CPU, on
its loop, each time a shard is added) where the default shards share one.

Needs gunicorn (``pip install --group bench``) and nginx (``scripts/bootstrap.sh`` installs
both); rows whose server is missing are skipped with a message. Figures are ratios taken in
one run on one machine; on a shared machine they are noisy: read the median and the worst.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
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
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from _policy_arg import load_factory
from _real_method import best_fixed, rotation, same_rep_ratios, summary, sweep_max

from aiogovernor import Decision, Governor, WindowConfig
from aiogovernor.httpx import GovernedTransport, ShardedTransport
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
from aiogovernor.sim import jain_index
from aiogovernor.state import MemoryStore

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
    # Governors sharing the upstream, each with its own client and an equal share of the
    # callers, the k-th joining ``stagger_s`` × k after the first; a fixed limit is per governor.
    governors: int = 1
    stagger_s: float = 0.0


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
        (8, 10, 12, 14, 15, 16),
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
        (8, 16, 24, 32, 40, 48),
        lambda s: start_knee(s, workers=32, service_time_s=0.06),
    ),
    Row(
        "knee64",
        "Python knee server, 64 workers, 60 ms",
        (16, 24, 32, 48, 64, 80, 96),
        lambda s: start_knee(s, workers=64, service_time_s=0.06),
    ),
    Row(
        "knee16-20ms",
        "Python knee server, 16 workers, 20 ms",
        (4, 8, 12, 16, 20, 24, 32),
        lambda s: start_knee(s, workers=16, service_time_s=0.02),
    ),
    Row(
        "knee16-500s",
        "Python knee server, 16 workers, 60 ms, 5 % unrelated 500s",
        (8, 12, 16, 20, 24, 28, 32, 40),
        lambda s: start_knee(s, workers=16, service_time_s=0.06, failure_rate=0.05),
    ),
    Row(
        "knee16-shared",
        "Python knee server, 16 workers, 60 ms, two governors (the second 0.3 s later; limits per governor)",
        (4, 6, 8, 10, 12, 16),
        lambda s: start_knee(s, workers=16, service_time_s=0.06),
        governors=2,
        stagger_s=0.3,
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
    # A TLS context made for each shard (httpx's default) instead of one shared by all:
    # ~20 ms of the client's CPU each time a shard is added (``--tls-compare``).
    tls_per_shard: bool = False
    # Starts from what its previous run learned (a store per row; ``--second-run``).
    learned: bool = False


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
    name, factory = load_factory(spec)

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


# One decision as kept for the JSON output: seconds since the run began, old limit, new limit,
# reason, the window's p50 (ms), its loop lag and loop pause (ms, `Window.loop_lag_s` and
# `Window.loop_pause_s`), its sample count, whether the limit was the bottleneck, and its
# longest loop pause (ms, `Window.loop_pause_longest_s`).
WindowRecord = tuple[float, int, int, str, float, float, float, int, bool, float]


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
    decisions: list[tuple[float, int, int, str]] = field(default_factory=list)  # the limit's changes
    windows: list[WindowRecord] = field(default_factory=list)  # every decision, holds too
    loop_lag_ms: float = math.nan  # median of the measured windows' `Window.loop_lag_s`
    loop_pause_ms: float = math.nan  # mean of the measured windows' `Window.loop_pause_s`
    probe_late_p50_ms: float = math.nan  # how late this benchmark's own 20 ms sampler woke
    probe_late_p99_ms: float = math.nan
    gc_ms_per_s: float = math.nan  # the client's time in its garbage collector, per second measured
    gc_max_ms: float = math.nan  # its longest collection in the measured span
    ok_bins: list[int] = field(default_factory=list)  # 200s per BIN_S from the run's start
    shares: list[int] = field(default_factory=list)  # each governor's 200s in the measured span
    phase: str = ""  # "sweep" or "contest"
    rep: int = 0
    position: int = 0  # place in its repetition's running order (0: first)
    previous: str = ""  # the contender that ran just before it in that order

    @property
    def total(self) -> int:
        return self.ok + self.overload + self.errors


BIN_S = 0.25


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def client_transport(
    records: list[tuple[float, float, int]], *, pool: str, max_limit: int, tls_per_shard: bool = False
) -> tuple[httpx.AsyncBaseTransport, Callable[[], int]]:
    """The transport under the permit and a count of its open connections.

    ``pool="shards"``: what `GovernedTransport` uses by default, a `ShardedTransport`
    (pools of 8, sharing one TLS context as its default shards do), each shard timed;
    ``tls_per_shard`` makes a TLS context for each shard instead. ``pool="single"``: one
    httpx pool of ``max_limit``, whose cost per response grows with the square of its
    connections.
    """
    if pool == "single":
        single = _TimedTransport(
            records, limits=httpx.Limits(max_connections=max_limit, max_keepalive_connections=max_limit)
        )
        return single, single.pool_connections
    size = 8
    shards: list[_TimedTransport] = []
    tls = httpx.create_ssl_context()

    def make_shard() -> httpx.AsyncBaseTransport:
        limits = httpx.Limits(max_connections=size, max_keepalive_connections=size)
        verify: ssl.SSLContext | bool = True if tls_per_shard else tls
        shard = _TimedTransport(records, limits=limits, verify=verify)
        shards.append(shard)
        return shard

    sharded = ShardedTransport(make_shard, shard_connections=size)
    return sharded, lambda: sum(s.pool_connections() for s in shards)


async def run_once(
    url: str,
    entry: Entry,
    *,
    duration_s: float,
    warmup_s: float,
    client_cpu_s: float,
    pool: str = "shards",
    store: MemoryStore | None = None,
    governors: int = 1,
    stagger_s: float = 0.0,
) -> RunResult:
    """One run of ``CALLERS`` callers; with several ``governors``, each has its own client.

    The decisions and windows recorded are the first governor's; the trace sums the limits.
    """
    govs: list[Governor] = []
    transports: list[GovernedTransport] = []
    shared: list[list[tuple[float, float, int]]] = []  # each governor's requests
    counts: list[Callable[[], int]] = []
    for _ in range(governors):
        if entry.fixed is not None:
            policy: LimitPolicy | None
            policy, window = Fixed(entry.fixed), None
        else:
            policy, window = entry.make()
        gov = Governor("real-upstream", policy, store=store, window=window)
        own: list[tuple[float, float, int]] = []
        inner, connections = client_transport(
            own, pool=pool, max_limit=gov.policy.max_limit, tls_per_shard=entry.tls_per_shard
        )
        wrapped: httpx.AsyncBaseTransport = inner if entry.trim_pool else _Opaque(inner)
        govs.append(gov)
        transports.append(GovernedTransport(gov, transport=wrapped))
        shared.append(own)
        counts.append(connections)
    gov = govs[0]

    def pool_connections() -> int:
        return sum(count() for count in counts)

    decisions: list[tuple[float, int, int, str]] = []
    windows: list[WindowRecord] = []
    t0 = time.monotonic()

    def listen(d: Decision) -> None:
        t = time.monotonic() - t0
        if d.old_limit != d.new_limit:
            decisions.append((t, d.old_limit, d.new_limit, d.reason))
        w = d.window
        if w is not None:
            windows.append(
                (
                    round(t, 4),
                    d.old_limit,
                    d.new_limit,
                    d.reason,
                    round(w.latency_p50_s * 1000, 2),
                    round(w.loop_lag_s * 1000, 3),
                    round(w.loop_pause_s * 1000, 3),
                    w.count,
                    w.limit_bound,
                    round(w.loop_pause_longest_s * 1000, 3),
                )
            )

    gov.add_listener(listen)
    # The client's garbage collections (a whole-loop pause each), timed through gc.callbacks.
    collections: list[tuple[float, float]] = []  # start (since t0), seconds
    gc_started = 0.0

    def on_gc(phase: str, info: dict[str, int]) -> None:
        nonlocal gc_started
        if phase == "start":
            gc_started = time.monotonic()
        else:
            collections.append((gc_started - t0, time.monotonic() - gc_started))

    gc.callbacks.append(on_gc)
    stop = asyncio.Event()
    trace: list[tuple[float, int, int, int]] = []
    late: list[tuple[float, float]] = []  # the sampler's wake-ups: when (since t0), how late (s)
    peak_connections = 0

    async def caller(client: httpx.AsyncClient, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
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
            connections = pool_connections()
            limit, inflight = sum(g.limit for g in govs), sum(g.inflight for g in govs)
            trace.append((time.monotonic() - t0, limit, inflight, connections))
            peak_connections = max(peak_connections, connections)
            due = time.monotonic() + 0.02
            await asyncio.sleep(0.02)
            now = time.monotonic()
            late.append((now - t0, max(0.0, now - due)))

    async with contextlib.AsyncExitStack() as clients:
        tasks = []
        for k, transport in enumerate(transports):
            client = await clients.enter_async_context(httpx.AsyncClient(transport=transport, timeout=5.0))
            tasks += [asyncio.create_task(caller(client, k * stagger_s)) for _ in range(CALLERS // governors)]
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
    if store is not None:
        for g in govs:
            await g.aclose()  # what it learned, saved as a script's end saves it

    gc.callbacks.remove(on_gc)
    records = [r for own in shared for r in own]
    shares = [sum(1 for r in own if start <= r[0] < end and r[2] == 200) for own in shared]
    measured = [r for r in records if start <= r[0] < end]
    ok = sum(1 for r in measured if r[2] == 200)
    overload = sum(1 for r in measured if r[2] in OVERLOAD_CODES or r[2] == -1)
    latencies = sorted(r[1] for r in measured)
    p99 = latencies[max(0, math.ceil(0.99 * len(latencies)) - 1)] * 1000 if latencies else math.nan
    lo, hi = start - t0, end - t0
    in_window = [lim for t, lim, _, _ in trace if lo <= t < hi]
    measured_windows = [w for w in windows if lo <= w[0] < hi]
    lates = sorted(x for t, x in late if lo <= t < hi)
    gcs = [d for t, d in collections if lo <= t < hi]
    bins = [0] * math.ceil(duration_s / BIN_S)
    for r in records:
        if r[2] == 200:
            bins[min(len(bins) - 1, max(0, int((r[0] - t0) / BIN_S)))] += 1
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
        windows=windows,
        loop_lag_ms=statistics.median(w[5] for w in measured_windows) if measured_windows else math.nan,
        loop_pause_ms=statistics.fmean(w[6] for w in measured_windows) if measured_windows else math.nan,
        probe_late_p50_ms=_pct(lates, 0.5) * 1000,
        probe_late_p99_ms=_pct(lates, 0.99) * 1000,
        gc_ms_per_s=sum(gcs) * 1000 / (end - start),
        gc_max_ms=max(gcs, default=0.0) * 1000,
        ok_bins=bins,
        shares=shares,
    )


def _pct(ordered: list[float], q: float) -> float:
    """The ``q`` quantile of an ascending list (nearest rank; nan when empty)."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] if ordered else math.nan


# -- a row, and the report ------------------------------------------------------------------


@dataclass
class RowResult:
    row: Row
    fixed: dict[int, list[RunResult]]
    entries: dict[str, list[RunResult]]  # the twins first, then the policies
    best_fixed: int = 0
    twins: list[str] = field(default_factory=list)
    load_average: tuple[float, float] = (math.nan, math.nan)  # 1-minute load average at start, end

    def best_per_rep(self) -> list[float]:
        return [r.goodput for r in self.fixed[self.best_fixed]]

    def sweep_max_per_rep(self) -> list[float]:
        return sweep_max({c: [r.goodput for r in runs] for c, runs in self.fixed.items()})

    def twin_per_rep(self) -> list[float] | None:
        return [r.goodput for r in self.entries[self.twins[0]]] if self.twins else None


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


def run_phase(
    url: str,
    row: Row,
    contenders: list[Entry],
    phase: str,
    args: argparse.Namespace,
    results: dict[str, list[RunResult]],
    stores: dict[str, MemoryStore] | None = None,
) -> None:
    """Run every contender once per repetition, in each repetition's order, into ``results``.

    A contender with a store in ``stores`` starts each run from what the store holds.
    """
    for rep in range(args.reps):
        order = rotation(contenders, rep, args.reps) if args.order == "rotate" else list(contenders)
        for position, e in enumerate(order):
            r = asyncio.run(
                run_once(
                    url,
                    e,
                    duration_s=args.duration_s,
                    warmup_s=args.warmup_s,
                    client_cpu_s=row.client_cpu_s,
                    pool=args.pool,
                    store=(stores or {}).get(e.name),
                    governors=row.governors,
                    stagger_s=row.stagger_s,
                )
            )
            r.phase, r.rep, r.position = phase, rep, position
            r.previous = order[position - 1].name if position else ""
            results.setdefault(e.name, []).append(r)
            print(
                f"  [{row.key} {phase} {rep + 1}/{args.reps}] {e.name:<22} {r.goodput:7.1f}/s "
                f"overload {r.overload / max(r.total, 1):6.2%} p99 {r.p99_ms:5.0f} ms "
                f"limit {r.limit_mean:5.1f} cpu {r.cpu_ms_per_response:4.2f} ms/resp "
                f"lag {r.loop_lag_ms:4.1f} pause {r.loop_pause_ms:4.1f} gc {r.gc_ms_per_s:4.1f} ms/s "
                f"conns {r.peak_connections} drained in {drain(url):.1f} s",
                flush=True,
            )
    # Runs of one contender, in repetition order (a rotation changes positions, not reps).
    for runs in results.values():
        runs.sort(key=lambda r: (r.phase, r.rep))


def twin_names(count: int) -> list[str]:
    """The twins' names: "twin", then "twin 2", ... (none for 0)."""
    return [f"twin {k}" if k > 1 else "twin" for k in range(1, count + 1)]


def run_row(row: Row, entries: list[Entry], args: argparse.Namespace) -> RowResult:
    """The sweep's repetitions first, then the twins and the policies, interleaved and repeated."""
    servers = Servers()
    load_start = os.getloadavg()[0]
    try:
        t_start = time.monotonic()
        url = row.start(servers)
        print(f"  started in {time.monotonic() - t_start:.1f} s: {url}", flush=True)
        sweep = [Entry(f"fixed {c}", lambda: (None, None), fixed=c) for c in row.sweep]
        # A short warm-up: imports, worker start, first connections.
        asyncio.run(run_once(url, sweep[0], duration_s=0.5, warmup_s=0.25, client_cpu_s=0.0, pool=args.pool))
        drain(url)
        swept: dict[str, list[RunResult]] = {}
        run_phase(url, row, sweep, "sweep", args, swept)
        fixed = {c: swept[f"fixed {c}"] for c in row.sweep}
        best = best_fixed(
            {c: [r.goodput for r in runs] for c, runs in fixed.items()},
            {c: [r.overload / r.total if r.total else 0.0 for r in runs] for c, runs in fixed.items()},
        )
        names = twin_names(args.twins)
        twins = [Entry(n, lambda: (None, None), fixed=best) for n in names]
        print(f"  best fixed: {best}; {', '.join(names) or 'no twin'} = Fixed({best})", flush=True)
        # A second twin sits half a cycle from the first, so that the two run at different places.
        contest = [*twins[:1], *entries[: len(entries) // 2], *twins[1:], *entries[len(entries) // 2 :]]
        # A second run starts where a first run, untimed, ended; each repetition then starts
        # where the one before ended, as a job run again and again with a store does.
        stores = {e.name: MemoryStore() for e in entries if e.learned}
        for e in entries:
            if e.learned:
                first = run_once(
                    url,
                    e,
                    duration_s=args.duration_s,
                    warmup_s=args.warmup_s,
                    client_cpu_s=row.client_cpu_s,
                    pool=args.pool,
                    store=stores[e.name],
                    governors=row.governors,
                    stagger_s=row.stagger_s,
                )
                learned = asyncio.run(first)
                print(f"  {e.name}: an untimed first run (limit mean {learned.limit_mean:.1f})", flush=True)
                drain(url)
        results: dict[str, list[RunResult]] = {}
        run_phase(url, row, contest, "contest", args, results, stores)
    finally:
        servers.stop()
    return RowResult(
        row,
        fixed,
        {e.name: results[e.name] for e in [*twins, *entries]},
        best_fixed=best,
        twins=names,
        load_average=(load_start, os.getloadavg()[0]),
    )


def ratios(rr: RowResult, runs: list[RunResult]) -> list[float]:
    """Vs best fixed: each repetition over the best fixed limit's goodput in the sweep's same repetition."""
    return same_rep_ratios([r.goodput for r in runs], rr.best_per_rep())


def ratios_max(rr: RowResult, runs: list[RunResult]) -> list[float]:
    """Vs sweep max: each repetition over the highest fixed goodput of the sweep's same repetition."""
    return same_rep_ratios([r.goodput for r in runs], rr.sweep_max_per_rep())


def ratios_twin(rr: RowResult, runs: list[RunResult]) -> list[float] | None:
    """Vs twin (held out): each repetition over the twin's goodput in the same repetition."""
    twin = rr.twin_per_rep()
    return None if twin is None else same_rep_ratios([r.goodput for r in runs], twin)


def headline(rr: RowResult, name: str) -> tuple[list[float], str]:
    """The ratio a plot shows, and what it is over: vs twin where a twin ran, else vs best fixed.

    The twin itself is shown against the best fixed limit (its noise floor), not against itself.
    """
    runs = rr.entries[name]
    twin = ratios_twin(rr, runs)
    if twin is None or name == rr.twins[0]:
        return ratios(rr, runs), "best fixed"
    return twin, "its twin"


def summarise(runs: list[RunResult]) -> dict[str, float]:
    total = sum(r.total for r in runs)
    return {
        "goodput": statistics.median(r.goodput for r in runs),
        "overload": sum(r.overload for r in runs) / total if total else math.nan,
        "errors": sum(r.errors for r in runs) / total if total else math.nan,
        "p99_ms": statistics.median(r.p99_ms for r in runs),
        "limit_mean": statistics.median(r.limit_mean for r in runs),
        "cpu_ms": statistics.median(r.cpu_ms_per_response for r in runs),
        "loop_lag_ms": statistics.median(r.loop_lag_ms for r in runs),
        "loop_pause_ms": statistics.median(r.loop_pause_ms for r in runs),
        "probe_late_p99_ms": statistics.median(r.probe_late_p99_ms for r in runs),
        "gc_ms_per_s": statistics.median(r.gc_ms_per_s for r in runs),
        "connections": max(r.peak_connections for r in runs),
    }


def _cell(rs: list[float] | None) -> str:
    if rs is None:
        return "—"
    median, worst = summary(rs)
    return f"{median:.2f} ({worst:.2f})"


def row_table(rr: RowResult) -> str:
    edge = rr.best_fixed in (min(rr.fixed), max(rr.fixed)) and rr.best_fixed != 1
    twin = rr.twin_per_rep()
    lines = [
        f"**{rr.row.title}** (best fixed: {rr.best_fixed}, "
        f"{statistics.median(rr.best_per_rep()):.0f}/s median in the sweep"
        + (f", its twin {statistics.median(twin):.0f}/s" if twin else "")
        + f"{'; at the edge of the sweep: the true best may lie beyond' if edge else ''}; "
        f"load average {rr.load_average[0]:.1f} → {rr.load_average[1]:.1f})",
        "",
        "| contender | vs twin | vs best fixed | vs sweep max | goodput/s | overload | p99 ms | limit mean "
        "| client CPU ms/response | loop lag ms | loop pause ms | GC ms/s | peak connections |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    named: list[tuple[str, list[RunResult]]] = [(f"fixed {c}", runs) for c, runs in rr.fixed.items()]
    named += list(rr.entries.items())
    for name, runs in named:
        s = summarise(runs)
        vs_twin = None if name == (rr.twins[:1] or [None])[0] else ratios_twin(rr, runs)
        lines.append(
            f"| {name} | {_cell(vs_twin)} | {_cell(ratios(rr, runs))} | {_cell(ratios_max(rr, runs))} "
            f"| {s['goodput']:.0f} | {s['overload']:.2%} | {s['p99_ms']:.0f} | {s['limit_mean']:.1f} "
            f"| {s['cpu_ms']:.2f} | {s['loop_lag_ms']:.1f} | {s['loop_pause_ms']:.1f} "
            f"| {s['gc_ms_per_s']:.1f} | {s['connections']} |"
        )
    return "\n".join(lines)


def fairness_table(rr: RowResult) -> str:
    """Jain's index of the governors' goodputs (each one's 200s in the measured span), per contender."""
    lines = [
        f"**{rr.row.title}**: Jain's index of the {rr.row.governors} governors' goodputs, median (worst)",
        "",
        "| contender | Jain | shares, median repetition |",
        "| --- | ---: | --- |",
    ]
    named: list[tuple[str, list[RunResult]]] = [(f"fixed {c}", runs) for c, runs in rr.fixed.items()]
    for name, runs in [*named, *rr.entries.items()]:
        indices = [jain_index(r.shares) for r in runs]
        middle = sorted(runs, key=lambda r: jain_index(r.shares))[len(runs) // 2]
        lines.append(f"| {name} | {_cell(indices)} | {' / '.join(map(str, middle.shares))} |")
    return "\n".join(lines)


def summary_table(results: list[RowResult], names: list[str], *, held_out: bool) -> str:
    """One cell per row and contender: median (worst) vs the twin, or vs the best fixed limit."""
    if held_out:
        names = [n for n in names if not (results and n == (results[0].twins[:1] or [None])[0])]
    lines = [
        "| upstream | best fixed | load | " + " | ".join(names) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " |",
    ]
    for rr in results:
        cells = [
            _cell(ratios_twin(rr, rr.entries[n]) if held_out else ratios(rr, rr.entries[n])) for n in names
        ]
        load = f"{rr.load_average[0]:.1f}-{rr.load_average[1]:.1f}"
        lines.append(f"| {rr.row.title} | {rr.best_fixed} | {load} | " + " | ".join(cells) + " |")
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
            shown, of = headline(rr, name)
            ax.set_title(f"{name}: {statistics.median(shown):.2f} of {of}", fontsize=8)
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
            "loop_lag_ms": r.loop_lag_ms,
            "loop_pause_ms": r.loop_pause_ms,
            "probe_late_p50_ms": r.probe_late_p50_ms,
            "probe_late_p99_ms": r.probe_late_p99_ms,
            "gc_ms_per_s": r.gc_ms_per_s,
            "gc_max_ms": r.gc_max_ms,
            "peak_connections": r.peak_connections,
            "phase": r.phase,
            "rep": r.rep,
            "position": r.position,
            "previous": r.previous,
            "ok_bins": r.ok_bins,
            "shares": r.shares,
            "trace": r.trace,
            "decisions": r.decisions,
            "windows": r.windows,
        }

    def row_ratios(rr: RowResult, runs: list[RunResult]) -> dict[str, list[float] | None]:
        return {
            "vs_twin": ratios_twin(rr, runs),
            "vs_best_fixed": ratios(rr, runs),
            "vs_sweep_max": ratios_max(rr, runs),
        }

    return [
        {
            "row": rr.row.key,
            "title": rr.row.title,
            "best_fixed": rr.best_fixed,
            "twins": rr.twins,
            "load_average": list(rr.load_average),
            "bin_s": BIN_S,
            "window_fields": [
                "t_s",
                "old_limit",
                "new_limit",
                "reason",
                "p50_ms",
                "loop_lag_ms",
                "loop_pause_ms",
                "count",
                "limit_bound",
                "loop_pause_longest_ms",
            ],
            "fixed": {str(c): [run(r) for r in runs] for c, runs in rr.fixed.items()},
            "entries": {name: [run(r) for r in runs] for name, runs in rr.entries.items()},
            "ratios": {
                name: row_ratios(rr, runs)
                for name, runs in [*((f"fixed {c}", v) for c, v in rr.fixed.items()), *rr.entries.items()]
            },
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
    parser.add_argument(
        "--tls-compare", action="store_true", help="add 'default, TLS context per shard' (httpx's default)"
    )
    parser.add_argument(
        "--second-run",
        action="store_true",
        help="add 'default, second run': the default started from what its last run learned",
    )
    parser.add_argument(
        "--pool",
        choices=("shards", "single"),
        default="shards",
        help="the client's connections: GovernedTransport's default ShardedTransport, pools of 8 "
        "(default), or one httpx pool, whose cost per response grows with the square of its size",
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--twins",
        type=int,
        default=1,
        help="copies of Fixed(best) run among the policies once the sweep has chosen best (default 1; "
        "0: none, and no 'vs twin' ratio; 2: a second copy half a cycle away, for the noise floor)",
    )
    parser.add_argument(
        "--order",
        choices=("rotate", "fixed"),
        default="rotate",
        help="each repetition's running order: rotated by len/reps places per repetition (default), "
        "or the same every time",
    )
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
    if args.twins < 0:
        parser.error("--twins must be at least 0")
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
    if args.tls_compare:
        entries.append(Entry("default, TLS context per shard", lambda: (None, None), tls_per_shard=True))
    if args.second_run:
        entries.append(Entry("default, second run", lambda: (None, None), learned=True))
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
    runs = sum(len(r.sweep) + len(entries) + args.twins for r in rows) * args.reps
    print(
        f"{len(rows)} rows x ({len(entries)} contenders + {args.twins} twin(s) + sweep) x {args.reps} reps "
        f"= {runs} runs of {args.duration_s:g} s (~{runs * (args.duration_s + 0.4) / 60:.0f} min); "
        f"{CALLERS} callers; order {args.order}; contenders: {', '.join(e.name for e in entries)}; "
        f"load average {os.getloadavg()[0]:.1f}",
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
        names = [*twin_names(args.twins), *(e.name for e in entries)]
        if args.twins:
            print("Vs twin (held out): goodput over the twin's, Fixed(best), in the same repetition")
            print(summary_table(results, names, held_out=True))
            print()
        print("Vs best fixed: goodput over the best fixed limit's in the sweep's same repetition")
        print(summary_table(results, names, held_out=False))
        print()
        for rr in results:
            print(row_table(rr))
            print()
            if rr.row.governors > 1:
                print(fairness_table(rr))
                print()
    if args.plot and results:
        plot(results, args.plot, args.warmup_s)
    if args.json:
        args.json.write_text(json.dumps(to_json(results)))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
