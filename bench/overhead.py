"""Gateway overhead: the same load against a stub upstream, directly and through Modelyard (and LiteLLM).

Prints requests/s and latency percentiles for each target, the latency each gateway adds over the direct stub,
and each gateway's peak RSS. Run: `make bench`, or
`python bench/overhead.py --concurrency 1,16,64 --duration 10 --stream [--litellm /path/to/venv/bin/litellm]`.

Where nginx and wrk are installed (`apt-get install nginx-light wrk`) the stub is nginx and the load comes from wrk,
both C programs that cost a small fraction of what a Python stub or client would: on a 2-core machine every
microsecond they spend is taken from the gateway under test. Otherwise a Python stub and an aiohttp client stand in.

`--metrics-off` adds a second Modelyard per worker count, `modelyard-nomet`, with Prometheus metrics off
(`metrics_enabled: false`), measured right after the first on the same load: the `cpu us/req` columns of the two
say what metrics cost a call (with `--workers 2`, each worker also copies them into prometheus-client's
per-process files once a second).
`--observability-off` adds `modelyard-obsoff` likewise, with metrics and the request log both off (issue 16's "on vs
off"), and prints the median of the per-round CPU-per-request ratios of the default gateway against it. With both
switches, it also prints what each costs alone: the request log (`nomet` against `obsoff`) and metrics (the default
against `nomet`).

`--postgres URL` gives each Modelyard a fresh database of its own on that PostgreSQL server (dropped at the end)
instead of SQLite in its data dir: the database's index and WAL work then runs in the database server's processes,
which `cpu us/req` does not count, as in a deployment that runs PostgreSQL.

`--workers 1,2` runs one Modelyard (`serve --workers N`) and one LiteLLM (`--num_workers N`) per count, all started
once and measured in turns. `--repeats R` measures every target R times, interleaved (direct, each gateway, then
again), and prints min / median requests/s, the median p50/p99 and what each gateway adds to the direct p50, and the
median of the per-round modelyard/litellm ratios: on a shared 2-core machine absolute numbers move ±40% between
runs, ratios taken side by side in one round much less. `cpu us/req` sums the gateway's processes (its workers),
from before the load to when its write-behind has written the load's usage and request-log rows (`/readyz`).

`--profile` samples each Modelyard with py-spy (`pip install py-spy`; `--gil`: only threads running Python) during its first measurement of every mode and
connection count, and prints where its CPU went: the share of samples by area (our code by package, the HTTP
server, the HTTP client, asyncio, the rest) and the functions with the most samples of their own.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import re

import aiohttp
import httpx

HERE = Path(__file__).parent
KEY = "myd_bench-admin-key-0123456789abcdef"
LITELLM_KEY = "sk-bench-master-key"


# --pin: the gateway under test (Modelyard or LiteLLM) gets a core of its own; the stub and the load client share
# the others. Unpinned, the scheduler moves all three across the same two cores and the numbers swing run to run.
PIN: dict[str, set[int] | None] = {"gateway": None, "tools": None}


def pinned(role: str):  # noqa: ANN201 - a preexec_fn or None
    cpus = PIN[role]
    return (lambda: os.sched_setaffinity(0, cpus)) if cpus else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"nothing listening on {port}")


def peak_rss_mb(pid: int) -> float:
    """VmHWM of the process and its children (uvicorn/litellm may fork workers)."""
    total = 0.0
    pids = [pid] + [int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()]
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            pass
    return total


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    model: bytes
    pid: int | None = None


def chat_body(t: Target, stream: bool) -> bytes:
    return b'{"model":"%s","messages":[{"role":"user","content":"hi"}]' % t.model + (b',"stream":true}' if stream else b"}")


def chat_url(t: Target, stream: bool) -> str:
    # the direct target streams from the stub's /sse/ prefix, as the gateways' streaming deployments do
    return (t.url.replace("/v1", "/sse/v1", 1) if stream and t.name == "direct" else t.url) + "/chat/completions"


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def load_wrk(wrk: str, t: Target, concurrency: int, duration: float, stream: bool, tmp: str) -> dict[str, float]:
    """Drive the target with wrk (one thread: the gateway gets the other core); rps and latency percentiles."""
    script = Path(tmp) / f"{t.name}-{int(stream)}.lua"
    headers = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in {**t.headers, "Content-Type": "application/json"}.items())
    script.write_text(f"wrk.method = 'POST'\nwrk.body = '{chat_body(t, stream).decode()}'\n{headers}"
                      "function response(status, headers, body)\n"
                      "  if status ~= 200 then io.stderr:write('HTTP ' .. status .. ': ' .. body .. '\\n'); os.exit(1) end\n"
                      "end\n")
    url = chat_url(t, stream)
    warm = subprocess.run([wrk, "-t1", f"-c{concurrency}", "-d1s", "-s", str(script), url], capture_output=True,
                          text=True, check=True, preexec_fn=pinned("tools"))
    out = subprocess.run([wrk, "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(script), url],
                         capture_output=True, text=True, preexec_fn=pinned("tools"))
    if out.returncode != 0:
        raise SystemExit(f"{t.name}: wrk failed: {out.stderr.strip()[:500]}")
    pct = {m[0]: float(m[1]) * _UNITS[m[2]] for m in re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", out.stdout, re.M)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    # every request the gateway served in this measurement, the warm-up's too (its CPU time counts them all)
    n = sum(float(re.search(r"(\d+) requests in", o.stdout).group(1)) for o in (warm, out))  # type: ignore[union-attr]
    return {"rps": rps, "p50": pct["50"], "p99": pct["99"], "n": n}


async def load(t: Target, concurrency: int, duration: float, stream: bool) -> tuple[list[float], int]:
    body = chat_body(t, stream)
    url = chat_url(t, stream)
    latencies: list[float] = []
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, headers={**t.headers, "Content-Type": "application/json"}) as session:
        async def once() -> None:
            async with session.post(url, data=body) as resp:
                if resp.status != 200:
                    raise SystemExit(f"{t.name}: HTTP {resp.status}: {await resp.text()}")
                await resp.read()

        warm_until = time.perf_counter() + 1.0
        warmed = 0
        while time.perf_counter() < warm_until:
            await asyncio.gather(*(once() for _ in range(concurrency)))
            warmed += concurrency
        stop_at = time.perf_counter() + duration

        async def worker() -> None:
            while time.perf_counter() < stop_at:
                t0 = time.perf_counter()
                await once()
                latencies.append(time.perf_counter() - t0)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, warmed


def summarize(run: tuple[list[float], int], duration: float) -> dict[str, float]:
    lat, warmed = run
    q = statistics.quantiles(lat, n=100)
    return {"rps": len(lat) / duration, "p50": statistics.median(lat) * 1000, "p99": q[98] * 1000,
            "n": len(lat) + warmed}


AREAS = (("modelyard/", None), ("uvicorn/", "uvicorn"), ("httptools", "uvicorn"), ("starlette/", "starlette"),
         ("fastapi/", "starlette"), ("aiohttp/", "aiohttp (upstream client)"), ("yarl/", "aiohttp (upstream client)"),
         ("multidict/", "aiohttp (upstream client)"), ("asyncio/", "asyncio"), ("uvloop", "asyncio"),
         ("prometheus_client/", "prometheus-client"), ("orjson", "orjson"), ("pydantic", "pydantic"))


def _area(frame: str) -> str:
    """The area a py-spy frame (`function (path:line)`) belongs to; our own code by its package."""
    for needle, name in AREAS:
        at = frame.find(needle)
        if at >= 0:
            if name is None:
                rest = frame[at + len(needle):].split(":", 1)[0]
                return "modelyard/" + (rest.split("/", 1)[0] if "/" in rest else rest)
            return name
    return "other (stdlib, native)"


def profile_start(pid: int, out: Path, seconds: float) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(spy).exists():
        print("--profile: py-spy is not installed (pip install py-spy)")
        return None
    return subprocess.Popen([spy, "record", "-p", str(pid), "--subprocesses", "--nonblocking", "--gil", "-r", "250", "-d",
                             str(max(1, int(seconds))), "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_report(out: Path, label: str, top: int = 12) -> None:
    """Self samples by area and by function from a py-spy raw (collapsed stacks) file."""
    by_area: dict[str, int] = {}
    by_fn: dict[str, int] = {}
    total = 0
    for line in out.read_text().splitlines() if out.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        if frames and frames[0].startswith("process "):
            frames = frames[1:]
        if not frames:
            continue
        n = int(count)
        total += n
        leaf = frames[-1]
        by_area[_area(leaf)] = by_area.get(_area(leaf), 0) + n
        by_fn[leaf] = by_fn.get(leaf, 0) + n
    if not total:
        print(f"profile {label}: no samples")
        return
    print(f"profile {label}: {total} samples, self time by area")
    for name, n in sorted(by_area.items(), key=lambda kv: -kv[1]):
        print(f"    {100 * n / total:5.1f}%  {name}")
    print(f"profile {label}: functions with the most self time")
    for name, n in sorted(by_fn.items(), key=lambda kv: -kv[1])[:top]:
        print(f"    {100 * n / total:5.1f}%  {name[:110]}")


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time so far (Linux /proc) of a process and its live children (`--workers N` forks N), the
    measure of what a gateway costs per call."""
    if pid is None:
        return 0.0
    total = 0.0
    kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    for p in [pid, *map(int, kids)]:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def written(root: str, probes: int = 1, timeout: float = 60.0) -> int:
    """Waits until the write-behind of the Modelyard at `root` has written what the last load queued (`/readyz`: nothing queued or
    spooled, `probes` answers in a row, each on a new connection, so `--workers N` is likely asked in every worker),
    and returns the records it has spooled so far (the database lagged past the stuck bound: written late, on
    replay). The CPU window of a measurement ends here, so it holds its own calls' rows and no other's: the writer
    flushes on a 1 s tick, and a window that ended at the last call left up to a second of writes to the next one."""
    deadline, clean, spooled = time.monotonic() + timeout, 0, 0
    time.sleep(0.2)
    while clean < probes and time.monotonic() < deadline:
        try:
            w = httpx.get(root + "/readyz", timeout=10).json().get("write_behind") or {}
        except (httpx.HTTPError, ValueError):
            w = {}
        spooled = max(spooled, int(w.get("spooled", 0)))
        clean = clean + 1 if w and not w.get("queued") and not w.get("spool_records") else 0
        if clean < probes:
            time.sleep(0.2)
    return spooled


