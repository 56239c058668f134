"""A job runner: claims jobs with a lease, renews it while working, finishes them through the router, settles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from ..pipeline.billing import fill_units
from ..errors import ModelyardError
from ..logs import REQUEST, RequestInfo
from ..pipeline.units import Units
from ..routing import RETRYABLE
from ..types import Task
from .queue import NOTIFY_CHANNEL, Job, JobQueue
from .tasks import build_request, store_result

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)


# How a kind of job runs when it is not a plain task (a batch line): the job -> (stored result, units, deployment)
Executor = Callable[[Job], Awaitable[tuple[Any, Units, Any]]]


class JobRunner:
    def __init__(self, ctx: AppContext, queue: JobQueue, *, name: str | None = None,
                 on_final: Callable[[Job], None] | None = None, on_retry: Callable[[Job], None] | None = None,
                 executors: dict[str, Executor] | None = None) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.queue = queue
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self) % 10000}"
        self.concurrency = s.job_concurrency
        self.lease = s.job_lease_seconds
        self.heartbeat = s.job_heartbeat_seconds
        self.poll = s.job_poll_seconds
        self.on_final = on_final
        self.on_retry = on_retry  # a failed attempt went back to the queue (its next one is due later)
        self.executors = executors if executors is not None else {}  # by the job's meta["executor"]
        self.wake = asyncio.Event()
        self.active: dict[str, asyncio.Task] = {}
        # batch lines claimed beside a line of the same batch and model (a group for a dynamic batcher): they run
        # like any job but take no slot of their own, the group counts as one
        self.riders: set[str] = set()
        self.cancelling: set[str] = set()
        self.completed = 0  # counters for /metrics and the bench
        self.stopping = False
        self.metrics = ctx.metrics  # None outside a server with metrics on (a standalone runner)

    # ---------------------------------------------------------------- the loop

    async def run_forever(self) -> None:
        listener = await self._listen()
        last_reap = 0.0
        worked = False  # claimed something since it last went idle
        # expired leases only matter at lease granularity: looking for them every pass would cost a query per job
        reap_every = max(self.poll, self.lease / 4)
        try:
            while True:
                if self.metrics is not None:
                    self.metrics.runner_beat.set(time.time())
                try:
                    if time.monotonic() - last_reap >= reap_every:
                        last_reap = time.monotonic()
                        for job in await self.queue.reap():
                            await self._settle(job, ok=False)
                        await self._sweep_settlements()
                    while self.busy < self.concurrency:
                        claimed = await self.queue.claim(self.name, self.lease, self.concurrency - self.busy)
                        claimed += await self._groups(claimed)
                        if self.metrics is not None:
                            for job in claimed:  # started_at is the claim's own clock reading
                                self.metrics.claimed(job.task, (job.started_at or job.run_after) - job.run_after)
                        for job in claimed:
                            self.active[job.id] = asyncio.create_task(self._work(job))
                            self.active[job.id].add_done_callback(lambda _t: self.wake.set())
                        if not claimed:
                            break
                        worked = True  # set on claiming: a fast job may be done before this pass ends
                except Exception:
                    log.exception("job runner pass failed; retrying after %.1fs", self.poll)
                if worked and not self.active:  # once per burst of work, not per poll: the queue is drained
                    worked = False
                    log.info("runner %s idle: waiting for a NOTIFY or the next poll in %.1fs", self.name, self.poll)
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.wake.wait(), self.poll)
                self.wake.clear()
        finally:
            await self._stop(listener)

    @property
    def busy(self) -> int:
        """Slots in use: running jobs, a group of batch lines counting as one."""
        return len(self.active) - len(self.riders)

    def _group_key(self, job: Job) -> tuple[str, str] | None:
        """(batch, model) for a batch line whose model batches dynamically: such lines are worth running together."""
        batch_id = job.meta.get("batch_id")
        if job.meta.get("executor") != "batch_line" or not batch_id or self.ctx.router.batch_size(job.model) < 2:
            return None
        return batch_id, job.model

    async def _groups(self, claimed: list[Job]) -> list[Job]:
        """Fill each group among the claimed jobs up to its model's dynamic batch size with more of its lines (the
        driver releases them a window at a time); the group's first job holds the slot, the others ride along.
        Returns the extra jobs claimed."""
        groups: dict[tuple[str, str], int] = {}
        for job in claimed:
            key = self._group_key(job)
            if key is None:
                continue
            if key in groups:
                self.riders.add(job.id)
            groups[key] = groups.get(key, 0) + 1
        extra: list[Job] = []
        for (batch_id, model), have in groups.items():
            room = self.ctx.router.batch_size(model) - have
            if room > 0:
                more = await self.queue.claim_group(self.name, self.lease, batch_id=batch_id, model=model, limit=room)
                self.riders.update(j.id for j in more)
                extra += more
        return extra

    async def _stop(self, listener: Any) -> None:
        """Shutting down: running jobs go back to the queue at once instead of waiting out their lease."""
        self.stopping = True
        for task in list(self.active.values()):
            task.cancel()
        for task in list(self.active.values()):
            with contextlib.suppress(BaseException):
                await task
        if listener is not None:
            with contextlib.suppress(Exception):
                await listener.close()

    async def _listen(self) -> Any:
        """PostgreSQL: wake on NOTIFY when a job is submitted anywhere; polling stays the fallback."""
        if self.ctx.store.is_sqlite:
            return None
        try:
            import asyncpg

            url = self.ctx.store.url.replace("postgresql+asyncpg://", "postgresql://", 1)
            conn = await asyncpg.connect(url)
            await conn.add_listener(NOTIFY_CHANNEL, lambda *_: self.wake.set())
            return conn
        except Exception as exc:
            log.warning("LISTEN failed (%s); the runner polls every %.1fs", exc, self.poll)
            return None

    def cancel_local(self, job_id: str) -> bool:
        """A cancel for a job this runner holds: stop its work now rather than at the next heartbeat."""
        task = self.active.get(job_id)
        if task is None:
            return False
        self.cancelling.add(job_id)
        task.cancel()
        return True

    # ---------------------------------------------------------------- one job

    async def _work(self, job: Job) -> None:
        if job.meta.get("request_id"):  # this job's log lines (a task of its own) name the request that submitted it
            REQUEST.set(RequestInfo(job.meta["request_id"]))
        work = asyncio.create_task(self._execute(job))
        beat = asyncio.create_task(self._beat(job, work))
        try:
            result, units, deployment = await work
        except asyncio.CancelledError:
            if job.id in self.cancelling:
                if await self.queue.cancelled(job):
                    job.status = "cancelled"
                    await self._settle(job, ok=False)
            elif self.stopping:
                await self.queue.release(job)
            # else the lease was lost: someone else owns the job now
        except ModelyardError as exc:
            await self._failed(job, exc, retryable=isinstance(exc, RETRYABLE))
        except Exception as exc:
            log.exception("job %s crashed", job.id)
            await self._failed(job, exc, retryable=True)
        else:
            # the units go into the row with the result: a sweep can settle with them if this process dies now
            meta = {**job.meta, "settle_units": asdict(units)} if job.meta.get("hold") is not None else None
            if await self.queue.complete(job, result, meta):
                job.status, job.result = "completed", result
                self.completed += 1
                log.info("job %s completed by %s (attempt %d)", job.id, self.name, job.attempts)
                await self._settle(job, ok=True, units=units, deployment=deployment)
        finally:
            beat.cancel()
            self.cancelling.discard(job.id)
            self.active.pop(job.id, None)
            self.riders.discard(job.id)

    async def _failed(self, job: Job, exc: Exception, *, retryable: bool) -> None:
        if isinstance(exc, ModelyardError):
            error = {"message": exc.message, "code": exc.code, "type": exc.type, "status": exc.status,
                     "param": exc.param}
        else:
            error = {"message": "The job failed on the server.", "code": "internal_error", "type": "api_error",
                     "status": 500, "param": None}
        status = await self.queue.fail(job, error, retryable=retryable)
        if status == "pending" and self.on_retry is not None:
            job.status, job.error = status, error
            self.on_retry(job)
        if status in ("failed", "dead_letter"):
            job.status, job.error = status, error
            await self._settle(job, ok=False)

    async def _beat(self, job: Job, work: asyncio.Task) -> None:
        while True:
            await asyncio.sleep(self.heartbeat)
            try:
                ours, cancel = await self.queue.renew(job, self.lease)
            except Exception:
                log.exception("renewing the lease of %s failed", job.id)
                if self.metrics is not None:
                    self.metrics.lease_renewals.labels("error").inc()
                continue
            if self.metrics is not None:
                self.metrics.lease_renewals.labels("renewed" if ours else "lost").inc()
            if not ours:
                log.warning("job %s: lease lost, dropping its work", job.id)
                work.cancel()
                return
            if cancel:
                self.cancelling.add(job.id)
                work.cancel()
                return

    async def _execute(self, job: Job) -> tuple[Any, Units, Any]:
        tracing = self.ctx.tracing
        if tracing is not None:  # a span per run, in the trace of the request that submitted the job
            with tracing.job_span(job):
                return await self._run(job)
        return await self._run(job)

    async def _run(self, job: Job) -> tuple[Any, Units, Any]:
        executor = self.executors.get(job.meta.get("executor") or "")
        if executor is not None:
            return await executor(job)
        return await run_task(self.ctx, job)

    async def _settle(self, job: Job, *, ok: bool, units: Units | None = None, deployment: Any = None) -> None:
        """Once per job: only the caller whose conditional UPDATE made the job final gets here.

        The row's `settle_due` is cleared after the gate has settled; if this process dies in between, a later
        sweep settles again with the same hold (its `job_id` is the gate's idempotency key).
        """
        if self.metrics is not None:
            self.metrics.jobs_finished.labels(job.task, job.status).inc()
        hold = job.meta.get("hold")
        if hold is not None:
            try:
                await self.ctx.calls.settle_hold(hold, units, ok=ok, deployment=deployment)
                await self.queue.settled(job.id)
            except Exception:
                log.exception("settling job %s failed; a later sweep retries", job.id)
        if self.on_final is not None:
            self.on_final(job)

    async def _sweep_settlements(self) -> None:
        for job in await self.queue.unsettled(grace=max(60.0, 2 * self.lease)):
            ok = job.status == "completed"
            units = Units(**job.meta["settle_units"]) if ok and job.meta.get("settle_units") else None
            try:
                await self.ctx.calls.settle_hold(job.meta["hold"], units, ok=ok)
            except Exception:
                log.exception("settling job %s failed again", job.id)
                await self.queue.settle_failed(job.id)


async def run_task(ctx: AppContext, job: Job) -> tuple[Any, Units, Any]:
    """A plain job's work: its payload through the router as the sync route would, the result stored."""
    task = Task(job.task)
    model = ctx.router.resolve(job.model, task)
    req = await build_request(task, job.payload, model.id, allow_private=ctx.settings.allow_private_urls,
                              media=ctx.media)
    result, deployment = await ctx.router.run(model, task, req, job.region)
    stored, units = await store_result(task, result, ctx.media)
    if job.meta.get("units"):  # priced as estimated at submit (studio modes price by mode, size, seconds)
        units = Units(**job.meta["units"])
    elif job.meta.get("estimate"):
        units = fill_units(units, Units(**job.meta["estimate"]))
    return stored, units, deployment
