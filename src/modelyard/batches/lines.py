"""A batch's lines as job rows: parked after validation, released (admitted) a window at a time, ended by the batch.

A line is one row of the `jobs` table with `batch_id` and `batch_line` set. It waits as `parked` (no runner claims
that status) until the batch's driver admits it on the call path and releases it as `pending` at the batch's
priority; from there the job queue runs it like any job (lease, heartbeat, retries, exactly one finisher). Every
line therefore ends in exactly one final job state, and the output and error files are written from those rows.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from sqlalchemy import case, delete, func, insert, select, update

from ..jobs.queue import new_job_id, notify_runners
from ..store.db import Store
from ..store.tables import jobs

PARKED = "parked"
INSERT_ROWS = 500  # lines per INSERT while parking: bounded memory whatever the file's size
PAGE = 500  # lines per SELECT while writing the output files


@dataclass
class Parked:
    id: str
    line: int
    payload: dict[str, Any]
    meta: dict[str, Any]


@dataclass
class Ended:
    """A final line, as the output and error files need it."""

    id: str
    line: int
    status: str
    result: Any
    error: dict[str, Any] | None
    meta: dict[str, Any]


class BatchLines:
    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    async def clear(self, batch_id: str) -> None:
        """Drop the parked lines of a validation that did not finish (its driver died): it starts over."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(jobs).where(jobs.c.batch_id == batch_id, jobs.c.status == PARKED))

    async def park(self, *, batch_id: str, org_id: str, token_id: str | None, priority: int, max_attempts: int,
                   rows: list[tuple[int, str, str, str, dict[str, Any]]], base_url: str | None) -> None:
        """Insert (line, custom_id, model, task, body) rows as parked jobs, in one statement."""
        now = time.time()
        values = [{"id": new_job_id(), "org_id": org_id, "token_id": token_id, "model": model, "task": task,
                   "payload": body, "meta": {"face": "batch", "executor": "batch_line", "custom_id": custom_id,
                                             "base_url": base_url},
                   "status": PARKED, "priority": priority, "attempts": 0, "max_attempts": max_attempts,
                   "run_after": now, "lease_owner": None, "lease_token": None, "lease_expires": None,
                   "cancel_requested": False, "settle_due": False, "result": None, "error": None, "region": None,
                   "created_at": now, "started_at": None, "finished_at": None, "webhook_url": None,
                   "webhook_status": None, "webhook_attempts": 0, "webhook_next_at": None, "batch_id": batch_id,
                   "batch_line": line}
                  for line, custom_id, model, task, body in rows]
        async with self.engine.begin() as conn:
            await conn.execute(insert(jobs), values)

    async def counts(self, batch_id: str) -> dict[str, int]:
        """Lines by job status."""
        q = select(jobs.c.status, func.count()).where(jobs.c.batch_id == batch_id).group_by(jobs.c.status)
        async with self.engine.connect() as conn:
            return {status: int(n) for status, n in (await conn.execute(q)).all()}

    async def parked(self, batch_id: str, limit: int) -> list[Parked]:
        q = (select(jobs.c.id, jobs.c.batch_line, jobs.c.payload, jobs.c.meta)
             .where(jobs.c.batch_id == batch_id, jobs.c.status == PARKED).order_by(jobs.c.batch_line).limit(limit))
        async with self.engine.connect() as conn:
            return [Parked(r.id, r.batch_line, r.payload, r.meta) for r in (await conn.execute(q)).all()]

    async def release(self, released: list[tuple[Parked, str, str, dict[str, Any]]]) -> list[str]:
        """Admitted lines into the queue, one transaction: (line, model, task, meta with its hold) each. Returns the
        ids that were still parked (a cancel may have ended others meanwhile; their holds are the caller's)."""
        now = time.time()
        done = []
        async with self.engine.begin() as conn:
            for p, model, task, meta in released:
                q = (update(jobs).where(jobs.c.id == p.id, jobs.c.status == PARKED)
                     .values(status="pending", model=model, task=task, meta=meta, run_after=now))
                if (await conn.execute(q)).rowcount == 1:
                    done.append(p.id)
            if done:  # runners in other processes wake now rather than at their poll
                await notify_runners(self.store, conn)
        return done

    async def refuse(self, p: Parked, error: dict[str, Any]) -> bool:
        """A line the call path refused before it ran (bad body, filter, plan, wallet): failed with that answer."""
        now = time.time()
        q = (update(jobs).where(jobs.c.id == p.id, jobs.c.status == PARKED)
             .values(status="failed", error=error, finished_at=now, started_at=now))
        async with self.engine.begin() as conn:
            return (await conn.execute(q)).rowcount == 1

    async def stop_waiting(self, batch_id: str, code: str, message: str) -> list[tuple[str, dict[str, Any]]]:
        """End every line not yet running (parked or queued) as never run. Returns (job id, hold) of the queued
        ones, admitted already: their rows stay `settle_due` until the caller has refunded them (a sweep does it
        should the caller die first)."""
        now = time.time()
        err = {"code": code, "message": message, "status": None}
        q = (update(jobs).where(jobs.c.batch_id == batch_id, jobs.c.status.in_((PARKED, "pending")))
             .values(status="cancelled", error=err, finished_at=now, lease_token=None, lease_expires=None,
                     settle_due=case((jobs.c.status == "pending", True), else_=False))
             .returning(jobs.c.id, jobs.c.meta))
        async with self.engine.begin() as conn:
            rows = (await conn.execute(q)).all()
        return [(r.id, r.meta["hold"]) for r in rows if (r.meta or {}).get("hold") is not None]

    async def stop_running(self, batch_id: str) -> list[str]:
        """Ask the runners of this batch's running lines to stop at their next heartbeat; returns their ids."""
        q = (update(jobs).where(jobs.c.batch_id == batch_id, jobs.c.status == "running")
             .values(cancel_requested=True).returning(jobs.c.id))
        async with self.engine.begin() as conn:
            return [r.id for r in (await conn.execute(q)).all()]

    async def ended(self, batch_id: str, *, completed: bool) -> AsyncIterator[Ended]:
        """The batch's completed lines (or all the others), in input order, a page at a time."""
        after = 0
        while True:
            cond = jobs.c.status == "completed" if completed else jobs.c.status != "completed"
            q = (select(jobs.c.id, jobs.c.batch_line, jobs.c.status, jobs.c.result, jobs.c.error, jobs.c.meta)
                 .where(jobs.c.batch_id == batch_id, jobs.c.batch_line > after, cond)
                 .order_by(jobs.c.batch_line).limit(PAGE))
            async with self.engine.connect() as conn:
                rows = (await conn.execute(q)).all()
            for r in rows:
                yield Ended(r.id, r.batch_line, r.status, r.result, r.error, r.meta or {})
            if len(rows) < PAGE:
                return
            after = rows[-1].batch_line
