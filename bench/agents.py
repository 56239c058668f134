"""Agent map throughput: a map of 1,000 echo items at max_concurrency 1, 16 and 64, against the same items as plain jobs.

What is measured, per database and concurrency c, each on a fresh database, in one process that is what `modelyard
serve` or `modelyard runner` is to agents (a job runner with c slots, the agent engine, the call path's admission):

* agent: wall time from `AgentService.run` (the run and its first c item jobs written) to the run row reading
  `succeeded`; items/s is items / that time.
* plain jobs: the same items submitted as c-concurrent plain jobs (`JobService.submit`: the same admission on the call
  path, then the queue) and drained by the same runner; wall time from the first submit to the last completion.
* overhead/item: (agent wall - plain wall) / items. The echo does no work, and both sides pay the same admission,
  claim, lease and completion per item, so this is what the agent layer adds per map item at that concurrency: the
  engine's advance (read the run's nodes and jobs, admit the next items, commit them with the node's progress and
  its event) and the hand-offs (job final -> poke -> engine pass -> commit -> runner wake -> claim). It is a wall-clock
  figure: at c = 1 it is the latency the engine puts between items, at c = 64 its share of the throughput. It can
  be negative: plain jobs are submitted one at a time (a transaction each), while an advance writes all the items
  it starts in one, so at high concurrency the agent's admission outpaces the plain submit loop.
* advances, engine ms/item, job rows read/item: how many times the engine advanced the run, the time spent inside
  those advances per item, and the job rows its advances read per item (items still running; ended ones are
  counted in SQL). The first and last tenth of advances' mean time show whether an advance grows with the map.

Run: `python bench/agents.py [--items 1000] [--concurrency 1,16,64] [--postgres postgresql://postgres@127.0.0.1/test]`.
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

from modelyard.agents.repo import RUN_FINAL
from modelyard.agents.service import AgentService
from modelyard.catalog import build_catalog
from modelyard.config import Settings
from modelyard.jobs.service import JobService
from modelyard.jobs.standalone import runner_context
from modelyard.pipeline.auth import Principal
from modelyard.routing import Router
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo
from modelyard.types import Task


class Plane:
    """One process's job plane and agent engine on a database, as `modelyard runner` builds them."""

    def __init__(self, url: str, data_dir: Path, concurrency: int) -> None:
        self.settings = Settings(data_dir=data_dir, database_url=url, builtin_models=False,
                                 job_concurrency=concurrency, job_poll_seconds=0.05, job_heartbeat_seconds=5,
                                 job_lease_seconds=30,
                                 models=[{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]}])
        self.tasks: list[asyncio.Task] = []

    async def __aenter__(self) -> Plane:
        s = self.settings
        self.store = Store(s.resolved_database_url)
        await self.store.migrate()
        catalog = build_catalog(s)
        self.router = Router(catalog)
        self.ctx = ctx = runner_context(s, self.store, catalog, self.router)
        ctx.jobs = self.jobs = JobService(ctx)
        self.jobs.runner = self.jobs.make_runner("bench")
        ctx.agents = self.agents = AgentService(ctx)
        await ctx.gate.start(self.router, catalog)
        org = await OrgRepo(self.store).create("bench-" + secrets.token_hex(4), plan="enterprise")
        self.principal = Principal(token_id="", org_id=org.id, org_name=org.name, plan=org.plan,
                                   scopes=frozenset(), expires_at=None)
        return self

    def start(self) -> None:
        self.tasks = [asyncio.create_task(self.jobs.runner.run_forever()),  # type: ignore[union-attr]
                      asyncio.create_task(self.agents.engine.run_forever())]

    async def __aexit__(self, *exc: Any) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.ctx.gate.aclose()
        await self.router.aclose()
        await self.store.aclose()


async def plain(url: str, data_dir: Path, items: int, concurrency: int) -> float:
    """Seconds from the first submit to the last completion of `items` plain echo jobs at `concurrency`."""
    async with Plane(url, data_dir, concurrency) as p:
        model = p.router.resolve("echo", Task.CHAT)
        p.start()
        runner = p.jobs.runner
        assert runner is not None
        t0 = time.perf_counter()
        for i in range(items):
            await p.jobs.submit(p.principal, model, Task.CHAT, {"messages": [{"role": "user", "content": f"item {i}"}]},
                                face="bench", base_url="http://bench/")
        while runner.completed < items:
            await asyncio.sleep(0.01)
        return time.perf_counter() - t0