def bench_config(stub_port: int, folder: Path) -> Path:
    """The gateways' config: `bench` on the stub's JSON route, `bench-sse` on its streaming one."""
    cfg = folder / "bench.yaml"
    cfg.write_text("builtin_models: false\nmodels:\n" + "".join(
        f"  - id: {name}\n    deployments:\n      - backend: openai\n"
        f"        base_url: http://127.0.0.1:{stub_port}{base}\n        model: bench-model\n"
        f"        max_concurrency: 256\n" for name, base in (("bench", "/v1"), ("bench-sse", "/sse/v1"))))
    return cfg


def start_gateway(cfg: Path, port: int, env: dict[str, str], *, metrics: bool, request_log: bool,
                  workers: int = 1, postgres: str | None = None, drops: list[Any], log: Any = None
                  ) -> subprocess.Popen:
    """A Modelyard on `port`, pinned to the gateway's core, with metrics and the request log on or off; with
    `postgres`, on a fresh database of its own there (its drop appended to `drops`)."""
    database: dict[str, str] = {}
    if postgres:
        url, drop = _pg_database(postgres)
        drops.append(drop)
        database["MODELYARD_DATABASE_URL"] = url
    return subprocess.Popen(
        [sys.executable, "-m", "modelyard.cli", "serve", "--port", str(port), "--config", str(cfg),
         "--data-dir", tempfile.mkdtemp(prefix="modelyard-bench-gw-"), "--workers", str(workers)],
        env={**env, **database, "MODELYARD_METRICS_ENABLED": str(metrics).lower(),
             "MODELYARD_REQUEST_LOG_ENABLED": str(request_log).lower()},
        stdout=log or subprocess.DEVNULL, stderr=log or subprocess.DEVNULL, preexec_fn=pinned("gateway"))


