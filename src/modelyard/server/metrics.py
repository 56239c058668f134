"""/metrics: the app's registry in Prometheus text, after the gauges that are read rather than counted are refreshed.

Counters and histograms are kept as things happen (the call path, the router, the write-behind, the runners). Gauges
of state — each model's state, deployments cooling down, the write-behind's backlog, the job queue, model hosts'
heartbeats, the database pool, the event loop's tasks — are read here, at the scrape: the scrape is not the hot path. The job queue and the
workers table cost one query each, cached for a second so that several scrapers do not multiply them.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from sqlalchemy import func, select

from ..context import AppContext
from ..store.tables import jobs
from ..types import ModelState

CACHE_SECONDS = 1.0


async def refresh(ctx: AppContext) -> None:
    m = ctx.metrics
    assert m is not None
    router = ctx.router
    for model in router.catalog:
        for d in router.deployments(model):
            s = router.stats.get(d.key)
            if s is not None:
                m.deployment_cooling.labels(model.id, d.name, d.config.backend, d.config.region or "").set(
                    1 if s.cooldown_until else 0)
        state = await router.model_state(model)
        for candidate in ModelState:
            m.model_state.labels(model.id, candidate.value).set(1 if candidate == state else 0)
    if ctx.gate.writer is not None:
        m.writer_stats(ctx.gate.writer.stats())
    pool = ctx.store.engine.sync_engine.pool
    checkedout = getattr(pool, "checkedout", None)
    m.db_pool.set(checkedout() if callable(checkedout) else 0)
    m.loop_tasks.set(len(asyncio.all_tasks()))
    if time.monotonic() - m.scraped_at >= CACHE_SECONDS:
        m.scraped_at = time.monotonic()
        if ctx.jobs is not None:
            await _jobs(ctx, m)
        if ctx.workers is not None:
            await _workers(ctx, m)


async def _jobs(ctx: AppContext, m: Any) -> None:
    """Pending and running jobs, and how long the oldest due one has waited: one grouped query on the claim index."""
    now = time.time()
    q = (select(jobs.c.status, func.count(), func.min(jobs.c.run_after))
         .where(jobs.c.status.in_(("pending", "running"))).group_by(jobs.c.status))
    due_q = select(func.min(jobs.c.run_after)).where(jobs.c.status == "pending", jobs.c.run_after <= now)
    async with ctx.store.engine.connect() as conn:
        counts = {row[0]: int(row[1]) for row in (await conn.execute(q)).all()}
        oldest = (await conn.execute(due_q)).scalar()
    for status in ("pending", "running"):
        m.jobs.labels(status).set(counts.get(status, 0))
    m.job_oldest.set(max(0.0, now - float(oldest)) if oldest is not None else 0.0)


async def _workers(ctx: AppContext, m: Any) -> None:
    registry = ctx.workers
    assert registry is not None
    rows = await registry.repo.list()
    now = time.time()
    for w in rows:
        m.worker_beat_age.labels(w.name).set(max(0.0, now - w.last_heartbeat.timestamp()))
    m.workers_alive.set(sum(1 for w in rows if w.alive(registry.timeout)))


async def render(ctx: AppContext) -> bytes:
    await refresh(ctx)
    assert ctx.metrics is not None
    return ctx.metrics.exposition()
