"""Job queue throughput: jobs submitted, then claimed and completed per second, on SQLite and PostgreSQL.

The task is the no-op `echo` runtime, so the numbers are the queue's own cost (claim, lease, complete, per job).
Run: `python bench/jobs.py --jobs 2000 --runners 1,3 --concurrency 8 [--postgres postgresql://postgres@127.0.0.1/test]`.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
from pathlib import Path

from modelyard.catalog import build_catalog
from modelyard.config import Settings
from modelyard.jobs.queue import JobQueue
from modelyard.jobs.runner import JobRunner
from modelyard.jobs.standalone import runner_context
from modelyard.routing import Router
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo


async def one_run(url: str, data_dir: Path, jobs: int, runners: int, concurrency: int) -> tuple[float, float]:
    settings = Settings(data_dir=data_dir, database_url=url, builtin_models=False, job_concurrency=concurrency,
                        job_poll_seconds=0.05, job_heartbeat_seconds=5, job_lease_seconds=30,
                        models=[{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]}])
    store = Store(settings.resolved_database_url)
    await store.migrate()
    org = await OrgRepo(store).create("bench-" + secrets.token_hex(4))
    queue = JobQueue(store)
    payload = {"messages": [{"role": "user", "content": "bench"}]}
    t0 = time.perf_counter()
    for _ in range(jobs):
        await queue.submit(org_id=org.id, token_id=None, model="echo", task="chat", payload=payload, meta={})
    submit_s = time.perf_counter() - t0
    catalog = build_catalog(settings)
    router = Router(catalog)
    ctx = runner_context(settings, store, catalog, router)
    pool = [JobRunner(ctx, queue, name=f"bench-{i}") for i in range(runners)]
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(r.run_forever()) for r in pool]
    while sum(r.completed for r in pool) < jobs:
        await asyncio.sleep(0.05)
    run_s = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await router.aclose()
    await store.aclose()
    return jobs / submit_s, jobs / run_s


async def fresh_pg(base: str) -> tuple[str, str]:
    import asyncpg

    name = "modelyard_bench_" + secrets.token_hex(4)
    conn = await asyncpg.connect(base)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    return base.rpartition("/")[0] + "/" + name, name


async def drop_pg(base: str, name: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(base)
    await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await conn.close()


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--jobs", type=int, default=2000)
    p.add_argument("--runners", default="1,3", help="comma-separated runner counts to try")
    p.add_argument("--concurrency", type=int, default=8, help="jobs each runner works on at once")
    p.add_argument("--postgres", default=None, help="a PostgreSQL URL to also bench (a scratch database is made)")
    args = p.parse_args()
    targets = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
    print(f"{'database':10} {'runners':>7} {'submitted/s':>12} {'claimed+completed/s':>20}")
    for label, pg in targets:
        for n in (int(x) for x in args.runners.split(",")):
            with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
                if pg:
                    url, name = await fresh_pg(pg)
                else:
                    url, name = f"sqlite:///{tmp}/bench.db", ""
                try:
                    sub, done = await one_run(url, Path(tmp), args.jobs, n, args.concurrency)
                finally:
                    if pg:
                        await drop_pg(pg, name)
            print(f"{label:10} {n:>7} {sub:>12.0f} {done:>20.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
