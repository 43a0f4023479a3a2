"""What the HTTP client itself costs per response, by pool size: the client-side ceiling.

An upstream that costs almost nothing (nginx answering ``return 200`` on loopback; the
uvicorn app when nginx is missing) is driven through `GovernedTransport` so that the
client's own CPU is what is measured: this process's CPU time over the responses it got.

1. Fixed limits of 1 to 96, as many callers as the limit (so the pool holds that many
   connections): responses/s and client CPU per response, with one httpx pool and with
   `GovernedTransport`'s default `ShardedTransport` (pools of 8), side by side.
2. A governor that once ran at 64 and now admits 16: the pool trimmed to the limit
   (what `GovernedTransport` does) beside the same pool left at 64 idle-or-busy
   connections (the pool hidden from the transport, so nothing trims it).

Interleaved, repeated; medians and worst.

    .venv/bin/python benchmarks/client_cost.py            # ~1.5 min
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import time

import httpx
from real_upstreams import Servers, _Opaque, client_transport, free_port, start_uvicorn

from aiogovernor import Fixed, Governor
from aiogovernor.httpx import GovernedTransport
from aiogovernor.limits import Adjustment, BoundedPolicy, Window

NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 "ok"; }}
    }}
}}
"""


def start_cheap_upstream(servers: Servers) -> tuple[str, str]:
    """nginx's ``return 200`` if nginx is installed, else the uvicorn app; (url, what)."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        return start_uvicorn(servers, limit=None), "uvicorn (nginx is not installed)"
    prefix = servers.folder / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(NGINX_CONF.format(prefix=prefix, port=port))
    servers.start("nginx", [nginx, "-p", str(prefix), "-c", str(conf), "-e", str(prefix / "error.log")])
    url = f"http://127.0.0.1:{port}/"
    servers.wait_ready("nginx", url)
    return url, "nginx return 200"


class _Held(BoundedPolicy):
    """A limit that moves only when reset by hand."""

    name = "held"

    def update(self, window: Window) -> Adjustment:
        return self._hold("held")


async def measure(
    url: str,
    gov: Governor,
    *,
    callers: int,
    seconds: float,
    trim: bool,
    peak: int | None = None,
    pool: str = "single",
) -> tuple[float, float, int]:
    """(responses/s, client CPU ms per response, open connections at the end)."""
    records: list[tuple[float, float, int]] = []
    size = max(gov.policy.max_limit, peak or 0)
    inner, open_connections = client_transport(records, pool=pool, max_limit=size)
    transport = GovernedTransport(gov, transport=inner if trim else _Opaque(inner))
    done = 0
    stop = asyncio.Event()

    async def caller(client: httpx.AsyncClient) -> None:
        nonlocal done
        while not stop.is_set():
            await client.get(url)
            done += 1

    async with httpx.AsyncClient(transport=transport) as client:
        if peak is not None:
            # The governor once admitted `peak` at once: the pool opened that many connections.
            gov.reset_limit(peak, reason="peak")
            await asyncio.gather(*(client.get(url) for _ in range(peak)))
            gov.reset_limit(gov.policy.min_limit, reason="back to the limit")
        tasks = [asyncio.create_task(caller(client)) for _ in range(callers)]
        await asyncio.sleep(0.3)
        done, cpu0, t0 = 0, time.process_time(), time.monotonic()
        await asyncio.sleep(seconds)
        n, cpu1, t1 = done, time.process_time(), time.monotonic()
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        connections = open_connections()
    return n / (t1 - t0), (cpu1 - cpu0) * 1000 / max(n, 1), connections


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    servers = Servers()
    try:
        url, what = start_cheap_upstream(servers)
        limits = (1, 4, 16, 32, 64, 96)
        kinds = ("single", "shards")
        ceiling = {(c, kind): list[tuple[float, float, int]]() for c in limits for kind in kinds}
        pool: dict[str, list[tuple[float, float, int]]] = {"trimmed to the limit": [], "left at 64": []}
        for _ in range(args.reps):
            for c in limits:
                for kind in kinds:
                    gov = Governor("client-cost", Fixed(c), store=None)
                    run = measure(url, gov, callers=c, seconds=args.seconds, trim=True, pool=kind)
                    ceiling[c, kind].append(asyncio.run(run))
            for name in pool:
                gov = Governor("client-cost", _Held(min_limit=16, max_limit=64, initial_limit=16), store=None)
                run = measure(
                    url, gov, callers=64, seconds=args.seconds, trim=name.startswith("trimmed"), peak=64
                )
                pool[name].append(asyncio.run(run))
    finally:
        servers.stop()
    print(f"upstream: {what}; {args.reps} interleaved repetitions of {args.seconds:g} s; medians (worst)\n")
    print(
        "| limit = callers = connections | one pool: responses/s | client CPU ms/response "
        "| shards of 8: responses/s | client CPU ms/response |"
    )
    print("| ---: | ---: | ---: | ---: | ---: |")
    for c in limits:
        cells = []
        for kind in kinds:
            runs = ceiling[c, kind]
            rates, cpus = [r[0] for r in runs], [r[1] for r in runs]
            rate = f"{statistics.median(rates):.0f} ({min(rates):.0f})"
            cells.append(f"{rate} | {statistics.median(cpus):.2f} ({max(cpus):.2f})")
        print(f"| {c} | {' | '.join(cells)} |")
    print("\nlimit 16 after a peak of 64, 64 callers:\n")
    print("| pool | open connections | responses/s | client CPU ms/response |")
    print("| --- | ---: | ---: | ---: |")
    for name, runs in pool.items():
        rates, cpus = [r[0] for r in runs], [r[1] for r in runs]
        print(
            f"| {name} | {max(r[2] for r in runs)} | {statistics.median(rates):.0f} ({min(rates):.0f}) "
            f"| {statistics.median(cpus):.2f} ({max(cpus):.2f}) |"
        )


if __name__ == "__main__":
    main()
