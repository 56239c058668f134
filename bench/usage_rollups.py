"""A month's usage for one org with millions of usage rows: read from the raw rows vs from the rollups (PostgreSQL).

Seeds N usage rows in a scratch database with one `INSERT … SELECT generate_series` (spread over 90 days, 20 orgs,
10 keys each, 12 models of which 2 embed, ~6% failed), builds their day rollups the way migration 0011 backfills them
(--grains day,hour,minute for the rest: with this spread those hold about one row per usage row), then times what `GET /api/organizations/{org}/usage` runs: the by-day/model/task
rows plus the totals, through `UsageRepo.totals_raw` (the old query) and `UsageRepo.totals` (the rollups), and what
the console's usage explorer asks `GET …/usage/series` for (`UsageRepo.series`: by day and model; failures by day
and key).

Run: `python bench/usage_rollups.py --rows 1000000,10000000 [--postgres postgresql://postgres@127.0.0.1/test]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import time

from sqlalchemy import text

from modelyard.store.billing_repo import UsageRepo
from modelyard.store.db import Store

DAYS, ORGS, KEYS, MODELS = 90, 20, 10, 12
SEED = """
INSERT INTO usage_records (id, org_id, token_id, model_id, task, units, input_tokens, output_tokens, price_micros,
                           status, latency_ms, region, flagged, day, created_at)
SELECT 'use_' || g, 'org_' || (g % {orgs}), 'tok_' || (g % {orgs}) || '_' || ((g / {orgs}) % {keys}),
       'model_' || ((g / 7) % {models}), CASE WHEN (g / 7) % {models} < 2 THEN 'embedding' ELSE 'chat' END,
       '{{}}'::json,
       g % 1000, CASE WHEN g % 17 = 0 THEN 0 ELSE g % 300 END, CASE WHEN g % 17 = 0 THEN 0 ELSE g % 5000 END,
       CASE WHEN g % 17 = 0 THEN 'failed' ELSE 'ok' END, g % 900, NULL, g % 97 = 0,
       to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD'), at
FROM (SELECT g, timestamptz '2026-01-01 00:00+00' + g * ({days} * 86400.0 / {n}) * interval '1 second' AS at
      FROM generate_series(1, {n}) AS g) AS s
"""
ROLLUP = """
INSERT INTO usage_rollups (org_id, grain, bucket, token_id, model_id, task, status, requests, flagged, input_tokens,
                           output_tokens, price_micros, latency_ms)
SELECT org_id, '{grain}', {bucket}, COALESCE(token_id, ''), model_id, task, status, count(*),
       sum(CASE WHEN flagged THEN 1 ELSE 0 END), sum(input_tokens), sum(output_tokens), sum(price_micros),
       sum(latency_ms)
FROM usage_records GROUP BY 1, 3, 4, 5, 6, 7
"""
BUCKETS = {"day": "day", "hour": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24')",
           "minute": "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI')"}


async def scratch(base: str) -> tuple[str, str]:
    import asyncpg

    name = "modelyard_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return base.rpartition("/")[0] + "/" + name, name


async def drop(base: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def timed(fn, repeat: int) -> tuple[float, float]:
    await fn()  # warm: plans cached, pages in memory (what a busy console sees)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        await fn()
        runs.append((time.perf_counter() - t0) * 1000)
    return statistics.median(runs), min(runs)


async def one(base: str, n: int, grains: list[str], repeat: int, keep: bool) -> dict[str, object]:
    url, name = await scratch(base)
    store = Store(url.replace("postgresql://", "postgresql+asyncpg://", 1))
    try:
        await store.migrate()
        t0 = time.perf_counter()
        async with store.engine.begin() as conn:
            await conn.execute(text(SEED.format(n=n, orgs=ORGS, keys=KEYS, models=MODELS, days=DAYS)))
        seed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        async with store.engine.begin() as conn:
            for grain in grains:
                await conn.execute(text(ROLLUP.format(grain=grain, bucket=BUCKETS[grain])))
        rollup_s = time.perf_counter() - t0
        async with store.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("VACUUM ANALYZE usage_records"))
            await conn.execute(text("VACUUM ANALYZE usage_rollups"))
            counts = {g: c for g, c in (await conn.execute(text(
                "SELECT grain, count(*) FROM usage_rollups GROUP BY grain"))).all()}
            month_rows = (await conn.execute(text(
                "SELECT count(*) FROM usage_records WHERE org_id = 'org_3' AND day BETWEEN '2026-02-01' "
                "AND '2026-02-28'"))).scalar_one()
        repo = UsageRepo(store)

        def api(read):
            async def run() -> None:  # what the usage route asks for
                await read("org_3", "2026-02-01", "2026-02-28", ("day", "model_id", "task"))
                await read("org_3", "2026-02-01", "2026-02-28", ())
            return run
        raw = await timed(api(repo.totals_raw), repeat)
        rolled = await timed(api(repo.totals), repeat)

        async def explorer() -> None:  # what the console's overview and usage explorer ask /usage/series for
            await repo.series("org_3", "2026-02-01", "2026-02-28", ("day", "model_id"), {})
            await repo.series("org_3", "2026-02-01", "2026-02-28", ("day", "token_id"), {"status": "failed"})
        series = await timed(explorer, repeat)
        a = await repo.totals_raw("org_3", "2026-02-01", "2026-02-28", ("day", "model_id", "task"))
        b = await repo.totals("org_3", "2026-02-01", "2026-02-28", ("day", "model_id", "task"))
        return {"rows": n, "seed_s": seed_s, "rollup_s": rollup_s, "rollups": counts, "month_rows": month_rows,
                "raw": raw, "rolled": rolled, "series": series, "equal": a == b}
    finally:
        await store.aclose()
        if not keep:
            await drop(base, name)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/test")
    p.add_argument("--rows", default="1000000", help="comma-separated usage row counts to seed")
    p.add_argument("--grains", default="day", help="rollup grains to build (the read uses day)")
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--keep", action="store_true", help="leave the scratch database behind")
    args = p.parse_args()
    results = [asyncio.run(one(args.postgres, int(n), args.grains.split(","), args.repeat, args.keep))
               for n in args.rows.split(",")]
    print(f"\n{'usage rows':>11} | {'seed s':>7} | {'rollup s':>8} | {'day/hour rollup rows':>20} | "
          f"{'org-month rows':>14} | {'raw p50 ms':>10} | {'raw min':>7} | {'rollup p50 ms':>13} | "
          f"{'rollup min':>10} | {'series p50 ms':>13} | equal")
    for r in results:
        c = r["rollups"]
        print(f"{r['rows']:>11,} | {r['seed_s']:>7.1f} | {r['rollup_s']:>8.1f} | "
              f"{sum(c.values()):>20,} | {r['month_rows']:>14,} | {r['raw'][0]:>10.1f} | "
              f"{r['raw'][1]:>7.1f} | {r['rolled'][0]:>13.1f} | {r['rolled'][1]:>10.1f} | {r['series'][0]:>13.1f} | "
              f"{r['equal']}")


if __name__ == "__main__":
    main()