async def agent(url: str, data_dir: Path, items: int, concurrency: int) -> dict[str, Any]:
    """One run of a map over `items` echo items at `concurrency`: its wall time and what the engine did."""
    async with Plane(url, data_dir, concurrency) as p:
        dag = {"nodes": {"each": {"type": "map", "items": "${input.items}", "max_concurrency": concurrency,
                                  "node": {"model_id": "echo", "task": "chat",
                                           "payload": {"messages": [{"role": "user", "content": "${item}"}]}}}}}
        made = await p.agents.create(p.principal, {"name": "bench-map", "dag": dag})
        engine, repo = p.agents.engine, p.agents.repo
        spent: list[float] = []
        rows_read = [0]
        advance, run_jobs = engine.advance, repo.run_jobs

        async def timed_advance(run: Any) -> None:  # what each advance costs, as it happens
            t = time.perf_counter()
            try:
                await advance(run)
            finally:
                spent.append(time.perf_counter() - t)

        async def counted_run_jobs(*a: Any, **kw: Any) -> Any:
            out = await run_jobs(*a, **kw)
            rows_read[0] += len(out)
            return out

        engine.advance, repo.run_jobs = timed_advance, counted_run_jobs  # type: ignore[method-assign]
        p.start()
        t0 = time.perf_counter()
        run, _ = await p.agents.run(p.principal, made.id, {"input_params": {"items": [f"item {i}" for i in range(items)]}},
                                    base_url="http://bench/", idempotency_key=None, client=None)
        watch = engine.watch(run.id)  # set at each commit of this run here; the row says when it is over
        while True:
            watch.clear()
            fresh = await repo.get_run(run.id)
            if fresh is not None and fresh.status in RUN_FINAL:
                break
            try:
                await asyncio.wait_for(watch.wait(), 0.5)
            except asyncio.TimeoutError:
                pass
        wall = time.perf_counter() - t0
        assert fresh.status == "succeeded", fresh.error
        tenth = max(len(spent) // 10, 1)
        return {"wall": wall, "advances": len(spent), "engine_s": sum(spent), "rows": rows_read[0],
                "first": statistics.mean(spent[:tenth]), "last": statistics.mean(spent[-tenth:])}


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


async def on_fresh_db(pg: str | None, fn: Any, *args: Any) -> Any:
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-agents-") as tmp:
        url, name = await fresh_pg(pg) if pg else (f"sqlite:///{tmp}/bench.db", "")
        try:
            return await fn(url, Path(tmp), *args)
        finally:
            if pg:
                await drop_pg(pg, name)


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=1000)
    p.add_argument("--concurrency", default="1,16,64", help="comma-separated max_concurrency values to try")
    p.add_argument("--postgres", default=None, help="a PostgreSQL URL to also bench (a scratch database is made)")
    args = p.parse_args()
    n = args.items
    targets = [("sqlite", None)] + ([("postgres", args.postgres)] if args.postgres else [])
    print("| db | max_concurrency | items | agent wall s | items/s | plain jobs wall s | plain jobs/s "
          "| overhead/item ms | advances | engine ms/item | job rows read/item | advance ms first→last tenth |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for label, pg in targets:
        for c in (int(x) for x in args.concurrency.split(",")):
            base = await on_fresh_db(pg, plain, n, c)
            a = await on_fresh_db(pg, agent, n, c)
            print(f"| {label} | {c} | {n} | {a['wall']:.2f} | {n / a['wall']:.0f} | {base:.2f} | {n / base:.0f} "
                  f"| {(a['wall'] - base) / n * 1000:.2f} | {a['advances']} | {a['engine_s'] / n * 1000:.2f} "
                  f"| {a['rows'] / n:.0f} | {a['first'] * 1000:.1f}→{a['last'] * 1000:.1f} |", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
