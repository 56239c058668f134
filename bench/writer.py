"""How fast the write-behind writes: a queued backlog of usage rows drained into the database, a spool replayed, and
calls at a steady rate — each a usage record carrying its request-log row's fields, as the gate queues them,
written as a usage row (with its minute/hour/day rollups) that holds its log fields (migration 0016: SQLite's
request_log view reads them, PostgreSQL's trigger moves them into the log table) — on SQLite and on PostgreSQL (issue 18's "usage and logs at rate": 2,000 calls/s for 5 minutes).

The steady table: calls made, rows written of each kind and the calls the day rollups counted (all three must equal
the calls: nothing dropped), the deepest the in-memory queue got (bounded: the writer keeps up), the median and
largest time one batch took to write, by kind (the log's own kind only replays older versions' spools: 0 here), and
the process's CPU per call spent queueing and writing.

Run: `python bench/writer.py [--rows 50000] [--rate 2000] [--seconds 300] [--postgres postgresql://127.0.0.1/test]`.
The PostgreSQL run uses a fresh database it creates and drops.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from modelyard.pipeline.requestlog import RequestLog
from modelyard.pipeline.units import Units
from modelyard.pipeline.usage import UsageRecorder
from modelyard.store.db import Store
from modelyard.store.writebehind import WriteBehind

# a call's ASGI scope, as the request log reads it (path, request id, headers)
SCOPE = {"path": "/v1/chat/completions", "state": {"request_id": "req_bench"},
         "headers": [(b"host", b"gateway"), (b"content-type", b"application/json")]}


class _Seen:
    """The writer's observer: how long each batch took to write, by kind."""

    def __init__(self) -> None:
        self.batches: dict[str, list[float]] = {}

    def wrote(self, kind: str, rows: int, seconds: float) -> None:
        self.batches.setdefault(kind, []).append(seconds)

    def rejected(self, kind: str, rows: int) -> None:
        pass

    def writer_stats(self, stats: dict[str, Any]) -> None:
        pass

    def latency(self) -> dict[str, tuple[float, float, int]]:
        """Per kind: (median, largest) seconds of a batch write, and how many batches."""
        return {k: (statistics.median(v), max(v), len(v)) for k, v in self.batches.items()}


def _call(usage: UsageRecorder, requests: RequestLog, i: int) -> None:
    """What the gate queues when a call ends: its usage record, carrying its request-log row's own fields (written
    with the usage row: migration 0016)."""
    units = Units(input_tokens=20, output_tokens=10)
    usage.record(org_id="org_bench", token_id=f"tok_{i % 50}", model_id="echo", task="chat", units=units,
                 price_micros=i % 7, status="ok", latency_ms=3, region=None, flagged=False,
                 log=requests.fields("echo", SCOPE, 200, None, None))


def _record(usage: UsageRecorder, i: int) -> None:
    usage.record(org_id="org_bench", token_id=f"tok_{i % 50}", model_id="echo", task="chat",
                 units=Units(input_tokens=20, output_tokens=10), price_micros=i % 7, status="ok", latency_ms=3,
                 region=None, flagged=False)


def _backlog(store: Store, spool: Path, rows: int) -> WriteBehind:
    """A write-behind holding `rows` usage records in memory, nothing written yet."""
    writer = WriteBehind(spool, max_queue=10**9)
    usage = UsageRecorder(store, writer)
    for i in range(rows):
        _record(usage, i)
    return writer


async def _counts(store: Store) -> tuple[int, int, int]:
    """Usage rows, request-log rows, and the calls the day rollups have counted."""
    from sqlalchemy import func, select

    from modelyard.store.log_tables import request_log, usage_rollups
    from modelyard.store.tables import usage_records
    async with store.engine.connect() as conn:
        used = (await conn.execute(select(func.count()).select_from(usage_records))).scalar_one()
        logged = (await conn.execute(select(func.count()).select_from(request_log))).scalar_one()
        rolled = (await conn.execute(select(func.coalesce(func.sum(usage_rollups.c.requests), 0))
                                     .where(usage_rollups.c.grain == "day"))).scalar_one()
    return int(used), int(logged), int(rolled)


async def _count(store: Store) -> int:
    from sqlalchemy import func, select

    from modelyard.store.tables import usage_records
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar_one())


