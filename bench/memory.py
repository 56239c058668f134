"""Memory over many calls: N proxied chat calls through one gateway process — JSON and streamed answers, clients
that hang up mid-stream, upstream errors before the first byte (HTTP 500) and after it (an error event) — with
the gateway's RSS, open file descriptors, asyncio tasks and write-behind backlog read at every tenth of the way.

Each reading is taken at rest: the load generator (bench/loadgen.py, its own process) stops, waits a second,
reads /proc/<pid> and /metrics, then goes on. Flat means the reading at 100% within 5% of the one at 10% (for
1,000,000 calls: 100k against 1M) and the same fds and tasks at every step.

Run: `python bench/memory.py` (1,000,000 calls, 32 connections; about 15 minutes on 2 cores), or shorter:
`python bench/memory.py --calls 200000`. `--rate 1000` holds the load to 1,000 calls/s, below what the
write-behind's database takes (see docs/performance.md), so that a backlog does not pass for a leak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from native import KEY, free_port, gateway_config, split_cores, start_gateway, start_stub, stop  # noqa: E402

HERE = Path(__file__).parent
MODELS = {
    "bench-json": "/json/v1",  # a chat.completion
    "bench-stream": "/sse:0:8/v1",  # a whole stream at once: role, 8 tokens, finish, usage, [DONE]
    "bench-slow": "/sse:5:40/v1",  # 40 tokens 5 ms apart: the client hangs up after the first
    "bench-err": "/err500/v1",  # HTTP 500 before any byte: the client gets 502
    "bench-midfail": "/midfail:0:3/v1",  # 3 tokens, then an error event: the face's error event follows
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--calls", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10, help="readings, one every calls/steps")
    ap.add_argument("--warmup", type=int, default=5000, help="calls before the first reading (not counted)")
    ap.add_argument("--rate", type=float, default=0.0, help="calls/s at most (0: as fast as the gateway answers)")
    ap.add_argument("--database", help="a database URL (default: SQLite in the run's data dir)")
    ap.add_argument("--pin", action="store_true", help="the gateway on the last core, stub and client on the rest")
    ap.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                    help="an environment variable for the gateway (e.g. MALLOC_ARENA_MAX=2); repeatable")
    args = ap.parse_args()

    gw_cpus, tool_cpus = split_cores(args.pin)
    data = Path(tempfile.mkdtemp(prefix="modelyard-memory-"))
    stub_port = free_port()
    stub = start_stub(stub_port, cpus=tool_cpus)
    # a deployment that keeps failing is never cooled down here: every error call reaches the upstream
    extra = "cooldown_failures: 1000000000\n" + (f"database_url: {args.database}\n" if args.database else "")
    config = gateway_config(data / "bench.yaml", stub_port, MODELS, extra)
    gw = start_gateway(config, data, cpus=gw_cpus, env=dict(e.split("=", 1) for e in args.env))
    print(f"{args.calls:,} calls over {args.concurrency} connections"
          f"{f' at most {args.rate:g}/s' if args.rate else ''}; per 100 calls: 50 JSON, 30 streams, 8 client "
          f"hang-ups mid-stream, 6 upstream HTTP 500s, 6 upstream errors mid-stream; database: "
          f"{args.database.split('://')[0] if args.database else 'sqlite'}", flush=True)
    print(f"{'calls':>9} {'elapsed s':>9} {'calls/s':>8} {'cpu us/call':>11} {'RSS MB':>7} {'anon':>6} {'file':>6} "
          f"{'shmem':>6} {'thr':>4} {'fds':>5} {'tasks':>5} {'wb queued':>9}  unexpected", flush=True)
    readings: list[dict] = []
    try:
        cmd = [sys.executable, str(HERE / "loadgen.py"), "mixed", "--url", gw.url, "--key", KEY,
               "--calls", str(args.calls), "--concurrency", str(args.concurrency), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--rate", str(args.rate), "--gateway-pid", str(gw.pid)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                                preexec_fn=(lambda: os.sched_setaffinity(0, tool_cpus)) if tool_cpus else None)
        prev: dict | None = None
        for line in proc.stdout:  # type: ignore[union-attr]
            r = json.loads(line)
            readings.append(r)
            rate = cpu = ""
            if prev is not None:
                dt, dn = r["elapsed"] - prev["elapsed"], r["calls"] - prev["calls"]
                rate = f"{dn / dt:.0f}" if dt > 0 else ""
                cpu = f"{(r['cpu_s'] - prev['cpu_s']) / dn * 1e6:.0f}" if dn else ""
            print(f"{r['calls']:>9,} {r['elapsed']:>9.1f} {rate:>8} {cpu:>11} {r['rss_mb']:>7.1f} {r['anon']:>6.1f} "
                  f"{r['file']:>6.1f} {r['shmem']:>6.1f} {r['threads']:>4.0f} {r['fds']:>5} "
                  f"{r['tasks'] if r['tasks'] is not None else '-':>5} "
                  f"{r['wb_queued'] if r['wb_queued'] is not None else '-':>9}  {r['unexpected'] or ''}", flush=True)
            prev = r
        if proc.wait() != 0:
            raise SystemExit(f"the load generator failed ({proc.returncode})")
    finally:
        gw.stop()
        stop(stub)
    if len(readings) >= 3:
        first, last = readings[1], readings[-1]
        growth = (last["rss_mb"] - first["rss_mb"]) / first["rss_mb"] * 100
        print(f"\nRSS at {first['calls']:,} calls: {first['rss_mb']:.1f} MB; at {last['calls']:,}: {last['rss_mb']:.1f} MB "
              f"({growth:+.1f}%, target within ±5%); fds {first['fds']} -> {last['fds']}; asyncio tasks "
              f"{first['tasks']} -> {last['tasks']}; outcomes: {last['outcomes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
