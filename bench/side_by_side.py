"""What metrics and the request log cost a call, with both gateways loaded at the same time.

`overhead.py --observability-off` measures the gateway with metrics and the request log on, then the one with both
off, one after the other in each round. On a noisy shared VM one round's ratio then moves by ±20% (the host's load
changes between the two windows), and even 25 rounds leave the median several points wide. Here the two run side
by side: both pinned to the same core, each driven by its own `wrk` at the same time, so whatever the host does
to that core it does to both in the same seconds. Each round's CPU per request (user + system, the gateway's
process, until its write-behind has written the round's rows) of the one against the other is one ratio; the
median and quartiles over the rounds are printed, and the rounds alternate which `wrk` starts first.

The rounds are split over `--pairs` pairs of freshly started gateways: a process keeps a speed of its own for its
life (where its memory landed, its hash seed), which in an A/A run moved one pair's median by ±1%; fresh pairs
average that out. `--switch log` or `--switch metrics` compares what one switch costs alone; `--switch none` runs
two identical gateways (both on), whose ratio is the bench's own bias and spread.

Run: `python bench/side_by_side.py [--rounds 15] [--pairs 3] [--duration 5] [--concurrency 16] [--stream]
[--postgres URL] [--switch both|log|metrics|none]`
(needs nginx and wrk: `apt-get install nginx-light wrk`; Linux, two or more cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any
from pathlib import Path

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

from overhead import (KEY, PIN, Target, bench_config, chat_body, chat_url, cpu_seconds, free_port,  # noqa: E402
                      load_wrk, pinned, start_gateway, stop, wait_port, written)


SWITCHES = {"both": "metrics and the request log", "log": "the request log (metrics off in both)",
            "metrics": "metrics (the request log on in both)",
            "none": "nothing (both on in both: what the bench reads when the two are the same)"}


def _answering(t: Target, stream: bool, timeout: float = 120.0) -> None:
    """Wait until the gateway answers a chat call (an open port comes before its start-up has finished: on
    PostgreSQL the first calls can meet a database still being migrated)."""
    deadline, last = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        try:
            r = httpx.post(chat_url(t, stream), content=chat_body(t, stream), timeout=30,
                           headers={**t.headers, "Content-Type": "application/json"})
            if r.status_code == 200:
                return
            last = f"HTTP {r.status_code}: {r.text[:200]}"
        except httpx.HTTPError as exc:
            last = str(exc)
        time.sleep(0.5)
    raise SystemExit(f"{t.name} did not answer a chat call: {last}")


def _round(r: int, targets: list[Target], wrk: str, args: argparse.Namespace, data: str
           ) -> tuple[float, dict[str, float], dict[str, int], dict[str, dict[str, float]]]:
    """One round: both gateways loaded at once (which `wrk` starts first alternates); each one's CPU per request
    until its write-behind has written the round's rows, their ratio, and what each has spooled so far."""
    order = targets if r % 2 == 0 else targets[::-1]
    before = {t.name: cpu_seconds(t.pid) for t in targets}
    results: dict[str, dict[str, float]] = {}
    failures: list[str] = []

    def drive(t: Target) -> None:
        try:
            results[t.name] = load_wrk(wrk, t, args.concurrency, args.duration, args.stream, data)
        except BaseException as exc:  # noqa: BLE001 - reported below, from the main thread
            failures.append(f"{t.name}: {exc}")

    threads = [threading.Thread(target=drive, args=(t,)) for t in order]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        raise SystemExit("; ".join(failures))
    # cumulative records each has spooled (its database lagged past the write-behind's stuck bound): a spooled
    # record is written late, on replay, at a cost of its own; both should stay 0
    spooled = {t.name: written(t.url.rsplit("/v1", 1)[0]) for t in targets}
    cpu = {t.name: (cpu_seconds(t.pid) - before[t.name]) / results[t.name]["n"] * 1e6 for t in targets}
    return cpu["on"] / cpu["off"] - 1, cpu, spooled, results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds of load per round")
    ap.add_argument("--concurrency", type=int, default=16, help="connections to each gateway")
    ap.add_argument("--stream", action="store_true", help="streamed chat instead of JSON")
    ap.add_argument("--postgres", default=None, metavar="URL", help="a fresh database each on this server")
    ap.add_argument("--pairs", type=int, default=3,
                    help="fresh pairs of gateways the rounds are split over (each pair's processes keep a speed of "
                         "their own for life; more pairs average it out)")
    ap.add_argument("--switch", choices=list(SWITCHES), default="both",
                    help="what differs between the two: metrics and the request log (on vs both off), the request "
                         "log alone (metrics off in both), metrics alone (the request log on in both), or nothing (both on in "
                         "both: the bench's own bias and spread, which should read 0)")
    args = ap.parse_args()
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    wrk = shutil.which("wrk")
    if not wrk or not Path(nginx).exists():
        raise SystemExit("needs nginx and wrk (apt-get install nginx-light wrk)")
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs two or more cores: one for the gateways, the rest for the stub and wrk")
    PIN["gateway"], PIN["tools"] = {cores[0]}, set(cores[1:])
    from stub_upstream import nginx_conf

    data = tempfile.mkdtemp(prefix="modelyard-sbs-")
    stub_port = free_port()
    procs = [subprocess.Popen([nginx, "-c", str(nginx_conf(stub_port, Path(data))), "-p", data],
                              preexec_fn=pinned("tools"))]
    cfg = bench_config(stub_port, Path(data))
    env = {**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning"}
    # (metrics, request log) of the gateway with the switch on, and of the one with it off
    flags = {"both": ((True, True), (False, False)), "log": ((False, True), (False, False)),
             "metrics": ((True, True), (False, True)), "none": ((True, True), (True, True))}[args.switch]
    pairs = max(1, min(args.pairs, args.rounds))
    drops: list[Any] = []
    try:
        wait_port(stub_port)
        print(f"{'JSON' if not args.stream else 'stream'}, {args.concurrency} connections each, "
              f"{'PostgreSQL' if args.postgres else 'SQLite'}, both gateways on core {cores[0]}, {args.rounds} rounds "
              f"over {pairs} pair(s) of fresh gateways; on vs off: {SWITCHES[args.switch]}")
        print(f"{'round':>5} {'on rps':>8} {'off rps':>8} {'on us/req':>10} {'off us/req':>11} {'on vs off':>10} "
              f"{'on spool':>9} {'off spool':>9}")
        ratios, on_cpu, off_cpu = [], [], []
        for pair in range(pairs):
            # each pair is started fresh (its own databases): a process's own speed (where its memory landed, its
            # hash seed) stays with it for its life, ±1% in an A/A run (`--switch none`); pairs average that out
            gateways: list[subprocess.Popen] = []
            targets = []
            for name, (metrics, request_log) in zip(("on", "off"), flags):
                port = free_port()
                gateway = start_gateway(cfg, port, env, metrics=metrics, request_log=request_log,
                                        postgres=args.postgres, drops=drops)
                gateways.append(gateway)
                # a stream goes to the model whose upstream always streams (the stub's /sse/ prefix), as in
                # overhead.py
                targets.append(Target(name, f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {KEY}"},
                                      b"bench-sse" if args.stream else b"bench", gateway.pid))
            procs.extend(gateways)
            for t in targets:
                wait_port(int(t.url.rsplit(":", 1)[1].split("/")[0]))
                _answering(t, args.stream)
            for r in range(pair * args.rounds // pairs, (pair + 1) * args.rounds // pairs):
                ratio, cpu, spooled, results = _round(r, targets, wrk, args, data)
                ratios.append(ratio)
                on_cpu.append(cpu["on"])
                off_cpu.append(cpu["off"])
                print(f"{r + 1:>5} {results['on']['rps']:>8.0f} {results['off']['rps']:>8.0f} {cpu['on']:>10.0f} "
                      f"{cpu['off']:>11.0f} {ratio * 100:>+9.1f}% {spooled['on']:>9} {spooled['off']:>9}",
                      flush=True)
            stop(gateways, [])
            for g in gateways:
                procs.remove(g)
        q1, med, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else (ratios[0],) * 3
        print(f"on vs off, CPU per request: median {statistics.median(ratios) * 100:+.1f}%, quartiles "
              f"{q1 * 100:+.1f}% / {q3 * 100:+.1f}%, min {min(ratios) * 100:+.1f}%, max {max(ratios) * 100:+.1f}% "
              f"(medians {statistics.median(on_cpu):.0f} vs {statistics.median(off_cpu):.0f} us)")
    finally:
        stop(procs, drops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