def stop(procs: list[subprocess.Popen], drops: list[Any]) -> None:
    """End the stub and the gateways (killed if they take over 15 s), then drop their PostgreSQL databases."""
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(timeout=15)
        except subprocess.TimeoutExpired:
            p.kill()
    for drop in drops:
        drop()


def _pg_database(base: str) -> tuple[str, Any]:
    """A fresh database on the server of `base` (bench/writer.py makes it), and how to drop it."""
    sys.path.insert(0, str(HERE))
    from writer import _pg_database as make

    url, drop = asyncio.run(make(base))
    return url, lambda: asyncio.run(drop())


def start_litellm(binary: str, stub_port: int, tmp: str, workers: int = 1,
                  name: str = "litellm") -> tuple[subprocess.Popen, Target]:
    port = free_port()
    cfg = Path(tmp) / "litellm.yaml"
    models = "".join(f"  - model_name: {name}\n    litellm_params:\n      model: openai/bench-model\n"
                     f"      api_base: http://127.0.0.1:{stub_port}{base}\n      api_key: x\n"
                     for name, base in (("bench", "/v1"), ("bench-sse", "/sse/v1")))
    cfg.write_text(f"model_list:\n{models}general_settings:\n  master_key: {LITELLM_KEY}\n")
    proc = subprocess.Popen([binary, "--config", str(cfg), "--port", str(port), "--num_workers", str(workers)],
                            env={**os.environ, "LITELLM_LOG": "ERROR"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, preexec_fn=pinned("gateway"))
    wait_port(port, timeout=180)
    time.sleep(2)
    return proc, Target(name, f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {LITELLM_KEY}"},
                        b"bench", proc.pid)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--concurrency", default="1,16,64", help="comma-separated connection counts")
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per measurement")
    ap.add_argument("--stream", action="store_true", help="also measure streaming chat")
    ap.add_argument("--litellm", default=shutil.which("litellm"), help="a litellm executable to compare with")
    ap.add_argument("--stub", choices=["auto", "nginx", "python"], default="auto")
    ap.add_argument("--client", choices=["auto", "wrk", "aiohttp"], default="auto")
    ap.add_argument("--pin", action="store_true",
                    help="give the gateway under test its own core (the last one); stub and client get the rest")
    ap.add_argument("--metrics-off", action="store_true",
                    help="also measure a Modelyard with metrics off (metrics_enabled: false) beside the default one")
    ap.add_argument("--observability-off", action="store_true",
                    help="also measure a Modelyard with metrics and the request log off, and the CPU it saves a call")
    ap.add_argument("--workers", default="1", help="comma-separated gateway process counts (Modelyard and LiteLLM)")
    ap.add_argument("--repeats", type=int, default=1, help="measure every target this many times, interleaved")
    ap.add_argument("--profile", action="store_true", help="py-spy each Modelyard during its first measurement")
    ap.add_argument("--postgres", default=None, metavar="URL",
                    help="each Modelyard's database on this PostgreSQL server (a fresh database per gateway, dropped "
                         "after; e.g. postgresql://postgres@127.0.0.1/test) instead of SQLite in its data dir")
    args = ap.parse_args()
    worker_counts = [int(x) for x in args.workers.split(",")]
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least two cores")
        PIN["gateway"], PIN["tools"] = {cpus[-1]}, set(cpus[:-1])
        os.sched_setaffinity(0, PIN["tools"])  # the aiohttp client, when wrk is missing

    nginx = shutil.which("nginx") or (Path("/usr/sbin/nginx").exists() and "/usr/sbin/nginx")
    use_nginx = args.stub == "nginx" or (args.stub == "auto" and bool(nginx))
    wrk = shutil.which("wrk") if args.client in ("auto", "wrk") else None
    if args.client == "wrk" and not wrk:
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    stub_port = free_port()
    data = tempfile.mkdtemp(prefix="modelyard-bench-")
    if use_nginx:
        sys.path.insert(0, str(HERE))
        from stub_upstream import nginx_conf

        procs = [subprocess.Popen([str(nginx), "-c", str(nginx_conf(stub_port, Path(data))), "-p", data],
                                  preexec_fn=pinned("tools"))]
    else:
        procs = [subprocess.Popen([sys.executable, str(HERE / "stub_upstream.py"), str(stub_port)],
                                  preexec_fn=pinned("tools"))]
    print(f"stub: {'nginx' if use_nginx else 'python (uvicorn)'}; load client: {'wrk' if wrk else 'aiohttp'}")
    cfg = bench_config(stub_port, Path(data))
    env = {**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning"}
    log = open(os.environ.get("MODELYARD_BENCH_LOG", os.devnull), "w")
    targets: list[Target] = []
    drops: list[Any] = []  # --postgres: each gateway's database, dropped at the end
    for n in worker_counts:
        variants = [("modelyard", True, True)]
        if args.metrics_off:
            variants.append(("modelyard-nomet", False, True))
        if args.observability_off:
            variants.append(("modelyard-obsoff", False, False))
        for label, metrics, request_log in variants:
            port = free_port()
            gateway = start_gateway(cfg, port, env, metrics=metrics, request_log=request_log, workers=n,
                                    postgres=args.postgres, drops=drops, log=log)
            procs.append(gateway)
            name = label + ("" if worker_counts == [1] else f"-w{n}")
            targets.append(Target(name, f"http://127.0.0.1:{port}/v1", {"Authorization": f"Bearer {KEY}"},
                                  b"bench", gateway.pid))
    try:
        wait_port(stub_port)
        for t in targets:
            wait_port(int(t.url.rsplit(":", 1)[1].split("/")[0]))
        direct = Target("direct", f"http://127.0.0.1:{stub_port}/v1", {}, b"bench-model")
        if args.litellm and Path(args.litellm).exists():
            for n in worker_counts:
                proc, target = start_litellm(args.litellm, stub_port, data, n,
                                             "litellm" if worker_counts == [1] else f"litellm-w{n}")
                procs.append(proc)
                targets.append(target)
        reps = max(1, args.repeats)
        print(f"{'mode':<6} {'conns':>5} {'target':<15} {'rps min':>8} {'rps med':>8} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'+p50 ms':>8} {'+p99 ms':>8} {'cpu us/req':>10}  (median of {reps} unless min)")
        for stream in ([False, True] if args.stream else [False]):
            for c in [int(x) for x in args.concurrency.split(",")]:
                def measure(t: Target) -> dict[str, float]:
                    if wrk:
                        return load_wrk(wrk, t, c, args.duration, stream, data)
                    return summarize(asyncio.run(load(t, c, args.duration, stream)), args.duration)

                for t in targets:  # streaming goes to the models whose upstream always streams
                    t.model = (b"bench-sse" if stream else b"bench") if t.name != "direct" else b"bench-model"
                mode = "stream" if stream else "json"
                rounds: dict[str, list[dict[str, float]]] = {t.name: [] for t in [direct, *targets]}
                profiles: list[tuple[Path, str]] = []
                for rep in range(reps):
                    base = measure(direct)
                    rounds["direct"].append({**base, "cpu": 0.0, "+p50": 0.0, "+p99": 0.0})
                    for t in targets:
                        spy = None
                        if args.profile and rep == 0 and t.name.startswith("modelyard") and t.pid:
                            out = Path(data) / f"profile-{t.name}-{mode}-{c}.txt"
                            spy = profile_start(t.pid, out, args.duration + 1)
                            if spy is not None:
                                profiles.append((out, f"{t.name} {mode} {c} conns"))
                        ours = t.name.startswith("modelyard")
                        root = t.url.rsplit("/v1", 1)[0]
                        if ours:
                            written(root, probes=2 * max(worker_counts))  # nothing of the last load left to write
                        cpu = cpu_seconds(t.pid)
                        r = measure(t)
                        spooled = written(root, probes=2 * max(worker_counts)) if ours else 0
                        cpu = cpu_seconds(t.pid) - cpu  # warm-up and the rows' writes included
                        if spy is not None:
                            spy.wait(timeout=60)
                        rounds[t.name].append({**r, "cpu": cpu / r["n"] * 1e6 if r["n"] else 0.0, "spooled": spooled,
                                               "+p50": r["p50"] - base["p50"], "+p99": r["p99"] - base["p99"]})
                med = statistics.median
                for name, rs in rounds.items():
                    line = (f"{mode:<6} {c:>5} {name:<15} {min(r['rps'] for r in rs):>8.0f} "
                            f"{med(r['rps'] for r in rs):>8.0f} {med(r['p50'] for r in rs):>7.2f} "
                            f"{med(r['p99'] for r in rs):>7.2f}")
                    if name != "direct":
                        line += (f" {med(r['+p50'] for r in rs):>8.2f} {med(r['+p99'] for r in rs):>8.2f} "
                                 f"{med(r['cpu'] for r in rs):>10.0f}")
                    print(line, flush=True)
                for out, label in profiles:
                    profile_report(out, label)
                for n in worker_counts:
                    suffix = "" if worker_counts == [1] else f"-w{n}"
                    on, off = rounds.get("modelyard" + suffix), rounds.get("modelyard-obsoff" + suffix)
                    if on and off:
                        extra = [a["cpu"] / b["cpu"] - 1 for a, b in zip(on, off) if b["cpu"]]
                        q1, _, q3 = (statistics.quantiles(extra, n=4) if len(extra) > 1 else (extra[0],) * 3)
                        print(f"{mode:<6} {c:>5} modelyard{suffix} cpu/req with metrics and the request log on vs "
                              f"off: min {min(extra) * 100:+.1f}%, quartiles {q1 * 100:+.1f}% / {q3 * 100:+.1f}%, "
                              f"max {max(extra) * 100:+.1f}%, median {med(extra) * 100:+.1f}% "
                              f"({med(a['cpu'] for a in on):.0f} vs {med(b['cpu'] for b in off):.0f} us; records "
                              f"spooled so far: {on[-1]['spooled']} on, {off[-1]['spooled']} off)", flush=True)
                    nomet = rounds.get("modelyard-nomet" + suffix)
                    if on and off and nomet:  # both switches given: what each costs on its own
                        log_alone = [a["cpu"] / b["cpu"] - 1 for a, b in zip(nomet, off) if b["cpu"]]
                        met_alone = [a["cpu"] / b["cpu"] - 1 for a, b in zip(on, nomet) if b["cpu"]]
                        print(f"{mode:<6} {c:>5} modelyard{suffix} cpu/req, median of rounds: the request log alone "
                              f"{med(log_alone) * 100:+.1f}% (metrics off both), metrics alone "
                              f"{med(met_alone) * 100:+.1f}% (request log on both)", flush=True)
                    ours, theirs = (("modelyard", "litellm") if worker_counts == [1]
                                    else (f"modelyard-w{n}", f"litellm-w{n}"))
                    if rounds.get(theirs):
                        ratios = [a["rps"] / b["rps"] for a, b in zip(rounds[ours], rounds[theirs]) if b["rps"]]
                        if ratios:
                            print(f"{mode:<6} {c:>5} {ours}/{theirs} requests/s: min {min(ratios):.1f}x, "
                                  f"median {med(ratios):.1f}x", flush=True)
        for t in targets:
            print(f"peak RSS {t.name}: {peak_rss_mb(t.pid):.0f} MB")  # type: ignore[arg-type]
    finally:
        stop(procs, drops)
    return 0


if __name__ == "__main__":
    sys.exit(main())
