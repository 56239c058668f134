"""Concurrent long streams: N chat streams held open at once through one gateway, each one token every 50 ms for
20 s, from a native stub upstream (bench/stub_sse.c) to a separate load-generator process (bench/loadgen.py).

For every chunk the client takes its arrival time minus the time the stub wrote it (the stub stamps each chunk's
id with CLOCK_REALTIME µs): the same client straight to the stub gives the baseline, so `+p50`/`+p99` are what the
gateway added. While the streams run, the gateway's RSS and open fds are sampled from /proc (its workers
included), its asyncio tasks from /metrics; its CPU time before and after gives CPU per relayed chunk.

Run: `python bench/streams.py` (100, 500, 1,000 streams on one gateway process, then 2,000 with --workers 2;
3 repeats; min/median printed). Shorter: `--runs 1000 --duration 5 --repeats 1`. With `--litellm PATH` (a
`litellm` executable, e.g. from a venv of its own) LiteLLM is measured side by side on the same streams.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from native import (KEY, Gateway, cpu_seconds, cpu_share, free_port, gateway_config, open_fds, rss_mb, scrape,  # noqa: E402
                    split_cores, start_gateway, start_stub, stop, wait_port)

HERE = Path(__file__).parent
LITELLM_KEY = "sk-bench-master-key"


def client(url: str, model: str, streams: int, ramp: float, key: str | None, cpus: set[int] | None,
           target_pid: int | None, metrics_url: str | None) -> dict:
    """Run the load generator; meanwhile sample the target's RSS, fds and (Modelyard) asyncio tasks."""
    cmd = [sys.executable, str(HERE / "loadgen.py"), "streams", "--url", url, "--model", model,
           "--streams", str(streams), "--ramp", str(ramp)] + (["--key", key] if key else [])
    cpu0 = cpu_seconds(target_pid) if target_pid else 0.0
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True,
                            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    peak_rss = peak_fds = peak_tasks = 0.0
    next_scrape = time.monotonic() + ramp + 1
    while proc.poll() is None:
        if target_pid:
            peak_rss = max(peak_rss, rss_mb(target_pid))
            peak_fds = max(peak_fds, open_fds(target_pid))
            if metrics_url and time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + 2
                peak_tasks = max(peak_tasks, scrape(metrics_url, ("modelyard_event_loop_tasks",)).get(
                    "modelyard_event_loop_tasks", 0.0))
        time.sleep(0.25)
    out = proc.stdout.read()  # type: ignore[union-attr]
    if proc.returncode != 0 or not out.strip():
        raise SystemExit(f"the load generator failed ({proc.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    if target_pid:
        result.update(cpu=cpu_seconds(target_pid) - cpu0, peak_rss=peak_rss, peak_fds=peak_fds,
                      peak_tasks=peak_tasks or None)
    return result


def start_litellm(binary: str, stub_port: int, prefix: str, data: Path, cpus: set[int] | None
                  ) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cfg = data / "litellm.yaml"
    models = "".join(f"  - model_name: {name}\n    litellm_params:\n      model: openai/bench-model\n"
                     f"      api_base: http://127.0.0.1:{stub_port}{p}\n      api_key: x\n"
                     for name, p in (("bench-sse", prefix), ("bench-fast", "/sse:0:8/v1")))
    cfg.write_text(f"model_list:\n{models}general_settings:\n  master_key: {LITELLM_KEY}\n")
    proc = subprocess.Popen([binary, "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
                            env={**os.environ, "LITELLM_LOG": "ERROR"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    wait_port(port, proc, timeout=240)
    time.sleep(2)
    return proc, port


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default="100,500,1000,2000:2",
                    help="comma-separated stream counts; N:W runs N streams on `serve --workers W`")
    ap.add_argument("--interval", type=int, default=50, help="ms between tokens")
    ap.add_argument("--duration", type=float, default=20.0, help="seconds each stream lasts")
    ap.add_argument("--ramp", type=float, default=None,
                    help="seconds over which the streams are opened (default: 200 new streams a second)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--litellm", default=shutil.which("litellm"), help="a litellm executable to compare with")
    ap.add_argument("--litellm-runs", default=None, help="stream counts for LiteLLM (default: the one-worker runs)")
    ap.add_argument("--litellm-repeats", type=int, default=1,
                    help="repeats LiteLLM joins (default 1: at 500 streams one run takes minutes)")
    ap.add_argument("--pin", action="store_true", help="the gateway on the last core, stub and client on the rest")
    ap.add_argument("--json", help="also write every measurement to this file")
    args = ap.parse_args()

    gw_cpus, tool_cpus = split_cores(args.pin)
    tokens = int(args.duration * 1000 / args.interval)
    prefix = f"/sse:{args.interval}:{tokens}/v1"
    data = Path(tempfile.mkdtemp(prefix="modelyard-streams-"))
    stub_port = free_port()
    stub = start_stub(stub_port, args.interval, tokens, tool_cpus)
    config = gateway_config(data / "bench.yaml", stub_port, {"bench-sse": prefix, "bench-fast": "/sse:0:8/v1"})
    runs = [(int(r.split(":")[0]), int(r.split(":")[1]) if ":" in r else 1) for r in args.runs.split(",")]
    litellm_runs = ({int(x) for x in args.litellm_runs.split(",")} if args.litellm_runs is not None
                    else {n for n, w in runs if w == 1})
    use_litellm = bool(args.litellm and Path(args.litellm).exists())
    print(f"stub: native (C, epoll), one token every {args.interval} ms for {args.duration:g} s "
          f"({tokens} tokens + role, finish and usage chunks); streams opened "
          f"{f'over {args.ramp:g} s' if args.ramp is not None else '200 a second'}; "
          f"LiteLLM: {args.litellm if use_litellm else 'not measured'}", flush=True)
    head = (f"{'rep':>3} {'streams':>7} {'target':<14} {'done':>5} {'p50 ms':>7} {'p99 ms':>7} {'p999':>6} "
            f"{'+p50':>6} {'+p99':>6} {'ttfb99':>7} {'rss0 MB':>7} {'peakMB':>7} {'KB/str':>6} "
            f"{'cpu us/chunk':>12} {'fds':>5} {'tasks':>5} {'core%':>5}")
    print(head, flush=True)
    rows: list[dict] = []
    try:
        for rep in range(1, args.repeats + 1):
            for n, workers in runs:
                ramp = args.ramp if args.ramp is not None else max(1.0, n / 200)
                direct = client(f"http://127.0.0.1:{stub_port}{prefix}/chat/completions", "bench-model", n,
                                ramp, None, tool_cpus, None, None)
                rows.append({"rep": rep, "streams": n, "workers": workers, "target": "direct", **direct,
                             "core": cpu_share()})
                show(rows[-1], direct)
                targets = ["modelyard"] + (["litellm"] if use_litellm and workers == 1 and n in litellm_runs
                                           and rep <= args.litellm_repeats else [])
                for name in targets:
                    run_dir = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=data))
                    if name == "modelyard":
                        gw: Gateway | None = start_gateway(config, run_dir, workers=workers, cpus=gw_cpus)
                        proc, port, key = gw.proc, gw.port, KEY  # type: ignore[union-attr]
                        metrics = gw.url  # type: ignore[union-attr]
                    else:
                        gw = None
                        proc, port = start_litellm(args.litellm, stub_port, prefix, run_dir, gw_cpus)
                        key, metrics = LITELLM_KEY, None
                    try:
                        base = f"http://127.0.0.1:{port}/v1/chat/completions"
                        client(base, "bench-fast", 20, 0.0, key, tool_cpus, None, None)  # warm-up
                        rss0 = rss_mb(proc.pid)
                        core = cpu_share()  # what a busy loop gets of a core right now: the machine's state
                        r = client(base, "bench-sse", n, ramp, key, tool_cpus, proc.pid, metrics)
                    finally:
                        stop(proc)
                    label = name if workers == 1 else f"{name} w{workers}"
                    row = {"rep": rep, "streams": n, "workers": workers, "target": label, **r, "rss0": rss0, "core": core,
                           "plus_p50": r["p50"] - direct["p50"], "plus_p99": r["p99"] - direct["p99"],
                           "kb_per_stream": (r["peak_rss"] - rss0) * 1024 / n,
                           "cpu_us_per_chunk": r["cpu"] / r["chunks"] * 1e6 if r["chunks"] else float("nan")}
                    rows.append(row)
                    show(row, direct)
                    if args.json:  # as it goes: a long run cut short keeps what it measured
                        Path(args.json).write_text(json.dumps(rows, indent=1))
        summary(rows)
    finally:
        stop(stub)
    return 0


def show(r: dict, direct: dict) -> None:
    extra = ""
    if r["target"] != "direct":
        extra = (f"{r['plus_p50']:>6.2f} {r['plus_p99']:>6.2f} {r['ttfb_p99']:>7.1f} {r['rss0']:>7.0f} "
                 f"{r['peak_rss']:>7.0f} {r['kb_per_stream']:>6.0f} {r['cpu_us_per_chunk']:>12.1f} "
                 f"{r['peak_fds']:>5.0f} {r['peak_tasks'] or 0:>5.0f} {r['core'] * 100:>5.0f}")
    else:
        extra = (f"{'':>6} {'':>6} {r['ttfb_p99']:>7.1f} {'':>7} {'':>7} {'':>6} {'':>12} {'':>5} {'':>5} "
                 f"{r['core'] * 100:>5.0f}")
    fails = f"  failed: {r['failed']}" if r["failed"] else ""
    print(f"{r['rep']:>3} {r['streams']:>7} {r['target']:<14} {r['complete']:>5} {r['p50']:>7.2f} {r['p99']:>7.2f} "
          f"{r['p999']:>6.1f} {extra}{fails}", flush=True)


def summary(rows: list[dict]) -> None:
    """min / median over the repeats, per (streams, target)."""
    keys = sorted({(r["streams"], r["target"]) for r in rows}, key=lambda k: (k[0], k[1] != "direct", k[1]))
    print("\nmin / median over repeats")
    print(f"{'streams':>7} {'target':<14} {'complete':>11} {'p99 ms':>13} {'+p99 ms':>13} {'peak RSS MB':>13} "
          f"{'KB/stream':>11} {'cpu us/chunk':>13}")

    def mm(values: list[float], fmt: str) -> str:
        return f"{min(values):{fmt}} / {statistics.median(values):{fmt}}"

    for n, target in keys:
        rs = [r for r in rows if r["streams"] == n and r["target"] == target]
        done = f"{min(r['complete'] for r in rs)}/{n}"
        line = f"{n:>7} {target:<14} {done:>11} {mm([r['p99'] for r in rs], '.2f'):>13}"
        if target != "direct":
            line += (f" {mm([r['plus_p99'] for r in rs], '.2f'):>13} {mm([r['peak_rss'] for r in rs], '.0f'):>13}"
                     f" {mm([r['kb_per_stream'] for r in rs], '.0f'):>11} {mm([r['cpu_us_per_chunk'] for r in rs], '.1f'):>13}")
        print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
