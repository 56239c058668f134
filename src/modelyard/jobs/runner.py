"""A job runner: claims jobs with a lease, renews it while working, finishes them through the router, settles."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
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
from .queue import FLUSH_MAX, NOTIFY_CHANNEL, Job, JobQueue
from .tasks import build_request, store_result

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)


# how long a runner whose claim for a NOTIFY found nothing leaves the next NOTIFYs to the other runners (seconds)
HERD_QUIET = 0.05

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
        # claimed jobs still at work (a lease renewal, a cancel or a shutdown may stop them), by id
        self.working: dict[str, Job] = {}
        # finished work waiting for the next flush: (job, result, meta to store or None, told whether it counted)
        self.finished: list[tuple[Job, Any, dict[str, Any] | None, asyncio.Future[bool]]] = []
        # jobs (not riders) whose result waits for a flush or is being written: up to `concurrency` of them leave
        # their slot to the next job (a claim need not wait for a completion's commit)
        self.unwritten: set[str] = set()
        self.flushing: asyncio.Future[None] | None = None
        self.flush_failed_at = 0.0  # a failed flush is retried after the poll interval
        self.lane = queue.lane()  # the connection the loop's claims and renewals go through, kept between them
        # completions go through a connection of their own: a claim never waits behind a completion's commit (the
        # one that waits for the WAL to reach the disk), and the next jobs run while the last ones are written
        self.flush_lane = queue.lane()
        # batch lines claimed beside a line of the same batch and model (a group for a dynamic batcher): they run
        # like any job but take no slot of their own, the group counts as one
        self.riders: set[str] = set()
        self.cancelling: set[str] = set()
        self.completed = 0  # counters for /metrics and the bench
        # news of jobs (a NOTIFY, a nudge, the poll) heard, and how much of it the last claim that came back short
        # had heard: a runner claims only when there may be more than that claim found (_claim)
        self.heard = 1
        self.looked = 0
        self.last_claim = 0.0
        self.quiet_until = 0.0  # until when it leaves NOTIFYs to the other runners
        self.stopping = False
        self.metrics = ctx.metrics  # None outside a server with metrics on (a standalone runner)

    # ---------------------------------------------------------------- the loop

    async def run_forever(self) -> None:
        """One loop per runner does all its queue writes, each a single statement for many jobs: the results that
        finished since its last pass (one UPDATE), then claims for the slots free (one UPDATE ... RETURNING), lease
        renewals every heartbeat (one UPDATE), and the reaper every so often. While a statement is in flight more
        work finishes, so the batches grow with the load by themselves (no timer holds a result back)."""
        listener = await self._listen()
        last_reap = 0.0
        last_renew = time.monotonic()
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
                    if time.monotonic() - last_renew >= self.heartbeat:
                        last_renew = time.monotonic()
                        await self._renew()
                    if (self.finished and (self.flushing is None or self.flushing.done())
                            and time.monotonic() >= self.flush_failed_at + self.poll):
                        # in the background, on its own connection; one at a time, so a runner's results are
                        # written in order and a failed batch goes back to the head of the line
                        self.flushing = asyncio.ensure_future(self._flush())
                        self.flushing.add_done_callback(self._flushed)
                    if time.monotonic() - self.last_claim >= self.poll:  # the fallback: look now and then anyway
                        self.heard += 1
                    if (self.busy < self.concurrency and self.heard > self.looked
                            and time.monotonic() >= self.quiet_until):
                        worked = await self._claim() or worked
                except Exception:
                    log.exception("job runner pass failed; retrying after %.1fs", self.poll)
                    await asyncio.sleep(self.poll)  # not at once, results waiting or not: the database may be down
                if worked and not self.active:  # once per burst of work, not per poll: the queue is drained
                    worked = False
                    log.info("runner %s idle: waiting for a NOTIFY or the next poll in %.1fs", self.name, self.poll)
                flush_now = (self.finished and (self.flushing is None or self.flushing.done())
                             and time.monotonic() >= self.flush_failed_at + self.poll)
                if not flush_now:
                    wait = self.poll
                    if self.working or self.active:  # a renewal is due before the next poll
                        wait = min(wait, last_renew + self.heartbeat - time.monotonic())
                    if self.heard > self.looked and self.busy < self.concurrency:
                        # heard while quiet: claim for it when the quiet ends (with every slot taken, a job's end
                        # wakes the loop: waiting for a quiet long over made it spin through the whole drain)
                        wait = min(wait, self.quiet_until - time.monotonic())
                    if self.finished and self.flush_failed_at:  # a failed flush: retry when its pause ends
                        wait = min(wait, self.flush_failed_at + self.poll - time.monotonic())
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(max(0.0, wait)):  # no task per wait, unlike wait_for
                            await self.wake.wait()
                self.wake.clear()
        finally:
            await self._stop(listener)

    def _wake(self, _task: asyncio.Task | None = None) -> None:
        self.wake.set()

    def _flushed(self, task: asyncio.Future[None]) -> None:
        """A flush ended: the loop may start the next (its results kept for a retry after the poll, if it failed)."""
        if not task.cancelled() and task.exception() is not None:
            log.error("writing %d job results failed; retrying after %.1fs", len(self.finished), self.poll,
                      exc_info=task.exception())
            self.flush_failed_at = time.monotonic()
        else:
            self.flush_failed_at = 0.0
        self.wake.set()

    def nudge(self, *_: Any) -> None:
        """Jobs were made (a NOTIFY from anywhere, or a submit in this process): claim if a slot is free."""
        self.heard += 1
        self.wake.set()

    async def _claim(self) -> bool:
        """Fill the free slots, a claim (one statement) at a time. Returns whether anything was claimed.

        A claim that comes back short has seen the queue empty: the runner claims again only on news of jobs
        made since (a NOTIFY, a nudge, a retry of its own falling due, the poll), not after each job it finishes.
        Every runner with a free slot hears each NOTIFY and only one can win its job: a runner whose claim found
        nothing (another runner took it) leaves the next NOTIFYs to the others for a short, random while
        (HERD_QUIET), then claims once for all it heard meanwhile. So a stream of NOTIFYs costs a losing runner
        one claim per quiet period, not one per NOTIFY, while the runner that won keeps answering at once; claims
        never wait on each other (SKIP LOCKED).
        """
        worked = False
        while self.busy < self.concurrency:
            seen, want = self.heard, self.concurrency - self.busy
            self.last_claim = time.monotonic()
            claimed = await self.queue.claim(self.name, self.lease, want, lane=self.lane)
            short = len(claimed) < want
            claimed += await self._groups(claimed)
            if self.metrics is not None:
                for job in claimed:  # started_at is the claim's own clock reading
                    self.metrics.claimed(job.task, (job.started_at or job.run_after) - job.run_after)
            for job in claimed:
                self.working[job.id] = job
                self.active[job.id] = asyncio.create_task(self._work(job))
                self.active[job.id].add_done_callback(self._wake)
            if claimed:
                worked = True  # a fast job may be done before this pass ends
            elif not worked:
                self.quiet_until = time.monotonic() + random.uniform(HERD_QUIET / 2, HERD_QUIET)
            if short:
                self.looked = seen  # news heard while this claim was in flight still counts
                break
        return worked

    async def _flush(self) -> None:
        """Write the results finished since the last flush (up to FLUSH_MAX) in one statement; tell each job whether
        it counted. A failed write keeps them for the next pass (their leases, renewed meanwhile, keep them ours)."""
        batch, self.finished = self.finished[:FLUSH_MAX], self.finished[FLUSH_MAX:]  # one statement: all or nothing
        try:
            won = await self.queue.complete_many([(job, result, meta) for job, result, meta, _ in batch],
                                                 lane=self.flush_lane)
        except BaseException:
            self.finished[:0] = batch
            raise
        for job, _, _, told in batch:
            self.unwritten.discard(job.id)
            if not told.done():
                told.set_result(job.id in won)

    async def _renew(self) -> None:
        """Every heartbeat, one statement extends the leases of every job still at work here; a job whose lease
        was lost (another runner owns it now) or whose cancel was asked for is stopped. Results waiting for a flush
        are renewed too (a flush that failed is retried, and their leases must hold until it is)."""
        held = [*self.working.values(), *(job for job, _, _, _ in self.finished)]
        if not held:
            return
        try:
            ours = await self.queue.renew_many(held, self.lease, lane=self.lane)
        except Exception:
            log.exception("renewing %d job leases failed", len(held))
            if self.metrics is not None:
                self.metrics.lease_renewals.labels("error").inc(len(held))
            return
        waiting = {job.id for job, _, _, _ in self.finished}
        for job in held:
            if job.id not in ours and job.id not in self.working and job.id not in waiting:
                continue  # it was written (completed) while the renewal was in flight
            if self.metrics is not None:
                self.metrics.lease_renewals.labels("renewed" if job.id in ours else "lost").inc()
            if job.id not in self.working:  # its result waits for the flush, which decides
                continue
            if job.id not in ours:
                log.warning("job %s: lease lost, dropping its work", job.id)
                self._interrupt(job.id)
            elif ours[job.id]:
                self.cancelling.add(job.id)
                self._interrupt(job.id)

    def _interrupt(self, job_id: str) -> bool:
        """Stop a job's work, only while it is at work: a job whose result waits for the flush is past stopping."""
        task = self.active.get(job_id)
        if task is None or job_id not in self.working:
            return False
        task.cancel()
        return True

    @property
    def busy(self) -> int:
        """Slots in use: running jobs, a group of batch lines counting as one. A job whose result waits to be
        written gives its slot to the next one, up to `concurrency` such jobs (at most twice `concurrency` jobs in
        hand: the results still bounded when the database is slow to write them)."""
        return len(self.active) - len(self.riders) - min(len(self.unwritten), self.concurrency)

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
                more = await self.queue.claim_group(self.name, self.lease, batch_id=batch_id, model=model, limit=room,
                                                    lane=self.lane)
                self.riders.update(j.id for j in more)
                extra += more
        return extra

    async def _stop(self, listener: Any) -> None:
        """Shutting down: finished results are written, running jobs go back to the queue at once instead of
        waiting out their lease."""
        self.stopping = True
        if self.flushing is not None:  # a write in flight may have committed: wait for it
            with contextlib.suppress(BaseException):
                await asyncio.shield(self.flushing)
        if self.finished:
            with contextlib.suppress(Exception):  # not written: their leases run out and another runner redoes them
                await self._flush()
            await asyncio.sleep(0)
        for task in list(self.active.values()):
            task.cancel()
        for task in list(self.active.values()):
            with contextlib.suppress(BaseException):
                await task
        await self.lane.aclose()
        await self.flush_lane.aclose()
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
            await conn.add_listener(NOTIFY_CHANNEL, self.nudge)
            return conn
        except Exception as exc:
            log.warning("LISTEN failed (%s); the runner polls every %.1fs", exc, self.poll)
            return None

    def cancel_local(self, job_id: str) -> bool:
        """A cancel for a job this runner holds: stop its work now rather than at the next heartbeat."""
        if job_id not in self.working or job_id not in self.active:
            return False
        self.cancelling.add(job_id)
        return self._interrupt(job_id)

    # ---------------------------------------------------------------- one job

    async def _work(self, job: Job) -> None:
        if job.meta.get("request_id"):  # this job's log lines (a task of its own) name the request that submitted it
            REQUEST.set(RequestInfo(job.meta["request_id"]))
        try:
            try:
                result, units, deployment = await self._execute(job)
            finally:
                self.working.pop(job.id, None)  # from here on nothing interrupts it: its outcome is being written
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
            told: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
            self.finished.append((job, result, meta, told))
            if job.id not in self.riders:
                self.unwritten.add(job.id)
            self.wake.set()
            if await told:  # the runner's next flush wrote it, and the lease was still ours
                job.status, job.result = "completed", result
                self.completed += 1
                log.info("job %s completed by %s (attempt %d)", job.id, self.name, job.attempts)
                await self._settle(job, ok=True, units=units, deployment=deployment)
        finally:
            self.cancelling.discard(job.id)
            self.unwritten.discard(job.id)
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
        if status == "pending":  # back in the queue after its backoff: look for it then (the others poll)
            asyncio.get_running_loop().call_later(self.queue.delay(job.attempts, job.meta.get("backoff_seconds")),
                                                  self.nudge)
        if status == "pending" and self.on_retry is not None:
            job.status, job.error = status, error
            self.on_retry(job)
        if status in ("failed", "dead_letter"):
            job.status, job.error = status, error
            await self._settle(job, ok=False)

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
