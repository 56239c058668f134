"""Job queue throughput: jobs submitted, then claimed and completed per second, by 1, 2, 3 runner processes on
PostgreSQL and by one on a single SQLite file, min/median of several rounds.

Each runner is its own process, as `modelyard runner` is in production (its own event loop, engine, pool and LISTEN
connection). The task is the no-op `echo` runtime, so the numbers are the queue's own cost (claim, lease, complete)
plus the runner's per-job work (request validation, router, result). A run: a fresh database, `--jobs` jobs submitted
one per transaction, 16 at a time (`submitted/s`), then the runners started, made ready (imports, pool warm), and released at
once; `claimed+completed/s` is jobs over the time from the release to the last completion.

The configurations take turns within each round (pg x1, pg x2, pg x3, sqlite x1, then again), so a busy machine
weighs on all of them alike: compare the ratios of one table, not absolute numbers between tables.

Run: `python bench/jobs.py --postgres postgresql://postgres@127.0.0.1/test` (`--jobs 5000 --runners 1,2,3
--sqlite-runners 1 --repeats 3 --concurrency 8`; without `--postgres`, SQLite only).

Columns: `claims/job` statements that claimed (or tried to) per job done, `empty` the share of them that found
nothing (a runner woken for work someone else took), `completes/job` statements that completed jobs (one per job
before completions were batched), `cpu us/job` the runner processes' CPU per job, `pg us/job` the
CPU of the PostgreSQL backends serving them per job (read from /proc where the server runs on this machine; `-`
otherwise, and in live runs), `load` the 1-minute load average when the run began. CPU per job, unlike jobs/s,
hardly moves with what else the machine is doing.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import secrets
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PAYLOAD = {"messages": [{"role": "user", "content": "bench"}]}
SUBMITTERS = 16  # submissions at once, as from a gateway's concurrent requests


def bench_settings(url: str, data_dir: Path, concurrency: int, poll: float = 0.05) -> Any:
    from modelyard.config import Settings

    return Settings(data_dir=data_dir, database_url=url, builtin_models=False, job_concurrency=concurrency,
                    job_poll_seconds=poll, job_heartbeat_seconds=5, job_lease_seconds=30,
                    models=[{"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]}])


# ---------------------------------------------------------------- a runner process

def runner_process(url: str, data_dir: str, concurrency: int, poll: float, name: str, pipe: Any, done: Any) -> None:
    asyncio.run(_runner(url, Path(data_dir), concurrency, poll, name, pipe, done))


async def _runner(url: str, data_dir: Path, concurrency: int, poll: float, name: str, pipe: Any, done: Any) -> None:
    from modelyard.catalog import build_catalog
    from modelyard.jobs.queue import JobQueue
    from modelyard.jobs.runner import JobRunner
    from modelyard.jobs.standalone import runner_context
    from modelyard.routing import Router
    from modelyard.store.db import Store

    class CountingQueue(JobQueue):
        claims = empty = flushes = 0

        async def claim(self, *args: Any, **kw: Any) -> Any:
            got = await super().claim(*args, **kw)
            CountingQueue.claims += 1
            CountingQueue.empty += not got
            return got

        async def complete_many(self, *args: Any, **kw: Any) -> Any:  # absent before batched completions
            CountingQueue.flushes += 1
            return await super().complete_many(*args, **kw)  # type: ignore[misc]

        async def complete(self, *args: Any, **kw: Any) -> Any:  # one job alone (before: every job)
            CountingQueue.flushes += 1
            return await super().complete(*args, **kw)

    settings = bench_settings(url, data_dir, concurrency, poll)
    store = Store(settings.resolved_database_url)
    catalog = build_catalog(settings)
    router = Router(catalog)
    ctx = runner_context(settings, store, catalog, router)
    runner = JobRunner(ctx, CountingQueue(store), name=name)
    await store.ping()  # a warm pool: connecting is not the queue's cost
    loop = asyncio.get_running_loop()
    pipe.send("ready")
    assert await loop.run_in_executor(None, pipe.recv) == "go"
    cpu0 = time.process_time()
    task = asyncio.create_task(runner.run_forever())
    while not pipe.poll():
        done.value = runner.completed
        await asyncio.sleep(0.01)
    done.value = runner.completed
    cpu = time.process_time() - cpu0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pipe.send({"cpu": cpu, "claims": CountingQueue.claims, "empty": CountingQueue.empty,
               "flushes": CountingQueue.flushes})
    await router.aclose()
    await store.aclose()


# ---------------------------------------------------------------- one run

@dataclass
class Run:
    submitted: float  # jobs/s
    done: float  # jobs/s
    claims: float  # per job
    empty: float  # share of claims
    cpu_us: float  # runner CPU per job
    load: float
    wait_ms: tuple[float, float] | None = None  # live: p50, p99 from submit to claim
    completes: float = 0.0  # completion statements per job
    pg_us: float | None = None  # PostgreSQL's CPU per job (its backends for this database), where it runs here


async def submit_jobs(url: str, data_dir: Path, jobs: int, rate: float | None = None) -> float:
    """`jobs` jobs, one per transaction (as API submissions are), SUBMITTERS at a time: as fast as they go, or
    paced at `rate` a second."""
    from modelyard.jobs.queue import JobQueue
    from modelyard.store.db import Store
    from modelyard.store.repo import OrgRepo

    store = Store(bench_settings(url, data_dir, 1).resolved_database_url)
    try:
        await store.migrate()
        org = await OrgRepo(store).create("bench-" + secrets.token_hex(4))
        queue = JobQueue(store)
        clients = asyncio.Semaphore(SUBMITTERS)

        async def one(i: int) -> None:
            if rate:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.perf_counter()))
            async with clients:
                await queue.submit(org_id=org.id, token_id=None, model="echo", task="chat", payload=PAYLOAD, meta={})
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(jobs)))
        return jobs / (time.perf_counter() - t0)
    finally:
        await store.aclose()


async def claim_waits(url: str, data_dir: Path) -> tuple[float, float]:
    """p50 and p99 of the time from a job's submit to its claim, in ms (the same clock stamped both)."""
    from sqlalchemy import select

    from modelyard.store.db import Store
    from modelyard.store.tables import jobs as jobs_table

    store = Store(bench_settings(url, data_dir, 1).resolved_database_url)
    try:
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(jobs_table.c.started_at - jobs_table.c.created_at))).scalars().all()
    finally:
        await store.aclose()
    waits = sorted(w * 1000 for w in rows)
    return waits[len(waits) // 2], waits[min(len(waits) - 1, int(len(waits) * 0.99))]


async def backend_ticks(base: str, name: str) -> dict[int, int] | None:
    """CPU clock ticks so far of each PostgreSQL backend serving database `name`, read from /proc: None when the
    server is not on this machine."""
    import asyncpg

    conn = await asyncpg.connect(base)
    try:
        pids = [r[0] for r in await conn.fetch("SELECT pid FROM pg_stat_activity WHERE datname = $1 AND backend_type = 'client backend'", name)]
    finally:
        await conn.close()
    ticks = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks[pid] = int(fields[11]) + int(fields[12])  # utime + stime
    return ticks if ticks or not pids else None


def one_run(url: str, data_dir: Path, jobs: int, runners: int, concurrency: int, live: float | None,
            pg: tuple[str, str] | None) -> Run:
    """Drain (`live` None): the jobs first, then the runners. Live: the runners first, idle, then the jobs arrive
    at `live` a second while they run (each woken by a NOTIFY: their poll is the default 1 s)."""
    load = os.getloadavg()[0]
    submitted = 0.0 if live else asyncio.run(submit_jobs(url, data_dir, jobs))
    if live:
        asyncio.run(submit_jobs(url, data_dir, 0))  # the schema, before the runners start
    spawn = mp.get_context("spawn")
    procs = []
    for i in range(runners):
        ours, theirs = spawn.Pipe()
        done = spawn.Value("i", 0, lock=False)
        p = spawn.Process(target=runner_process, daemon=True,
                          args=(url, str(data_dir), concurrency, 1.0 if live else 0.05, f"bench-{i}", theirs, done))
        p.start()
        procs.append((p, ours, done))
    try:
        for _, pipe, _ in procs:
            if not pipe.poll(120) or pipe.recv() != "ready":
                raise SystemExit("a runner process did not start")
        before = asyncio.run(backend_ticks(*pg)) if pg and not live else None
        t0 = time.perf_counter()
        for _, pipe, _ in procs:
            pipe.send("go")
        if live:
            time.sleep(0.5)  # every runner has claimed nothing and is waiting for a NOTIFY
            submitted = asyncio.run(submit_jobs(url, data_dir, jobs, live))
        deadline = time.monotonic() + 600
        while sum(d.value for _, _, d in procs) < jobs:
            if time.monotonic() > deadline or any(not p.is_alive() for p, _, _ in procs):
                raise SystemExit("the runners stopped before finishing the jobs")
            time.sleep(0.005)
        run_s = time.perf_counter() - t0
        after = asyncio.run(backend_ticks(*pg)) if before is not None else None
        for _, pipe, _ in procs:
            pipe.send("stop")
        stats = [pipe.recv() for _, pipe, _ in procs]
    finally:
        for p, _, _ in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    claims = sum(s["claims"] for s in stats)
    return Run(submitted, jobs / run_s, claims / jobs, sum(s["empty"] for s in stats) / max(claims, 1),
               sum(s["cpu"] for s in stats) / jobs * 1e6, load, asyncio.run(claim_waits(url, data_dir)) if live else None,
               sum(s["flushes"] for s in stats) / jobs,
               None if after is None else sum(t - (before or {}).get(pid, 0) for pid, t in after.items())
               / os.sysconf("SC_CLK_TCK") / jobs * 1e6)


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


def run_config(db: str, pg: str | None, runners: int, args: argparse.Namespace) -> Run:
    with tempfile.TemporaryDirectory(prefix="modelyard-bench-") as tmp:
        if pg:
            url, name = asyncio.run(fresh_pg(pg))
        else:
            url, name = f"sqlite:///{tmp}/bench.db", ""
        try:
            return one_run(url, Path(tmp), args.jobs, runners, args.concurrency, args.live, (pg, name) if pg else None)
        finally:
            if pg:
                asyncio.run(drop_pg(pg, name))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=5000)
    p.add_argument("--runners", default="1,2,3", help="comma-separated runner counts to try on PostgreSQL")
    p.add_argument("--sqlite-runners", default="1", help="comma-separated runner counts on SQLite ('' for none)")
    p.add_argument("--concurrency", type=int, default=8, help="jobs each runner works on at once")
    p.add_argument("--repeats", type=int, default=3, help="rounds; min and median are printed")
    p.add_argument("--postgres", default=None, help="a PostgreSQL URL to bench (a scratch database is made per run)")
    p.add_argument("--live", type=float, default=None, metavar="RATE",
                   help="runners first, then jobs arriving at RATE a second (wake-ups by NOTIFY, claims per job)")
    args = p.parse_args()
    configs = [("postgres", args.postgres, int(n)) for n in args.runners.split(",") if args.postgres and n]
    configs += [("sqlite", None, int(n)) for n in args.sqlite_runners.split(",") if n]
    results: dict[tuple[str, int], list[Run]] = {}
    for r in range(args.repeats):
        for db, pg, n in configs:
            run = run_config(db, pg, n, args)
            results.setdefault((db, n), []).append(run)
            print(f"round {r + 1}: {db} x{n}: {run.done:.0f} jobs/s (submitted {run.submitted:.0f}/s, "
                  f"{run.claims:.2f} claims/job, {run.empty:.0%} empty, {run.completes:.2f} completes/job, "
                  f"{run.cpu_us:.0f} cpu us/job{_pg(run.pg_us, ', pg cpu us/job ')}, "
                  f"load {run.load:.1f}{_waits(run.wait_ms)})", flush=True)
    med = statistics.median
    mode = f"arriving at {args.live:g}/s" if args.live else "queued before the runners start"
    print(f"\n{args.jobs} jobs {mode}, concurrency {args.concurrency} per runner, {args.repeats} rounds, "
          f"{os.cpu_count()} CPUs")
    print(f"{'database':9} {'runners':>7} {'done/s min':>10} {'median':>7} {'x 1 runner':>10} {'submitted/s':>11} "
          f"{'claims/job':>10} {'empty':>6} {'completes/job':>13} {'cpu us/job':>10} {'pg us/job':>9} {'load':>5}"
          + (f" {'wait ms p50':>11} {'p99':>6}" if args.live else ""))
    for (db, n), runs in results.items():
        base = results.get((db, 1))
        ratio = f"{med(r.done for r in runs) / med(r.done for r in base):.2f}" if base else "-"
        print(f"{db:9} {n:>7} {min(r.done for r in runs):>10.0f} {med(r.done for r in runs):>7.0f} {ratio:>10} "
              f"{med(r.submitted for r in runs):>11.0f} {med(r.claims for r in runs):>10.2f} "
              f"{med(r.empty for r in runs):>6.0%} {med(r.completes for r in runs):>13.2f} "
              f"{med(r.cpu_us for r in runs):>10.0f} "
              f"{_pg(statistics.median(pgs) if (pgs := [r.pg_us for r in runs if r.pg_us is not None]) else None):>9} "
              f"{med(r.load for r in runs):>5.1f}"
              + (f" {med(r.wait_ms[0] for r in runs):>11.1f} {med(r.wait_ms[1] for r in runs):>6.1f}"
                 if args.live else ""))


def _pg(us: float | None, label: str = "") -> str:
    return "" if us is None and label else "-" if us is None else f"{label}{us:.0f}"


def _waits(w: tuple[float, float] | None) -> str:
    return f", submit to claim p50 {w[0]:.1f} ms p99 {w[1]:.1f} ms" if w else ""


if __name__ == "__main__":
    main()