async def _one(url: str, spool: Path, rows: int, rate: int, seconds: float) -> dict[str, Any]:
    store = Store(url)
    await store.migrate()
    out: dict[str, Any] = {}
    try:
        # 1. a backlog: `rows` queued at once, drained by one flush (batched transactions)
        writer = _backlog(store, spool / "a", rows)
        start = time.perf_counter()
        await writer.flush()
        out["drain"] = rows / (time.perf_counter() - start)

        # 2. the same backlog through the spool: fsynced to disk, then replayed into the database
        writer = _backlog(store, spool / "b", rows)
        start = time.perf_counter()
        await writer._spool_all()
        spooled = time.perf_counter() - start
        start = time.perf_counter()
        await writer.flush()
        out["spool"] = rows / spooled
        out["replay"] = rows / (time.perf_counter() - start)

        # 3. calls at a steady `rate` for `seconds`, as the gate queues them: a usage row (and its rollups) and a
        #    request-log row each, the writer on its own 1 s tick; then shutdown drains what is left
        writer = WriteBehind(spool / "c", tick_seconds=1.0)
        writer.observer = seen = _Seen()
        usage = UsageRecorder(store, writer, interval=1.0)
        requests = RequestLog(store, writer, interval=1.0)
        await writer.start()
        before = await _counts(store)
        n, deepest, start = 0, 0, time.perf_counter()
        cpu = time.process_time()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate)
            while n < due:
                _call(usage, requests, n)
                n += 1
            deepest = max(deepest, writer.depth())
            await asyncio.sleep(0.01)
        steady_cpu = time.process_time() - cpu
        await writer.aclose()
        after = await _counts(store)
        out["steady_calls"] = n
        out["steady_usage"], out["steady_log"], out["steady_rollup"] = (a - b for a, b in zip(after, before))
        out["deepest"] = deepest
        out["largest_backlog"] = writer.largest_backlog
        out["cpu_us"] = steady_cpu / max(n, 1) * 1e6
        out["flush"] = seen.latency()
        out["rejected"] = writer.rejected
    finally:
        await store.aclose()
    return out


async def _pg_database(base: str) -> tuple[str, Any]:
    import asyncpg

    name = "modelyard_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()

    async def drop() -> None:
        c = await asyncpg.connect(base)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()
    head, _, _ = base.rpartition("/")
    return f"postgresql+asyncpg://{head.split('://', 1)[1]}/{name}", drop


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=50_000)
    p.add_argument("--rate", type=int, default=2_000, help="steady calls per second")
    p.add_argument("--seconds", type=float, default=300.0)
    p.add_argument("--postgres", default=None, help="e.g. postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    results: list[tuple[str, dict[str, Any]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("sqlite", await _one(f"sqlite+aiosqlite:///{tmp}/bench.db", Path(tmp) / "spool-sqlite",
                                             args.rows, args.rate, args.seconds)))
        if args.postgres:
            url, drop = await _pg_database(args.postgres)
            try:
                results.append(("postgresql", await _one(url, Path(tmp) / "spool-pg", args.rows, args.rate,
                                                         args.seconds)))
            finally:
                await drop()
    print(f"\nwrite-behind, usage rows ({args.rows} queued)")
    print(f"{'database':<11} {'drain rows/s':>13} {'spool rows/s':>13} {'replay rows/s':>14}")
    for name, r in results:
        print(f"{name:<11} {r['drain']:>13,.0f} {r['spool']:>13,.0f} {r['replay']:>14,.0f}")
    print(f"\ncalls at {args.rate}/s for {args.seconds:.0f} s: a usage row (+ rollups) and a request-log row each")
    print(f"{'database':<11} {'calls':>8} {'usage rows':>11} {'log rows':>9} {'rolled up':>10} {'deepest queue':>14} "
          f"{'usage flush p50/max s':>22} {'log flush p50/max s':>20} {'cpu us/call':>12}")
    for name, r in results:
        fu, fl = r["flush"].get("usage", (0, 0, 0)), r["flush"].get("request_log", (0, 0, 0))
        print(f"{name:<11} {r['steady_calls']:>8,} {r['steady_usage']:>11,} {r['steady_log']:>9,} "
              f"{r['steady_rollup']:>10,} {r['deepest']:>14,} {fu[0]:>10.3f}/{fu[1]:<11.3f} {fl[0]:>9.3f}/{fl[1]:<10.3f} "
              f"{r['cpu_us']:>12.1f}")


if __name__ == "__main__":
    asyncio.run(main())
