"""Governed httpx and aiohttp clients vs fixed concurrencies, against the real local upstream (c=24, 50 ms).

The upstream (uvicorn, its own process) serves 24 requests at once in 50 ms, queues more
(latency grows past the knee), and answers 429 with Retry-After past a hard bound. Each
client runs closed-loop workers for the same time; goodput is 200s per second. Client CPU
per response is this process's CPU time (the upstream runs in its own) over the responses.

    .venv/bin/python benchmarks/governed_http.py [--seconds 6] [--bound 48] [--clients httpx,aiohttp]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time

import httpx

from aiogovernor import AIMD, Governor, LatencyAIMD, LimitPolicy
from aiogovernor.httpx import GovernedTransport


async def run(
    url: str, seconds: float, *, fixed: int | None, policy: LimitPolicy | None = None
) -> tuple[float, float, int, float]:
    """Returns (goodput/s over the second half, 429 share over the second half, final limit,
    client CPU seconds per response)."""
    cpu = time.process_time()
    responses = 0
    stop = time.monotonic() + seconds
    half = time.monotonic() + seconds / 2
    ok = rejected = 0
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=200)
    gov = Governor("bench", policy, store=None)
    if fixed is None:
        client = httpx.AsyncClient(
            transport=GovernedTransport(gov, transport=httpx.AsyncHTTPTransport(limits=limits))
        )
        workers = 128
    else:
        client = httpx.AsyncClient(limits=limits)
        workers = fixed

    async def worker() -> None:
        nonlocal ok, rejected, responses
        while time.monotonic() < stop:
            r = await client.get(f"{url}/work")
            responses += 1
            if time.monotonic() >= half:
                ok += r.status_code == 200
                rejected += r.status_code == 429

    async with client:
        await asyncio.gather(*(worker() for _ in range(workers)))
    total = ok + rejected
    cpu_per = (time.process_time() - cpu) / max(1, responses)
    return ok / (seconds / 2), (rejected / total if total else 0.0), gov.limit, cpu_per


async def run_aiohttp(
    url: str, seconds: float, *, fixed: int | None, policy: LimitPolicy | None = None
) -> tuple[float, float, int, float]:
    """`run`, through aiohttp (a `GovernedMiddleware` when governed)."""
    import aiohttp

    from aiogovernor.aiohttp import GovernedMiddleware

    cpu = time.process_time()
    responses = 0
    stop = time.monotonic() + seconds
    half = time.monotonic() + seconds / 2
    ok = rejected = 0
    gov = Governor("bench", policy, store=None)
    middlewares = (GovernedMiddleware(gov),) if fixed is None else ()
    workers = 128 if fixed is None else fixed

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal ok, rejected, responses
        while time.monotonic() < stop:
            async with session.get(f"{url}/work") as r:
                await r.read()
                status = r.status
            responses += 1
            if time.monotonic() >= half:
                ok += status == 200
                rejected += status == 429

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, middlewares=middlewares) as session:
        await asyncio.gather(*(worker(session) for _ in range(workers)))
    total = ok + rejected
    cpu_per = (time.process_time() - cpu) / max(1, responses)
    return ok / (seconds / 2), (rejected / total if total else 0.0), gov.limit, cpu_per


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--bound", type=int, default=48)
    parser.add_argument("--sweep", default="8,16,24,32,40")
    parser.add_argument("--clients", default="httpx,aiohttp")
    args = parser.parse_args()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiogovernor.testing.servers",
            "--capacity",
            "24",
            "--service-time-s",
            "0.05",
            "--max-inflight",
            str(args.bound),
            "--retry-after",
            "1",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        url = server.stdout.readline().split()[1]
        for client in args.clients.split(","):
            runner = {"httpx": run, "aiohttp": run_aiohttp}[client]
            rows = []
            for c in [int(x) for x in args.sweep.split(",")]:
                rows.append((f"{client}, fixed {c}", *asyncio.run(runner(url, args.seconds, fixed=c))))
            rows.append((f"{client}, fixed 96", *asyncio.run(runner(url, args.seconds, fixed=96))))
            policies: dict[str, LimitPolicy] = {
                "governed, default (LatencyAIMD)": LatencyAIMD(max_limit=128),
                "governed, AIMD": AIMD(max_limit=128, initial_limit=4),
            }
            governed = {
                name: asyncio.run(runner(url, args.seconds * 2, fixed=None, policy=policy))
                for name, policy in policies.items()
            }
            best = max(rows[:-1], key=lambda r: r[1])
            print(f"\n{client}\n")
            print("| client | goodput (req/s) | 429 share | vs best fixed | client CPU per response |")
            print("| --- | --- | --- | --- | --- |")
            for name, goodput, share, _, cpu in rows:
                print(
                    f"| {name} | {goodput:.0f} | {share:.1%} | {goodput / best[1]:.2f} | {cpu * 1e6:.0f} µs |"
                )
            for name, (goodput, share, limit, cpu) in governed.items():
                print(
                    f"| {client}, {name}, final limit {limit} | {goodput:.0f} | {share:.1%} | "
                    f"{goodput / best[1]:.2f} | {cpu * 1e6:.0f} µs |"
                )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
