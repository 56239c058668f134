"""The Grafana dashboard (docs/grafana/modelyard-dashboard.json) drawn from a real Prometheus over a bench run.

Grafana is not in the registries this project may install from; Prometheus is (Debian's `prometheus` package). So
this script does what Grafana would: a local Prometheus scrapes a gateway's `/metrics` every second while mixed
traffic runs through it, then every panel's own PromQL (the `expr`s in the dashboard JSON, with `$model` and
`$dialect` set to All and `$__rate_interval` to four scrape intervals) goes to Prometheus's `query_range` API, and
the answers are drawn with matplotlib in the dashboard's own grid (`gridPos`) and legend formats. A panel whose
query is wrong comes out empty, which is the point: the picture checks the dashboard as well as showing it.

The traffic, for `--seconds` (default 90): JSON and streamed chat calls to a stub upstream; a model with one of its
two deployments down (retries, a cooldown) and one with its only deployment down (a fallback to another model); a key on a plan of 30 chat calls a minute (rate-limit refusals);
malformed requests (4xx); unknown models; jobs on the echo model (the job queue).

Run: `python bench/dashboard.py [--seconds 90] [--out docs/grafana/dashboard-rendering.png]` (needs
`apt-get install prometheus` and `pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))
from overhead import free_port, wait_port  # noqa: E402

KEY = "myd_bench-admin-key-0123456789abcdef"
DASHBOARD = HERE.parent / "docs" / "grafana" / "modelyard-dashboard.json"
SCRAPE = 1  # seconds between scrapes
RATE = f"{4 * SCRAPE * 2}s"  # $__rate_interval: Grafana's rule is at least four scrape intervals
# Grafana's dark theme
BG, PANEL, TEXT, GRID = "#111217", "#181b1f", "#ccccdc", "#2c3235"
COLORS = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9", "#fade2a", "#ff9830",
          "#c4162a", "#56a64b", "#3274d9"]


def config(stub: int, dead: int) -> str:
    upstream = f"http://127.0.0.1:{stub}/v1"
    return json.dumps({
        "builtin_models": False,
        "metrics_public": True,
        "plans": {"tight": {"limits": [{"scope": "token", "kind": "chat", "count": 30}]}},
        "prices": {"bench": {"input_per_1m": 2.5, "output_per_1m": 10.0},
                   "flaky": {"input_per_1m": 0.5, "output_per_1m": 1.5}},
        "models": [
            {"id": "bench", "deployments": [{"backend": "openai", "base_url": upstream, "model": "bench-model"}]},
            # half its traffic meets a deployment that is down: retries on the other one, then a cooldown
            {"id": "flaky", "deployments": [
                {"name": "down", "backend": "openai", "base_url": f"http://127.0.0.1:{dead}/v1", "model": "m"},
                {"name": "up", "backend": "openai", "base_url": upstream, "model": "bench-model"}]},
            # nothing of its own answers: every call falls back to `bench`
            {"id": "gone", "fallbacks": ["bench"], "deployments": [
                {"name": "gone-down", "backend": "openai", "base_url": f"http://127.0.0.1:{dead}/v1", "model": "m"}]},
            {"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]},
        ],
    })


async def traffic(base: str, tight_key: str, seconds: float) -> dict[str, int]:
    """Mixed calls from 8 clients for `seconds`; counts of each outcome."""
    counts: dict[str, int] = {}
    admin = {"Authorization": f"Bearer {KEY}"}
    end = time.monotonic() + seconds
    rnd = random.Random(7)

    def chat(model: str, stream: bool = False) -> dict[str, Any]:
        return {"model": model, "stream": stream,
                "messages": [{"role": "user", "content": "how are the tides today? " * rnd.randint(1, 20)}]}

    async def one(client: httpx.AsyncClient) -> None:
        pick = rnd.random()
        if pick < 0.45:
            r = await client.post("/v1/chat/completions", json=chat("bench"), headers=admin)
        elif pick < 0.70:
            async with client.stream("POST", "/v1/chat/completions", json=chat("bench", True), headers=admin) as r:
                async for _ in r.aiter_bytes():
                    pass
        elif pick < 0.77:
            r = await client.post("/v1/chat/completions", json=chat("flaky"), headers=admin)
        elif pick < 0.80:
            r = await client.post("/v1/chat/completions", json=chat("gone"), headers=admin)
        elif pick < 0.88:
            r = await client.post("/v1/chat/completions", json=chat("bench"),
                                  headers={"Authorization": f"Bearer {tight_key}"})
        elif pick < 0.92:
            r = await client.post("/v1/chat/completions", json={"model": "bench", "messages": "not a list"},
                                  headers=admin)
        elif pick < 0.94:
            r = await client.post("/v1/chat/completions", json=chat("no-such-model"), headers=admin)
        else:
            r = await client.post("/v1/chat/completions", json={**chat("echo"), "async": True}, headers=admin)
        counts[str(r.status_code)] = counts.get(str(r.status_code), 0) + 1

    async def client_loop() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=60) as client:
            while time.monotonic() < end:
                await one(client)
                # a bursty rate: quiet stretches and busy ones, so the rate panels have a shape
                phase = (time.monotonic() % 30) / 30
                await asyncio.sleep(0.002 if phase < 0.5 else 0.02)

    await asyncio.gather(*(client_loop() for _ in range(8)))
    return counts


def org_key(base: str) -> str:
    """An org on the `tight` plan and a key for it, through the operator API."""
    h = {"Authorization": f"Bearer {KEY}"}
    org = httpx.post(base + "/api/organizations", json={"name": "tight-org", "plan": "tight"}, headers=h)
    org.raise_for_status()
    tok = httpx.post(f"{base}/api/organizations/{org.json()['id']}/tokens", json={"name": "bench"}, headers=h)
    tok.raise_for_status()
    body = tok.json()
    return body.get("secret") or body["key"]


def query_range(prom: str, expr: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
    expr = expr.replace("$__rate_interval", RATE).replace("$model", ".*").replace("$dialect", ".*")
    r = httpx.get(prom + "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step})
    r.raise_for_status()
    return r.json()["data"]["result"]


def legend(fmt: str | None, labels: dict[str, str], expr: str) -> str:
    if fmt:
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), fmt).strip() or expr[:40]
    shown = {k: v for k, v in labels.items() if k != "__name__"}
    return ", ".join(f"{k}={v}" for k, v in shown.items()) or expr[:40]


UNITS = {"reqps": "req/s", "s": "s", "percentunit": "", "short": "", "currencyUSD": "$", "ops": "/s"}


def draw(panels: list[dict[str, Any]], series: dict[int, list[tuple[str, list[float], list[float]]]],
         start: float, out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.gridspec import GridSpec

    rows = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig = plt.figure(figsize=(24, rows * 0.62), facecolor=BG)
    fig.suptitle(title, color=TEXT, fontsize=18, x=0.01, ha="left", y=0.995)
    grid = GridSpec(rows, 24, figure=fig, hspace=0.0, wspace=0.0, left=0.01, right=0.995, top=0.975, bottom=0.01)
    for p in panels:
        g = p["gridPos"]
        # room inside each grid cell for the title, tick labels and legend, as Grafana's panel chrome takes
        ax = fig.add_subplot(grid[g["y"] + 1:g["y"] + g["h"] - 2, g["x"] + 1:g["x"] + g["w"]])
        ax.set_facecolor(PANEL)
        for side in ax.spines.values():
            side.set_color(GRID)
        ax.tick_params(colors=TEXT, labelsize=8)
        ax.grid(color=GRID, linewidth=0.6)
        ax.set_title(p["title"], color=TEXT, fontsize=11, loc="left")
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "short")
        lines = series.get(p["id"], [])
        for i, (name, xs, ys) in enumerate(lines):
            color = COLORS[i % len(COLORS)]
            ax.plot(xs, ys, color=color, linewidth=1.2, label=name)
            ax.fill_between(xs, ys, color=color, alpha=0.08)
        if not lines:
            ax.text(0.5, 0.5, "No data", color=TEXT, ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("seconds into the run", color=TEXT, fontsize=8)
        if UNITS.get(unit):
            ax.set_ylabel(UNITS[unit], color=TEXT, fontsize=8)
        if lines:
            ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=4, fontsize=7, frameon=False,
                      labelcolor=TEXT)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80, facecolor=BG)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=90.0)
    ap.add_argument("--out", type=Path, default=HERE.parent / "docs" / "grafana" / "dashboard-rendering.png")
    args = ap.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        raise SystemExit("needs Prometheus: apt-get install prometheus")
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-dashboard-"))
    stub_port, dead_port, gw_port, prom_port = free_port(), free_port(), free_port(), free_port()
    procs: list[subprocess.Popen[bytes]] = []
    env = {**os.environ, "MODELYARD_ADMIN_KEY": KEY, "MODELYARD_LOG_LEVEL": "warning",
           "PYTHONPATH": str(HERE.parent / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        procs.append(subprocess.Popen([sys.executable, str(HERE / "stub_upstream.py"), str(stub_port)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        (tmp / "modelyard.yaml").write_text(config(stub_port, dead_port))
        log = (tmp / "serve.log").open("wb")
        procs.append(subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--port", str(gw_port),
                                       "--config", str(tmp / "modelyard.yaml"), "--data-dir", str(tmp / "data")],
                                      env=env, stdout=log, stderr=log))
        (tmp / "prometheus.yml").write_text(json.dumps({
            "global": {"scrape_interval": f"{SCRAPE}s", "evaluation_interval": f"{SCRAPE}s"},
            "scrape_configs": [{"job_name": "modelyard", "metrics_path": "/metrics",
                                "static_configs": [{"targets": [f"127.0.0.1:{gw_port}"]}]}]}))
        procs.append(subprocess.Popen([prometheus, f"--config.file={tmp / 'prometheus.yml'}",
                                       f"--storage.tsdb.path={tmp / 'tsdb'}",
                                       f"--web.listen-address=127.0.0.1:{prom_port}"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        for name, port, proc in (("stub", stub_port, procs[0]), ("gateway", gw_port, procs[1]),
                                 ("prometheus", prom_port, procs[2])):
            try:
                wait_port(port, 60)
            except SystemExit:
                detail = (tmp / "serve.log").read_text()[-3000:] if name == "gateway" else ""
                raise SystemExit(f"the {name} did not start (exit {proc.poll()}) {detail}")
        base, prom = f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{prom_port}"
        tight = org_key(base)
        time.sleep(3 * SCRAPE)
        start = time.time()
        print(f"traffic for {args.seconds:.0f} s ...", flush=True)
        counts = asyncio.run(traffic(base, tight, args.seconds))
        print("responses by status:", dict(sorted(counts.items())))
        time.sleep(4 * SCRAPE)  # the last scrapes
        end = time.time()
        board = json.loads(DASHBOARD.read_text())
        panels = [p for p in board["panels"] if p.get("type") == "timeseries"]
        series: dict[int, list[tuple[str, list[float], list[float]]]] = {}
        print(f"{'panel':<58} {'series':>6}")
        for p in panels:
            got = series.setdefault(p["id"], [])
            for t in p.get("targets", []):
                for r in query_range(prom, t["expr"], start, end, 2 * SCRAPE):
                    pts = [(float(x) - start, float(y)) for x, y in r["values"] if y not in ("NaN", "+Inf", "-Inf")]
                    if pts:
                        got.append((legend(t.get("legendFormat"), r["metric"], t["expr"]),
                                    [x for x, _ in pts], [y for _, y in pts]))
            print(f"{p['title'][:58]:<58} {len(got):>6}")
        draw(panels, series, start, args.out, f"{board['title']} — {args.seconds:.0f} s of mixed traffic, "
             f"drawn from Prometheus {subprocess.run([prometheus, '--version'], capture_output=True, text=True).stdout.split()[2]}")
        print("wrote", args.out)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
