"""How fast the write-behind writes usage rows: a queued backlog drained into the database, a spool replayed, and a
steady producer at a fixed rate (the largest backlog it leaves), on SQLite and on PostgreSQL.

Run: `python bench/writer.py [--rows 50000] [--rate 3000] [--seconds 5] [--postgres postgresql://127.0.0.1/test]`.
The PostgreSQL run uses a fresh database it creates and drops.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from modelyard.pipeline.units import Units
from modelyard.pipeline.usage import UsageRecorder
from modelyard.store.db import Store
from modelyard.store.writebehind import WriteBehind


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

        # 3. a steady producer at `rate` rows/s for `seconds`, the writer on its own 1 s tick, then shutdown
        writer = WriteBehind(spool / "c", tick_seconds=1.0)
        usage = UsageRecorder(store, writer, interval=1.0)
        await writer.start()
        before = await _count(store)
        n, start = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - start) < seconds:
            due = int(elapsed * rate)
            while n < due:
                _record(usage, n)
                n += 1
            writer.stats()
            await asyncio.sleep(0.01)
        await writer.aclose()
        out["steady_rows"] = n
        out["steady_written"] = await _count(store) - before
        out["largest_backlog"] = writer.largest_backlog
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
    p.add_argument("--rate", type=int, default=3_000, help="steady producer, rows/s")
    p.add_argument("--seconds", type=float, default=5.0)
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
    print(f"\nwrite-behind, usage rows ({args.rows} queued; steady {args.rate}/s for {args.seconds:.0f} s)")
    print(f"{'database':<11} {'drain rows/s':>13} {'spool rows/s':>13} {'replay rows/s':>14} "
          f"{'steady written':>15} {'largest backlog':>16}")
    for name, r in results:
        print(f"{name:<11} {r['drain']:>13,.0f} {r['spool']:>13,.0f} {r['replay']:>14,.0f} "
              f"{r['steady_written']:>7}/{r['steady_rows']:<7} {r['largest_backlog']:>16,}")


if __name__ == "__main__":
    asyncio.run(main())
