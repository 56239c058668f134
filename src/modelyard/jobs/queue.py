"""The job queue in SQL: submit, claim with a lease, renew, finish (only by the lease holder), retry, reap, cancel."""

from __future__ import annotations

import contextlib
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from sqlalchemy import (JSON, Boolean, Float, Integer, String, and_, bindparam, case, column, func, insert,
                        literal_column, or_, select, text, type_coerce, update)

from ..store.db import Store
from ..store.paging import newest_first
from ..store import webhook_rows
from ..store.tables import jobs, usage_records

log = logging.getLogger(__name__)

FINAL = ("completed", "failed", "cancelled", "dead_letter")
STATUSES = ("pending", "running", *FINAL)
NOTIFY_CHANNEL = "modelyard_jobs"
FLUSH_MAX = 64  # rows a renewal or completion statement writes at most
# inline, not a bound parameter: a prepared statement's generic plan can only use the partial index ix_jobs_pending
# (WHERE status = 'pending') when the query names the same constant
PENDING = literal_column("'pending'")


async def notify_runners(store: Store, conn: Any) -> None:
    """In a transaction that makes jobs pending: one NOTIFY, delivered at its commit, wakes the idle runners of every
    process (PostgreSQL; SQLite runners poll, and their own process nudges them). One per transaction, however many
    jobs it makes: PostgreSQL folds repeats within a transaction, and each NOTIFY'ing commit takes a global lock."""
    if not store.is_sqlite:
        await conn.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))


def new_job_id() -> str:
    return "job_" + secrets.token_hex(12)


@dataclass
class Job:
    id: str
    org_id: str
    token_id: str | None
    model: str
    task: str
    payload: dict[str, Any]
    meta: dict[str, Any]
    status: str
    priority: int
    attempts: int
    max_attempts: int
    run_after: float
    lease_owner: str | None
    lease_token: str | None
    lease_expires: float | None
    cancel_requested: bool
    settle_due: bool
    result: Any
    error: dict[str, Any] | None
    region: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    webhook_url: str | None
    webhook_status: str | None
    webhook_attempts: int

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public(self) -> dict[str, Any]:
        """The job API's view (the job API's shape): no lease internals, no billing hold."""
        return {"id": self.id, "object": "job", "queue_id": self.model, "model_id": self.model, "task": self.task,
                "status": self.status, "priority": self.priority, "attempts": self.attempts,
                "max_attempts": self.max_attempts, "result": self.result, "error": self.error,
                "source": self.meta.get("face"), "webhook_url": self.webhook_url, "webhook_status": self.webhook_status,
                "created_at": int(self.created_at), "started_at": _int(self.started_at),
                "finished_at": _int(self.finished_at)}


