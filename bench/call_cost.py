"""Instructions the gateway spends per proxied chat call, counted by valgrind's callgrind: repeatable where timings
are not (a 2-core VM swings ±40% between runs; an instruction count barely moves).

The gateway runs under callgrind against the nginx stub (C, not measured); after a warm-up the counters are zeroed,
exactly N calls go through one keep-alive connection, and the counters are dumped. Prints instructions per call for
a JSON chat call and a streamed one. Run: `python bench/call_cost.py [--calls 400] [--metrics off] [--request-log
off]` (needs valgrind and nginx: `apt-get install valgrind nginx-light`). Point PYTHONPATH at another checkout's src/
to measure that one; `--metrics off` / `--request-log off` measure the gateway with Prometheus metrics
(`metrics_enabled: false`) or the request log (`request_log_enabled: false`) off, to see what each costs.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
KEY = "myd_bench-admin-key-0123456789abcdef"


def _wait(url: str, proc: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit("the gateway exited during start-up")
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.HTTPError:
            time.sleep(0.5)
    raise SystemExit(f"nothing answered at {url}")


def _calls(base: str, model: str, stream: bool, n: int) -> None:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {KEY}"}, timeout=120) as client:
        for _ in range(n):
            r = client.post("/v1/chat/completions", json=body)
            r.raise_for_status()


def _instructions(out_dir: str, pid: int) -> int:
    """The events of the newest dump of `pid` (Ir: instructions executed)."""
    dumps = sorted(glob.glob(f"{out_dir}/callgrind.out.{pid}*"), key=os.path.getmtime)
    text = Path(dumps[-1]).read_text(errors="replace")
    found = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.M)
    if found is None:
        raise SystemExit("no instruction total in the callgrind dump")
    return int(found.group(1))


def _count(pid: int, out_dir: str, work: Any) -> int:
    """Instructions the gateway executes while `work()` runs (its counters zeroed before, dumped after)."""
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    work()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    return _instructions(out_dir, pid)


def _pg_database(base: str) -> tuple[str, Any]:
    """A fresh database on the server of `base` for one run (bench/writer.py makes it), and how to drop it."""
    import asyncio

    from writer import _pg_database as make

    url, drop = asyncio.run(make(base))
    return url, lambda: asyncio.run(drop())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=400, help="measured calls per mode")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--idle", type=float, default=10.0, help="seconds of idle measured before each cycle")
    ap.add_argument("--cycles", type=int, default=3,
                    help="idle, JSON and streamed windows measured this many times in turn (min and median printed)")
    ap.add_argument("--metrics", choices=["on", "off"], default="on", help="Prometheus metrics in the gateway")
    ap.add_argument("--request-log", choices=["on", "off"], default="on",
                    help="the request log (one row per call, written in batches by the write-behind)")
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="the gateway's database on this PostgreSQL server (a fresh database, dropped after; e.g. "
                         "postgresql://postgres@127.0.0.1/test) instead of SQLite in the data dir: the database's "
                         "own work then runs in its server, outside the counted process")
    ap.add_argument("--quiet", type=float, default=0.0, metavar="SECONDS",
                    help="stretch the gateway's periodic work to this interval (the write-behind's tick and flushes, "
                         "job polls and heartbeats): under callgrind a call takes ~0.1 s, so the idle pollers' "
                         "work per wall second otherwise rivals a call's own and its variance swamps an A/B; the "
                         "write-behind then writes a few seconds of calls per batch instead of one")
    ap.add_argument("--start-timeout", type=float, default=300.0,
                    help="seconds to wait for the gateway to start under valgrind (longer on a busy machine)")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not shutil.which("valgrind") or not Path(nginx).exists():
        raise SystemExit("needs valgrind and nginx (apt-get install valgrind nginx-light)")
    sys.path.insert(0, str(HERE))
    from overhead import free_port, written
    from stub_upstream import nginx_conf

    data = tempfile.mkdtemp(prefix="modelyard-callcost-")
    stub_port, gw_port = free_port(), free_port()
    stub = subprocess.Popen([nginx, "-c", str(nginx_conf(stub_port, Path(data))), "-p", data])
    cfg = Path(data) / "bench.yaml"
    cfg.write_text("builtin_models: false\nmodels:\n" + "".join(
        f"  - id: {name}\n    deployments:\n      - backend: openai\n"
        f"        base_url: http://127.0.0.1:{stub_port}{base}\n        model: bench-model\n"
        for name, base in (("bench", "/v1"), ("bench-sse", "/sse/v1"))))
    drop = None
    if args.postgres:
        url, drop = _pg_database(args.postgres)
        os.environ["MODELYARD_DATABASE_URL"] = url
    env = {**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning", "PYTHONMALLOC": "malloc",
           "MODELYARD_METRICS_ENABLED": "true" if args.metrics == "on" else "false",
           "MODELYARD_REQUEST_LOG_ENABLED": "true" if args.request_log == "on" else "false"}
    if args.quiet:
        for name in ("USAGE_FLUSH_SECONDS", "RESPONSES_FLUSH_SECONDS", "JOB_POLL_SECONDS", "JOB_HEARTBEAT_SECONDS",
                     "HEARTBEAT_SECONDS", "WORKER_HEARTBEAT_SECONDS"):
            env["MODELYARD_" + name] = str(args.quiet)
    gateway = subprocess.Popen(["valgrind", "--tool=callgrind", f"--callgrind-out-file={data}/callgrind.out.%p",
                                sys.executable, "-m", "modelyard.cli", "serve", "--port", str(gw_port),
                                "--config", str(cfg), "--data-dir", data],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{gw_port}"
    try:
        _wait(base + "/healthz", gateway, args.start_timeout)
        for model, stream in (("bench", False), ("bench-sse", True)):
            _calls(base, model, stream, args.warmup)
        written(base)
        print(f"metrics {args.metrics}, request log {args.request_log}, "
              f"{'PostgreSQL' if args.postgres else 'SQLite'}; {args.calls} calls a mode, {args.cycles} cycles")
        print(f"{'cycle':>5} {'idle/s':>12} {'json/call':>11} {'less idle':>10} {'stream/call':>12} {'less idle':>10}"
              f" {'spooled':>8}", flush=True)
        rows = []
        for cycle in range(1, args.cycles + 1):
            # what the gateway spends with nothing to do (pollers, the write-behind's tick), per second of wall
            # time: under valgrind calls are slow, so time-based work would otherwise inflate the per-call figure
            idle = _count(gateway.pid, data, lambda: time.sleep(args.idle)) / args.idle
            row: list[float] = [idle]
            for model, stream in (("bench", False), ("bench-sse", True)):
                started = time.monotonic()
                # the window ends once the write-behind has written these calls' rows: their cost is the calls'
                total = _count(gateway.pid, data, lambda: (_calls(base, model, stream, args.calls), written(base)))
                spent = time.monotonic() - started
                row += [total / args.calls, (total - idle * spent) / args.calls]
            spooled = written(base)
            rows.append(row)
            print(f"{cycle:>5} {row[0]:>12,.0f} {row[1]:>11,.0f} {row[2]:>10,.0f} {row[3]:>12,.0f} {row[4]:>10,.0f}"
                  f" {spooled:>8}", flush=True)
        cols = list(zip(*rows))
        print(f"{'min':>5} {min(cols[0]):>12,.0f} " + " ".join(
            f"{min(c):>{w},.0f}" for c, w in zip(cols[1:], (11, 10, 12, 10))))
        print(f"{'med':>5} {statistics.median(cols[0]):>12,.0f} " + " ".join(
            f"{statistics.median(c):>{w},.0f}" for c, w in zip(cols[1:], (11, 10, 12, 10))))
    finally:
        for p in (gateway, stub):
            p.terminate()
        for p in (gateway, stub):
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        if drop is not None:
            drop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
