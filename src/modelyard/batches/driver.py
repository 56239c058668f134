"""The batch driver: wherever runners run, it validates batches, admits their lines a window at a time, ends them.

Each pass claims batches with work left under a short lease (one driver per batch at a time, any driver after a
crash), takes each one step — validate the input file; release up to `batch_concurrency` lines into the job queue;
stop unfinished lines of an expired or cancelled batch; write the output and error files — and lets go. Lines
themselves run on the job runners like any job; the driver never runs a model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import InternalError, ModelyardError, RateLimited
from ..pipeline.auth import Principal, org_principal
from ..jobs.loop import passes
from ..store.repo import OrgRepo
from . import output
from .endpoints import ENDPOINTS, prepare
from .lines import PARKED, BatchLines, Parked
from .repo import Batch, BatchRepo
from .validate import validate

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)
CLAIM = 8  # batches one driver takes per pass


class LeaseLost(Exception):
    """Another driver holds the batch now (this one stalled past its lease): drop the step."""


def line_error(exc: ModelyardError) -> dict[str, Any]:
    """How a refused or failed line's answer is kept (the job runner keeps errors the same way)."""
    return {"message": exc.message, "code": exc.code, "type": exc.type, "status": exc.status, "param": exc.param}


class BatchDriver:
    def __init__(self, ctx: AppContext, repo: BatchRepo, lines: BatchLines) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.repo = repo
        self.lines = lines
        self.lease = max(s.job_lease_seconds, 2.0)
        self.poll = s.job_poll_seconds
        self.wake = asyncio.Event()
        self.orgs = OrgRepo(ctx.store)

    async def run_forever(self) -> None:
        await passes(self.pass_once, self.wake, self.poll, "batch driver")

    async def pass_once(self) -> None:
        claimed = await self.repo.claim(self.lease, CLAIM)
        if claimed:
            await asyncio.gather(*(self._step(b) for b in claimed))
        await self._webhooks()

    async def _step(self, batch: Batch) -> None:
        try:
            if batch.status == "validating":
                await self._validate(batch)
            else:
                await self._advance(batch)
        except LeaseLost:
            log.warning("batch %s: lease lost mid-step; another driver carries on", batch.id)
        except Exception:
            log.exception("batch %s: step failed; retried next pass", batch.id)
        finally:
            with contextlib.suppress(Exception):
                await self.repo.let_go(batch)

    async def _principal(self, batch: Batch) -> Principal:
        """Whom the lines are admitted for: the batch's org as it is now."""
        return await org_principal(self.orgs, batch.org_id, batch.token_id)

    # ---------------------------------------------------------------- validating

    async def _validate(self, batch: Batch) -> None:
        s = self.ctx.settings
        await self.lines.clear(batch.id)  # a validation a dead driver left half done starts over
        principal = await self._principal(batch)
        endpoint = ENDPOINTS[batch.endpoint]

        async def accept(rows: list[Any]) -> None:
            if not await self.repo.renew(batch, self.lease):
                raise LeaseLost
            await self.lines.park(batch_id=batch.id, org_id=batch.org_id, token_id=batch.token_id,
                                  priority=s.batch_priority, max_attempts=s.job_max_attempts, rows=rows,
                                  base_url=batch.base_url)

        try:
            outcome = await validate(self.ctx, endpoint, principal.plan,
                                     self.ctx.files.lines(batch.org_id, batch.input_file_id,
                                                          max_line_bytes=s.batch_max_input_bytes), accept)
        except ModelyardError as exc:  # the input file is gone, or a line has no end
            outcome = None
            errors = [{"code": exc.code, "message": exc.message, "param": "input_file_id", "line": None}]
        else:
            errors = outcome.errors
        now = time.time()
        if errors:
            await self.lines.clear(batch.id)
            if await self.repo.advance(batch, status="failed", failed_at=now, errors=errors,
                                       **await self._webhook_due(batch)):
                log.info("batch %s failed validation (%d problems)", batch.id, len(errors))
            return
        assert outcome is not None
        fresh = await self.repo.fresh(batch)
        if fresh is None:
            raise LeaseLost
        values: dict[str, Any] = {"total": outcome.lines, "model": outcome.model}
        if fresh.status == "validating":  # else cancelled meanwhile: the lines end as never run
            values.update(status="in_progress", in_progress_at=now)
        await self.repo.advance(batch, **values)
        self.wake.set()

    # ---------------------------------------------------------------- running and ending

    async def _advance(self, batch: Batch) -> None:
        b = await self.repo.fresh(batch)
        if b is None:
            raise LeaseLost
        now = time.time()
        if b.status == "in_progress" and b.ending is None and now >= b.expires_at:
            await self.repo.advance(b, ending="expired")
            b.ending = "expired"
        if b.ending == "cancelled" and b.in_progress_at is None and b.total == 0:
            await self._cancel_unvalidated(b)
            return
        if b.ending is not None:
            await self.stop(b)
            counts = await self.lines.counts(b.id)
            if counts.get("running") or counts.get("pending") or counts.get(PARKED):
                return  # running lines stop at their runner's next heartbeat
            await self._finish(b, b.ending)
            return
        if b.status == "in_progress":
            counts = await self.lines.counts(b.id)
            in_flight = counts.get("pending", 0) + counts.get("running", 0)
            if parked := counts.get(PARKED, 0):
                room = self.ctx.settings.batch_concurrency - in_flight
                if in_flight and room < min(parked, self._group(b)):
                    return  # a model that batches dynamically gets its lines in groups, not one at a time
                await self._dispatch(b, room)
                return
            if in_flight:
                return
            if not await self.repo.advance(b, status="finalizing", finalizing_at=now):
                raise LeaseLost
            b.status = "finalizing"
        if b.status == "finalizing":
            await self._finish(b, "completed")

    async def _cancel_unvalidated(self, b: Batch) -> None:
        """Cancelled before validation finished: no line was accepted, yet every request of the input file ends in
        the error file as `batch_cancelled`, as OpenAI accounts for them (a file that cannot be read: none)."""
        await self.lines.clear(b.id)  # a validation a dead driver left half done
        try:
            file_id, n = await output.write_cancelled_input(self.ctx, b, self.ctx.settings.batch_max_input_bytes)
        except ModelyardError as exc:  # the input file is gone, or a line has no end
            log.info("batch %s cancelled before validation; its input is unreadable: %s", b.id, exc.message)
            file_id, n = None, 0
        if await self.repo.advance(b, status="cancelled", cancelled_at=time.time(), error_file_id=file_id, total=n,
                                   completed=0, failed=n, usage=output.Totals().usage(),
                                   **await self._webhook_due(b)):
            log.info("batch %s cancelled before validation: %d requests", b.id, n)

    def _group(self, b: Batch) -> int:
        """How many lines to release together: half the window for a model that batches dynamically (a local
        embedder), so one group runs while the next is queued; 1 (as room frees) for any other."""
        if b.model is None or self.ctx.router.batch_size(b.model) < 2:
            return 1
        return max(1, self.ctx.settings.batch_concurrency // 2)

    async def stop(self, b: Batch) -> None:
        """End what has not run (refunding queued lines' holds) and flag what runs, for an expired or cancelled
        batch. Also the cancel route's first move, so queued lines drop at once."""
        code, message = output.NEVER_RAN.get(b.ending or "cancelled", output.NEVER_RAN["cancelled"])
        for job_id, hold in await self.lines.stop_waiting(b.id, code, message):
            await self.ctx.calls.settle_hold(hold, None, ok=False)
            await self.ctx.jobs.queue.settled(job_id)
        runner = self.ctx.jobs.runner if self.ctx.jobs is not None else None
        for job_id in await self.lines.stop_running(b.id):
            if runner is not None:
                runner.cancel_local(job_id)

    async def _dispatch(self, b: Batch, room: int) -> None:
        """Admit the next `room` parked lines on the call path and queue them; a line the call path refuses ends
        with that answer; a rate limit leaves the rest parked for a later pass."""
        if room <= 0:
            return
        ctx = self.ctx
        principal = await self._principal(b)
        endpoint = ENDPOINTS[b.endpoint]
        released: list[tuple[Parked, str, str, dict[str, Any]]] = []
        try:
            for p in await self.lines.parked(b.id, room):
                try:
                    line = await prepare(ctx, endpoint, p.payload, b.org_id)
                    call = await ctx.calls.admit(principal, line.model, line.task, line.admitted, job=True,
                                                 estimate=line.estimate, field_prefix="body.",
                                                 price_factor=ctx.settings.batch_price_factor, dialect="batches")
                except RateLimited:
                    break
                except ModelyardError as exc:
                    await self.lines.refuse(p, line_error(exc))
                    continue
                except Exception:  # a bug in one line's preparation must not hold the whole batch until it expires
                    log.exception("batch %s: line %d could not be admitted", b.id, p.line)
                    await self.lines.refuse(p, line_error(InternalError("The line could not be admitted.")))
                    continue
                hold = {**call.hold(), "job_id": p.id}  # the gate's key to recognize a repeated settlement
                released.append((p, line.model.id, line.task.value,
                                 {**p.meta, "hold": hold, "endpoint": b.endpoint, "batch_id": b.id}))
        except BaseException:
            # a shutdown or a failure mid-pass: nothing was queued, so what was reserved goes back (the lines stay
            # parked, and the next pass admits them again)
            for _, _, _, meta in released:
                await ctx.calls.settle_hold(meta["hold"], None, ok=False)
            raise
        if not released:
            return
        try:
            queued = set(await self.lines.release(released))
        except BaseException:  # not queued (one transaction): the reservations go back, the lines stay parked
            for _, _, _, meta in released:
                await ctx.calls.settle_hold(meta["hold"], None, ok=False)
            raise
        for p, _, _, meta in released:
            if p.id not in queued:  # cancelled while it was being admitted: its reservation goes back
                await ctx.calls.settle_hold(meta["hold"], None, ok=False)
        if ctx.jobs is not None and ctx.jobs.runner is not None:
            ctx.jobs.runner.nudge()

    async def _finish(self, b: Batch, final: str) -> None:
        """Write the files (each only once: an interrupted finalization keeps what it wrote), then the end state."""
        counts = await self.lines.counts(b.id)
        completed = counts.get("completed", 0)
        others = sum(n for status, n in counts.items() if status != "completed")
        totals = output.Totals()
        if completed and b.output_file_id is None:
            b.output_file_id = await output.write(self.ctx, self.lines, b, completed=True, totals=totals)
            if not await self.repo.advance(b, output_file_id=b.output_file_id):
                raise LeaseLost
        elif completed:
            totals = await output.usage_only(self.lines, b)
        if others and b.error_file_id is None:
            b.error_file_id = await output.write(self.ctx, self.lines, b, completed=False, totals=output.Totals())
            if not await self.repo.advance(b, error_file_id=b.error_file_id):
                raise LeaseLost
        now = time.time()
        at = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[final]
        if await self.repo.advance(b, status=final, **{at: now}, completed=completed, failed=others,
                                   total=completed + others, usage=totals.usage(), **await self._webhook_due(b)):
            log.info("batch %s %s: %d completed, %d failed", b.id, final, completed, others)

    # ---------------------------------------------------------------- webhooks

    async def _webhook_url(self, org_id: str) -> str | None:
        org = await self.orgs.get(org_id)
        url = (org.profile or {}).get("webhook_url") if org is not None else None
        return url if isinstance(url, str) and url else None

    async def _webhook_due(self, b: Batch) -> dict[str, Any]:
        """The org's webhook endpoint (its profile's `webhook_url`), if set, is owed the batch's final event."""
        if await self._webhook_url(b.org_id) is None:
            return {}
        return {"webhook_status": "pending", "webhook_next_at": time.time()}

    async def _webhooks(self) -> None:
        if self.ctx.jobs is None:
            return
        sender = self.ctx.jobs.webhooks
        for b in await self.repo.due_webhooks():
            url = await self._webhook_url(b.org_id)
            if url is None:
                await self.repo.webhook_done(b.id, delivered=False, retry_at=None)
                continue
            event = {"id": "evt_" + b.id.removeprefix("batch_"), "object": "event", "type": f"batch.{b.status}",
                     "created_at": int(time.time()), "data": {"id": b.id}}
            ok, permanent = await sender.send(b.org_id, f"msg_{b.id}", url, orjson.dumps(event))
            await self.repo.webhook_done(b.id, delivered=ok,
                                         retry_at=sender.retry_at(b.webhook_attempts, ok, permanent))