def job_row(*, org_id: str, token_id: str | None, model: str, task: str, payload: dict[str, Any],
            meta: dict[str, Any], priority: int = 0, max_attempts: int = 3, region: str | None = None,
            webhook_url: str | None = None, job_id: str | None = None, now: float, status: str = "pending",
            error: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """A new job's row (a feature that writes jobs in its own transaction, like an agent run, builds them here)."""
    final = status in FINAL
    return {"id": job_id or new_job_id(), "org_id": org_id, "token_id": token_id, "model": model, "task": task,
            "payload": payload, "meta": meta, "status": status, "priority": priority, "attempts": 0,
            "max_attempts": max_attempts, "run_after": now, "lease_owner": None, "lease_token": None,
            "lease_expires": None, "cancel_requested": False, "settle_due": False, "result": None, "error": error,
            "region": region, "created_at": now, "started_at": None, "finished_at": now if final else None,
            "webhook_url": webhook_url, "webhook_status": None, "webhook_attempts": 0, "webhook_next_at": None,
            **extra}


def _int(v: float | None) -> int | None:
    return int(v) if v is not None else None


def _day(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%d")


def usage_sum(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Usage rows summed: calls (every attempt that reached a model, failed ones free), tokens, other units, price."""
    units: dict[str, float] = {}
    for r in rows:
        for k, v in (r.get("units") or {}).items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                units[k] = units.get(k, 0) + v
    return {"calls": len(rows), "succeeded": sum(1 for r in rows if r["status"] == "ok"),
            "input_tokens": sum(int(r["input_tokens"] or 0) for r in rows),
            "output_tokens": sum(int(r["output_tokens"] or 0) for r in rows), "units": units,
            "cost_micros": sum(int(r["price_micros"] or 0) for r in rows)}


def _job(m: Mapping[str, Any]) -> Job:
    return Job(**{k: m[k] for k in Job.__dataclass_fields__})  # type: ignore[arg-type]


class Lane:
    """A runner's own connection for its hot statements (claims, flushes, renewals), kept from one to the next.

    A pool checkout per statement costs a pre-ping (on asyncpg three round trips: BEGIN, an empty query, ROLLBACK),
    as many as the statement itself. Each statement still commits alone (autocommit). One that fails drops the
    connection (its state is unknown); the next statement opens another.
    """

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        self.conn: Any = None

    async def execute(self, q: Any, params: dict[str, Any] | None = None) -> Any:
        if self.conn is None:
            self.conn = await self.engine.connect()
        try:
            return await self.conn.execute(q, params)
        except BaseException:
            await self.aclose(invalidate=True)
            raise

    async def aclose(self, *, invalidate: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                if invalidate:
                    await conn.invalidate()
                await conn.close()


class JobQueue:
    """Every state change is one conditional UPDATE, so concurrent runners and reapers never both win a row.

    A runner's result counts only while its lease token is the row's: a runner that lost its lease (paused,
    partitioned, presumed dead) finds its UPDATE matching nothing and drops the result.
    """

    def __init__(self, store: Store, *, backoff: float = 2.0, backoff_max: float = 300.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock  # every lease, backoff and due time is read from it (tests pass one they move)
        self.engine = store.engine
        # one statement, its own transaction: no BEGIN and COMMIT round trips around the runner's claims and flushes
        self.autocommit = store.engine.execution_options(isolation_level="AUTOCOMMIT")
        self._claim: Any = None  # the claim statement, built at the first claim
        self._statements: dict[str, Any] = {}  # the renewal and the completion of many jobs (_many)
        self.backoff = backoff
        self.backoff_max = backoff_max

    # ---------------------------------------------------------------- submitting and reading

    async def submit(self, *, org_id: str, token_id: str | None, model: str, task: str, payload: dict[str, Any],
                     meta: dict[str, Any], priority: int = 0, max_attempts: int = 3, region: str | None = None,
                     webhook_url: str | None = None, job_id: str | None = None) -> Job:
        row = job_row(org_id=org_id, token_id=token_id, model=model, task=task, payload=payload, meta=meta,
                      priority=priority, max_attempts=max_attempts, region=region, webhook_url=webhook_url,
                      job_id=job_id, now=self.clock())
        async with self.engine.begin() as conn:
            await conn.execute(insert(jobs).values(**row))
            await notify_runners(self.store, conn)
        return _job(row)

    async def get(self, job_id: str, *, org_id: str | None = None) -> Job | None:
        q = select(jobs).where(jobs.c.id == job_id)
        if org_id is not None:
            q = q.where(jobs.c.org_id == org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _job(row._mapping) if row else None

    async def get_many(self, ids: list[str], *, org_id: str) -> list[Job]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(jobs).where(jobs.c.id.in_(ids), jobs.c.org_id == org_id))).all()
        return [_job(r._mapping) for r in rows]

    async def list(self, org_id: str, *, status: str | None = None, limit: int = 20,
                   after: tuple[float, str] | None = None) -> list[Job]:
        """Newest first; `after` is the (created_at, id) of the last job of the previous page."""
        # a batch's lines list with the batch, an agent run's node jobs with the run
        q = select(jobs).where(jobs.c.org_id == org_id, jobs.c.batch_id.is_(None), jobs.c.run_id.is_(None))
        if status:
            q = q.where(jobs.c.status == status)
        q = newest_first(q, jobs, after, limit)
        async with self.engine.connect() as conn:
            return [_job(r._mapping) for r in (await conn.execute(q)).all()]

    async def usage(self, job: Job) -> list[dict[str, Any]]:
        """The job's usage rows (one once it has settled; none before, or for a job that never reached a model).

        Usage rows carry the job id but are indexed by (org, day): the days from the job's creation to a day past
        its end bound the scan, however much usage the organization has."""
        first = _day(job.created_at)
        last = _day((job.finished_at or self.clock()) + 86400)
        q = (select(usage_records.c.units, usage_records.c.price_micros, usage_records.c.status,
                    usage_records.c.input_tokens, usage_records.c.output_tokens)
             .where(usage_records.c.org_id == job.org_id, usage_records.c.day >= first, usage_records.c.day <= last,
                    usage_records.c.job_id == job.id))
        async with self.engine.connect() as conn:
            return [dict(r._mapping) for r in (await conn.execute(q)).all()]

    async def queue_position(self, job: Job) -> int:
        """Pending jobs of the same model that a runner will take before this one."""
        ahead = or_(jobs.c.priority > job.priority,
                    and_(jobs.c.priority == job.priority, jobs.c.created_at < job.created_at))
        q = select(func.count()).select_from(jobs).where(jobs.c.status == "pending", jobs.c.model == job.model, ahead)
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    # ---------------------------------------------------------------- runners

    def lane(self) -> Lane:
        return Lane(self.autocommit)

    async def claim(self, owner: str, lease_seconds: float, limit: int = 1, *, lane: Lane | None = None) -> list[Job]:
        """Take up to `limit` of the most urgent due jobs in one statement (one round trip, its own transaction).

        PostgreSQL: the pick is a MATERIALIZED CTE with FOR UPDATE SKIP LOCKED, so runners never wait on each
        other's picks and the LIMIT holds (as `id IN (subquery)` the planner may rescan the locking subquery once per
        outer row, and one runner took every pending job); the partial index ix_jobs_pending serves the ORDER BY
        without sorting the backlog. SQLite serializes writers, so one UPDATE ... RETURNING is atomic there too.
        The statement is built once; each claim only binds its values.
        """
        if self._claim is None:
            pending = jobs.c.status == PENDING
            if self.store.is_sqlite:  # likely(): without it SQLite's planner took ix_jobs_claim (status = ?) and
                # sorted every pending job by (run_after, id) at each claim, a claim's cost growing with the backlog
                pending = func.likely(pending)
            due = and_(pending, jobs.c.run_after <= bindparam("c_now", type_=Float))
            self._claim = self._take(select(jobs.c.id).where(due)
                                     .order_by(jobs.c.priority.desc(), jobs.c.run_after, jobs.c.id)
                                     .limit(bindparam("c_limit", type_=Integer)))
        return await self._claimed(self._claim, owner, lease_seconds, {"c_limit": limit}, lane)

    async def claim_group(self, owner: str, lease_seconds: float, *, batch_id: str, model: str,
                          limit: int, lane: Lane | None = None) -> list[Job]:
        """Take up to `limit` more due lines of one batch for one model, in input order: they run beside a line
        just claimed, so a model that batches dynamically gets them in one go."""
        pick = (select(jobs.c.id).where(jobs.c.status == PENDING, jobs.c.run_after <= bindparam("c_now", type_=Float),
                                        jobs.c.batch_id == batch_id, jobs.c.model == model)
                .order_by(jobs.c.batch_line).limit(limit))
        return await self._claimed(self._take(pick), owner, lease_seconds, {}, lane)

    def _take(self, pick: Any) -> Any:
        if self.store.is_sqlite:  # the picked ids first, then each row by its primary key: as `id IN (pick)` the
            # planner took every pending row by status (ix_jobs_claim) and looked each up in the list
            picked = pick.with_only_columns(jobs.c.id.label("pick_id")).cte("picked").prefix_with("MATERIALIZED")
            q = update(jobs).where(jobs.c.id == picked.c.pick_id, jobs.c.status == PENDING)
        else:
            picked = pick.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            q = update(jobs).where(jobs.c.id == picked.c.id)
        q = q.values(status="running", lease_owner=bindparam("c_owner", type_=String),
                     lease_token=bindparam("c_token", type_=String), lease_expires=bindparam("c_expires", type_=Float),
                     attempts=jobs.c.attempts + 1, started_at=bindparam("c_now", type_=Float))
        if self.store.is_sqlite:  # WAL with synchronous=NORMAL: no commit waits for the disk there
            return q.returning(*jobs.c)
        # A claim's commit need not wait for the WAL to reach the disk (2-7 ms a commit on a busy VM, the most of a
        # claim's cost): were the server to crash first, the claim is undone and the job is pending again, and its
        # runner's result then matches no lease and is dropped; the job runs again, it is never finished twice. A
        # completion commits synchronously, and the WAL is flushed in order, so a durable completion implies its
        # claim. set_config(..., true) in RETURNING runs in each claiming statement that wrote a row, before its
        # commit, and applies to that transaction only; a claim that found nothing wrote nothing to flush.
        return q.returning(*jobs.c, func.set_config("synchronous_commit", "off", True).label("commit_async"))

    async def _claimed(self, q: Any, owner: str, lease_seconds: float, params: dict[str, Any],
                       lane: Lane | None) -> list[Job]:
        now = self.clock()
        params = {**params, "c_now": now, "c_owner": owner, "c_token": secrets.token_hex(8),
                  "c_expires": now + lease_seconds}
        rows = (await self._run(q, params, lane)).all()
        return sorted((_job(r._mapping) for r in rows), key=lambda j: (-j.priority, j.run_after))

    async def _run(self, q: Any, params: dict[str, Any] | None, lane: Lane | None) -> Any:
        """One statement in its own transaction: on the lane's connection when given, else on one from the pool."""
        if lane is not None:
            return await lane.execute(q, params)
        async with self.autocommit.connect() as conn:
            return await conn.execute(q, params)

    async def renew(self, job: Job, lease_seconds: float) -> tuple[bool, bool]:
        """Extend the lease: (still ours, cancel requested)."""
        q = (update(jobs).where(jobs.c.id == job.id, jobs.c.lease_token == job.lease_token, jobs.c.status == "running")
             .values(lease_expires=self.clock() + lease_seconds).returning(jobs.c.cancel_requested))
        async with self.engine.begin() as conn:
            row = (await conn.execute(q)).first()
        return (row is not None, bool(row.cancel_requested) if row else False)

    async def renew_many(self, held: list[Job], lease_seconds: float, *, lane: Lane | None = None) -> dict[str, bool]:
        """Extend the leases of many jobs of one runner in one statement: {job id: cancel requested} for each still
        ours; a job missing from it lost its lease."""
        ours: dict[str, bool] = {}
        for part in _chunks(held):
            params = {"m_expires": self.clock() + lease_seconds,
                      "m_rows": [{"id": job.id, "token": job.lease_token} for job in part]}
            rows = (await self._run(self._many("renew"), params, lane)).all()
            ours.update((r.id, bool(r.cancel_requested)) for r in rows)
        if not self.store.is_sqlite:
            for job in held:  # lost, or skipped for a moment (another writer held its row): ask it alone
                if job.id not in ours:
                    still, cancel = await self.renew(job, lease_seconds)
                    if still:
                        ours[job.id] = cancel
        return ours

    def _many(self, kind: str) -> Any:
        """The statement that renews ("renew") or completes ("complete") many jobs of one runner, each only while
        its lease is still the runner's.

        The rows arrive as one JSON parameter (a list of objects), unpacked by the database (json_to_recordset on
        PostgreSQL, json_each on SQLite): one statement text whatever the number of rows, so SQLAlchemy compiles it
        once and caches it, and PostgreSQL prepares it once per connection. (A VALUES list of n rows has n times the
        parameters, a statement per size, and SQLAlchemy cannot cache a multi-row VALUES at all: it was compiled
        again at every flush, the most of a runner's CPU per job.)

        PostgreSQL: the rows are locked first with SKIP LOCKED, so the statement never waits on a row lock: a
        multi-row UPDATE that waits can deadlock with another multi-row writer (a batch's cancel) taking the same
        rows in another order. The rare skipped row is then written alone by the caller, which may wait safely.
        """
        q = self._statements.get(kind)
        if q is not None:
            return q
        v = self._rows(kind == "complete")
        ours = and_(jobs.c.id == v.c.id, jobs.c.lease_token == v.c.token, jobs.c.status == "running")
        q = update(jobs).where(ours)
        if not self.store.is_sqlite:
            mine = (select(jobs.c.id).select_from(jobs.join(v, ours)).with_for_update(of=jobs, skip_locked=True)
                    .cte("mine").prefix_with("MATERIALIZED"))
            q = q.where(jobs.c.id == mine.c.id)
        if kind == "renew":
            q = q.values(lease_expires=bindparam("m_expires", type_=Float)).returning(jobs.c.id, jobs.c.cancel_requested)
        else:
            now = bindparam("m_now", type_=Float)
            q = (q.values(status="completed", result=v.c.result, error=None, meta=func.coalesce(v.c.meta, jobs.c.meta),
                          settle_due=or_(v.c.settle, jobs.c.settle_due), finished_at=now, lease_token=None,
                          lease_expires=None, webhook_status=case((jobs.c.webhook_url.is_not(None), "pending"),
                                                                  else_=None), webhook_next_at=now)
                 .returning(jobs.c.id))
        self._statements[kind] = q
        return q

    def _rows(self, complete: bool) -> Any:
        """The rows of the JSON parameter m_rows as a CTE `v`: id, token, and for a completion result, meta (NULL
        keeps the row's own) and settle."""
        rows = bindparam("m_rows", type_=JSON)
        if not self.store.is_sqlite:
            cols = [column("id", String), column("token", String)]
            if complete:  # a JSON null becomes SQL NULL here: meta NULL keeps the row's own
                cols += [column("result", JSON), column("meta", JSON), column("settle", Boolean)]
            tv = func.json_to_recordset(rows).table_valued(*cols).render_derived(name="r", with_types=True)
            return select(*tv.c).cte("v")
        each = func.json_each(rows).table_valued("value")

        def field(name: str) -> Any:
            return func.json_extract(each.c.value, f"$.{name}")
        picked = [field("id").label("id"), field("token").label("token")]
        if complete:  # json_quote keeps an extracted value JSON (a string result stays quoted); meta null: NULL
            picked += [type_coerce(func.json_quote(field("result")), JSON).label("result"),
                       type_coerce(func.nullif(func.json_quote(field("meta")), "null"), JSON).label("meta"),
                       type_coerce(field("settle"), Boolean).label("settle")]
        # MATERIALIZED: the rows first, then each job by its primary key (inlined, SQLite's planner took the running
        # jobs by status and read the JSON again for each of them)
        return select(*picked).select_from(each).cte("v").prefix_with("MATERIALIZED")

    async def _finish(self, job: Job, **values: Any) -> bool:
        """A lease holder's final word; False when the lease was lost (the result is then dropped)."""
        values.setdefault("finished_at", self.clock())
        if values.get("status") not in FINAL:  # back in the queue: nobody owns it; a final row keeps who finished it
            values["lease_owner"] = None
        elif job.meta.get("hold") is not None:
            values["settle_due"] = True
        q = (update(jobs).where(jobs.c.id == job.id, jobs.c.lease_token == job.lease_token, jobs.c.status == "running")
             .values(lease_token=None, lease_expires=None, **values, **_webhook_due(values, self.clock())))
        async with self.engine.begin() as conn:
            return (await conn.execute(q)).rowcount == 1

    async def complete(self, job: Job, result: Any, meta: dict[str, Any] | None = None) -> bool:
        extra = {"meta": meta} if meta is not None else {}
        return await self._finish(job, status="completed", result=result, error=None, **extra)

    async def complete_many(self, done: list[tuple[Job, Any, dict[str, Any] | None]], *,
                            lane: Lane | None = None) -> set[str]:
        """Complete many jobs of one runner in one statement, each (job, result, meta or None to keep it) only while
        its lease is the caller's. Returns the ids that won: their results count, once; the others had lost their
        leases (someone else owns those jobs now) and their results are dropped."""
        won: set[str] = set()
        for part in _chunks(done):  # a runner flushes at most one chunk at a time: one statement, all or nothing
            params = {"m_now": self.clock(),
                      "m_rows": [{"id": job.id, "token": job.lease_token, "result": result, "meta": meta,
                                  "settle": job.meta.get("hold") is not None} for job, result, meta in part]}
            won.update((await self._run(self._many("complete"), params, lane)).scalars())
        if not self.store.is_sqlite:
            for job, result, meta in done:  # lost, or skipped for a moment: the one-row UPDATE decides
                if job.id in won:
                    continue
                try:  # what the statement above won stands whatever happens here
                    if await self.complete(job, result, meta):
                        won.add(job.id)
                except Exception:
                    log.exception("completing job %s alone failed; its lease will run out", job.id)
        return won

    async def fail(self, job: Job, error: dict[str, Any], *, retryable: bool) -> str | None:
        """Retry with backoff while attempts remain (retryable errors only); else failed / dead_letter.

        Returns the status the job moved to, or None when the lease was lost.
        """
        if retryable and job.attempts < job.max_attempts:
            ok = await self._finish(job, status="pending", error=error, finished_at=None,
                                    run_after=self.clock() + self.delay(job.attempts, job.meta.get("backoff_seconds")))
            return "pending" if ok else None
        status = "dead_letter" if retryable else "failed"
        return status if await self._finish(job, status=status, error=error) else None

    async def cancelled(self, job: Job) -> bool:
        return await self._finish(job, status="cancelled", error={"message": "The job was cancelled.",
                                                                  "code": "cancelled"})

    async def release(self, job: Job) -> bool:
        """Give a job back untouched (runner shutting down): the attempt does not count."""
        return await self._finish(job, status="pending", finished_at=None, attempts=jobs.c.attempts - 1,
                                  run_after=self.clock())

    def delay(self, attempts: int, base: float | None = None) -> float:
        """Exponential backoff from the queue's base, or from a job's own (an agent node's retry policy)."""
        if base is not None:
            return min(float(base) * (2 ** max(attempts - 1, 0)), 3600.0)
        return min(self.backoff * (2 ** max(attempts - 1, 0)), self.backoff_max)

    async def reap(self, limit: int = 200) -> list[Job]:
        """Put jobs whose lease expired back in the queue (or dead-letter / cancel them). Returns those made final."""
        now = self.clock()
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(jobs).where(jobs.c.status == "running", jobs.c.lease_expires < now)
                                       .limit(limit))).all()
        finals = []
        for r in rows:
            job = _job(r._mapping)
            err = {"message": "The runner working on this job stopped answering.", "code": "lease_expired"}
            if job.cancel_requested:
                won, job.status = await self.cancelled(job), "cancelled"
            elif job.attempts >= job.max_attempts:
                won, job.status = await self._finish(job, status="dead_letter", error=err), "dead_letter"
            else:
                won = await self._finish(job, status="pending", error=err, finished_at=None,
                                         run_after=now + self.delay(job.attempts, job.meta.get("backoff_seconds")))
                job.status = "pending"
            if won and job.status in FINAL:
                finals.append(job)
        return finals

    # ---------------------------------------------------------------- clients

    async def cancel(self, job_id: str, org_id: str) -> tuple[Job | None, str]:
        """('cancelled' at once when pending | 'requested' when running | 'final' when already done)."""
        now = self.clock()
        err = {"message": "The job was cancelled.", "code": "cancelled"}
        q = (update(jobs).where(jobs.c.id == job_id, jobs.c.org_id == org_id, jobs.c.status == "pending")
             .values(status="cancelled", finished_at=now, error=err, settle_due=True,
                     webhook_status=case((jobs.c.webhook_url.is_not(None), "pending"), else_=None),
                     webhook_next_at=now).returning(*jobs.c))
        async with self.engine.begin() as conn:
            row = (await conn.execute(q)).first()
            if row is not None:
                return _job(row._mapping), "cancelled"
            q2 = (update(jobs).where(jobs.c.id == job_id, jobs.c.org_id == org_id, jobs.c.status == "running")
                  .values(cancel_requested=True).returning(*jobs.c))
            row = (await conn.execute(q2)).first()
            if row is not None:
                return _job(row._mapping), "requested"
        job = await self.get(job_id, org_id=org_id)
        return job, "final" if job else "missing"

    # ---------------------------------------------------------------- settlement

    async def settled(self, job_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(settle_due=False))

    async def unsettled(self, grace: float, limit: int = 50) -> list[Job]:
        """Final jobs whose settlement went unrecorded for `grace` seconds (their finisher died); each is handed
        to one caller, which settles it (the hold's job_id lets the gate recognize a repeat)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(jobs).where(jobs.c.settle_due.is_(True),
                                                          jobs.c.finished_at < self.clock() - grace)
                                       .limit(limit))).all()
        won = []
        for r in rows:
            async with self.engine.begin() as conn:
                q = update(jobs).where(jobs.c.id == r.id, jobs.c.settle_due.is_(True)).values(settle_due=False)
                if (await conn.execute(q)).rowcount == 1:
                    won.append(_job(r._mapping))
        return won

    async def settle_failed(self, job_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(jobs).where(jobs.c.id == job_id).values(settle_due=True))

    # ---------------------------------------------------------------- webhooks

    async def due_webhooks(self, limit: int = 20) -> list[Job]:
        return await webhook_rows.claim_due(self.engine, jobs, self.clock(), limit, _job)

    async def webhook_done(self, job_id: str, *, delivered: bool, retry_at: float | None) -> None:
        await webhook_rows.mark_done(self.engine, jobs, job_id, delivered=delivered, retry_at=retry_at)


def _chunks(items: list[Any], size: int = FLUSH_MAX) -> list[list[Any]]:
    """At most `size` rows a statement: a bounded number of distinct statements (and parameters) per size."""
    return [items[i:i + size] for i in range(0, len(items), size)]


def _webhook_due(values: dict[str, Any], now: float) -> dict[str, Any]:
    """A job reaching a final state owes its webhook (if it named one) a delivery, starting now."""
    if values.get("status") not in FINAL:
        return {}
    return {"webhook_status": case((jobs.c.webhook_url.is_not(None), "pending"), else_=None),
            "webhook_next_at": now}
