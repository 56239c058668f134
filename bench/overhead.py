"""Gateway overhead: the same load against a stub upstream, directly and through Modelyard.

Prints requests/s and latency percentiles for each, and the latency Modelyard adds. Run: `make bench`
(or `python bench/overhead.py --concurrency 1,16 --duration 10 --stream`).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).parent
KEY = "myd_bench-admin-key-0123456789abcdef"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


async def load(url: str, headers: dict, body: bytes, concurrency: int, duration: float, stream: bool) -> list[float]:
    latencies: list[float] = []
    stop_at = time.perf_counter() + duration
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        async def worker() -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                async with session.post(url, data=body, headers=headers) as resp:
                    if resp.status != 200:
                        raise SystemExit(f"{url}: HTTP {resp.status}: {await resp.text()}")
                    await resp.read()
                latencies.append(time.perf_counter() - t0)
        # warm-up: open connections, load code paths
        warm_until = time.perf_counter() + 0.5
        while time.perf_counter() < warm_until:
            async with session.post(url, data=body, headers=headers) as resp:
                await resp.read()
        stop_at = time.perf_counter() + duration
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


def summarize(lat: list[float], duration: float) -> dict[str, float]:
    q = statistics.quantiles(lat, n=100)
    return {"rps": len(lat) / duration, "p50": statistics.median(lat) * 1000, "p99": q[98] * 1000}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", default="1,16", help="comma-separated connection counts")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--stream", action="store_true", help="also measure streaming chat")
    args = ap.parse_args()

    stub_port, gw_port = free_port(), free_port()
    procs = [subprocess.Popen([sys.executable, str(HERE / "stub_upstream.py"), str(stub_port)])]
    data = tempfile.mkdtemp(prefix="modelyard-bench-")
    cfg = Path(data) / "bench.yaml"
    cfg.write_text(f"builtin_models: false\nmodels:\n  - id: bench\n    deployments:\n      - backend: openai\n"
                   f"        base_url: http://127.0.0.1:{stub_port}/v1\n        model: bench-model\n"
                   f"        max_concurrency: 256\n")
    env = {**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning"}
    procs.append(subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--port", str(gw_port),
                                   "--config", str(cfg), "--data-dir", data], env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        wait_port(stub_port)
        wait_port(gw_port)
        modes = [False, True] if args.stream else [False]
        print(f"{'mode':<7} {'conns':>5} | {'direct rps':>10} {'p50 ms':>7} {'p99 ms':>7} | "
              f"{'gateway rps':>11} {'p50 ms':>7} {'p99 ms':>7} | {'added p50':>9} {'added p99':>9}")
        for stream in modes:
            body = (b'{"model":"%s","messages":[{"role":"user","content":"hi"}]' + (b',"stream":true}' if stream else b"}"))
            for c in [int(x) for x in args.concurrency.split(",")]:
                direct = summarize(asyncio.run(load(f"http://127.0.0.1:{stub_port}/v1/chat/completions", {},
                                                    body % b"bench-model", c, args.duration, stream)), args.duration)
                gw = summarize(asyncio.run(load(f"http://127.0.0.1:{gw_port}/v1/chat/completions",
                                                {"Authorization": f"Bearer {KEY}"}, body % b"bench", c,
                                                args.duration, stream)), args.duration)
                print(f"{'stream' if stream else 'json':<7} {c:>5} | {direct['rps']:>10.0f} {direct['p50']:>7.2f} "
                      f"{direct['p99']:>7.2f} | {gw['rps']:>11.0f} {gw['p50']:>7.2f} {gw['p99']:>7.2f} | "
                      f"{gw['p50'] - direct['p50']:>9.2f} {gw['p99'] - direct['p99']:>9.2f}", flush=True)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
