"""What metrics and the request log cost a call: CPU time per chat call with them on and off, measured in turns.

Two apps run in this one process — one with `metrics_enabled: true`, one with it off (with `--request-log`, the
first also writes the request log and the second does not) — on the echo model (no upstream: the whole call is the
gateway's own work, so the share they take is the largest it can be). Calls go in through ASGI (httpx's
ASGITransport, the fast lane included), a round of N calls on one app, then on the other, alternating which goes
first; each round ends by flushing its app's write-behind, so the rows it queued (usage, request log) are written
inside its own CPU window. The CPU time of each round (`time.process_time`, all threads) per call is kept, and the
medians compared. Taking turns in one process cancels what a busy machine does to both alike; on a shared 2-core VM
single rounds still swing, so read the medians. Run: `python bench/metrics_overhead.py [--request-log] [--rounds
12] [--calls 400] [--concurrency 16]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx

KEY = "myd_bench-admin-key-0123456789abcdef"
MODELS = [{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]}]


def build(folder: Path, metrics: bool, request_log: bool = True) -> Any:
    from modelyard.config import Settings
    from modelyard.server.app import create_app

    settings = Settings(data_dir=folder, admin_key=KEY, builtin_models=False, models=MODELS,
                        metrics_enabled=metrics, request_log_enabled=request_log, log_level="warning")
    return create_app(settings)


async def flush(lane: Any) -> None:
    """Write what the round queued (usage rows, request-log rows) inside the round's own CPU window: the writer's
    1 s tick would otherwise land the cost in whichever round is running then, possibly the other app's."""
    await lane.app.state.ctx.gate.flush()


async def calls(client: httpx.AsyncClient, n: int, concurrency: int, stream: bool) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "one two three four five six seven eight"}],
            "stream": stream}
    left = n

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            r = await client.post("/v1/chat/completions", json=body)
            if r.status_code != 200:
                raise SystemExit(f"HTTP {r.status_code}: {r.text[:300]}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main_async(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="modelyard-metrics-bench-"))
    # --request-log: "on" has metrics and the request log, "off" neither (issue 16's "with metrics and request logging
    # on vs off"); without it only metrics differ and both write the request log
    apps = {"on": build(tmp / "on", True, True),
            "off": build(tmp / "off", False, not args.request_log)}
    async with AsyncExitStack() as stack:
        clients = {}
        for name, lane in apps.items():
            await stack.enter_async_context(lane.app.router.lifespan_context(lane.app))
            clients[name] = await stack.enter_async_context(httpx.AsyncClient(
                transport=httpx.ASGITransport(app=lane), base_url="http://bench",
                headers={"Authorization": f"Bearer {KEY}"}, timeout=60))
        what = "metrics+log" if args.request_log else "metrics"
        print(f"{'mode':<7} {what:<12} {'cpu us/call (median)':>21} {'min':>7} {'max':>7}")
        rows: dict[str, dict[str, float]] = {}
        for stream in (False, True):
            mode = "stream" if stream else "json"
            for name, c in clients.items():  # warm-up: first-use imports, caches, the label children
                await calls(c, args.calls // 2, args.concurrency, stream)
                await flush(apps[name])
            per_call: dict[str, list[float]] = {"on": [], "off": []}
            for r in range(args.rounds):
                for name in (("on", "off") if r % 2 == 0 else ("off", "on")):
                    await flush(apps[name])
                    started = time.process_time()
                    await calls(clients[name], args.calls, args.concurrency, stream)
                    await flush(apps[name])
                    per_call[name].append((time.process_time() - started) / args.calls * 1e6)
            for name in ("on", "off"):
                xs = per_call[name]
                rows.setdefault(mode, {})[name] = statistics.median(xs)
                print(f"{mode:<7} {name:<12} {statistics.median(xs):>21.0f} {min(xs):>7.0f} {max(xs):>7.0f}", flush=True)
        print()
        print(f"{'mode':<7} {'on us':>7} {'off us':>7} {'added us':>10} {'share':>7}")
        for mode, r in rows.items():
            extra = r["on"] - r["off"]
            print(f"{mode:<7} {r['on']:>7.0f} {r['off']:>7.0f} {extra:>10.1f} {extra / r['off'] * 100:>6.1f}%")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=12, help="rounds per app and mode (taken in turns)")
    ap.add_argument("--calls", type=int, default=400, help="calls per round")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--request-log", action="store_true",
                    help="compare metrics and the request log together, on vs off (default: metrics alone)")
    return asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    sys.exit(main())
