"""The job service the routes call: submit (admit + hold + queue), read, wait, cancel; it owns the runners."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Callable

from ..pipeline.billing import payload_estimate
from ..errors import InvalidRequest, NotFound
from ..logs import REQUEST
from ..net import check_url
from ..pipeline.auth import Principal
from ..pipeline.calls import Client
from ..pipeline.units import Units
from ..types import Task
from .queue import STATUSES, Job, JobQueue, new_job_id, usage_sum
from .runner import Executor, JobRunner
from .tasks import signed, validate_payload
from .webhooks import WebhookSender, load_master, org_secret

if TYPE_CHECKING:
    from ..context import AppContext

log = logging.getLogger(__name__)


class JobService:
    def __init__(self, ctx: AppContext) -> None:
        s = ctx.settings
        self.ctx = ctx
        self.settings = s
        self.queue = JobQueue(ctx.store, backoff=s.job_backoff_seconds, backoff_max=s.job_backoff_max_seconds)
        self.master = load_master(s.webhook_secret, s.data_dir)
        self.runner: JobRunner | None = None
        self.webhooks = WebhookSender(self.queue, self.master, render=self.webhook_body,
                                      allow_private=s.allow_private_urls, timeout=s.webhook_timeout_seconds,
                                      max_attempts=s.webhook_max_attempts, backoff=s.webhook_backoff_seconds)
        # kinds of job other features run (a batch line), and who hears of each job that ends here
        self.executors: dict[str, Executor] = {}
        self.listeners: list[Callable[[Job], None]] = []
        self._waiters: dict[str, list[asyncio.Future]] = {}
        self._tasks: list[asyncio.Task] = []

    # ---------------------------------------------------------------- lifecycle

    def start(self, *, runner: bool) -> None:
        """Runners in this process (unless turned off); webhooks are delivered wherever runners run."""
        if runner:
            self.runner = self.make_runner()
            self._tasks.append(asyncio.create_task(self.runner.run_forever()))
            self._tasks.append(asyncio.create_task(self.webhooks.run_forever(self.settings.job_poll_seconds)))

    def make_runner(self, name: str | None = None) -> JobRunner:
        return JobRunner(self.ctx, self.queue, name=name, on_final=self._finalized, on_retry=self._retrying,
                         executors=self.executors)

    def _retrying(self, job: Job) -> None:
        for listener in self.listeners:  # listeners see the job's status: `pending` again here
            listener(job)

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _finalized(self, job: Job) -> None:
        for listener in self.listeners:
            listener(job)
        for fut in self._waiters.pop(job.id, []):
            if not fut.done():
                fut.set_result(None)
        if job.webhook_url:
            self.webhooks.wake.set()

    # ---------------------------------------------------------------- submit

    async def submit(self, principal: Principal, model: Any, task: Task, payload: dict[str, Any], *,
                     face: str, base_url: str, region: str | None = None, priority: int = 0,
                     max_attempts: int | None = None, webhook_url: str | None = None,
                     estimate: Units | None = None, extra_meta: dict[str, Any] | None = None,
                     payload_prefix: str = "", validate: bool = True, field: str | None = None,
                     client: Client | None = None) -> Job:
        """Validate, admit on the call path (reserving the price), queue. Nothing is queued on a 4xx. `field` names
        the prompt in a content-filter refusal where the face calls it something else (studio's positive_prompt);
        `client`, the HTTP request submitting it, gets the rate-limit headers the admission earned."""
        if validate:
            validate_payload(task, payload, model.id, payload_prefix)
        if webhook_url is not None:
            await check_url(webhook_url, "webhook_url", allow_private=self.settings.allow_private_urls)
        for key in ("image_url", "audio_url"):  # refused now; the runner's fetch refuses again at connect time
            url = payload.get(key)
            if isinstance(url, str) and url.startswith(("http://", "https://")):
                await check_url(url, payload_prefix + key, allow_private=self.settings.allow_private_urls)
        if estimate is None:  # reserve what the job may cost, as a sync call would
            estimate = payload_estimate(task, payload)
        call = await self.ctx.calls.admit(principal, model, task, payload, client=client, job=True, estimate=estimate,
                                          field=field, field_prefix=payload_prefix)
        job_id = new_job_id()
        hold = {**call.hold(), "job_id": job_id}  # the gate's key to recognize a repeated settlement
        meta = {"face": face, "base_url": base_url, "hold": hold, **(extra_meta or {})}
        submitted_by = REQUEST.get()
        if submitted_by is not None:  # its runs' log lines name the request that submitted it
            meta["request_id"] = submitted_by.request_id
        if self.ctx.tracing is not None:  # its runs continue this request's trace, wherever they run
            trace = self.ctx.tracing.traceparent()
            if trace:
                meta["trace"] = trace
        if estimate.mode:
            meta["units"] = asdict(estimate)
        else:  # completes the result's units where a result cannot say (size tier, characters)
            meta["estimate"] = asdict(estimate)
        try:
            job = await self.queue.submit(org_id=principal.org_id, token_id=principal.token_id, model=model.id,
                                          task=task.value, payload=payload, meta=meta, priority=priority,
                                          max_attempts=max_attempts or self.settings.job_max_attempts,
                                          region=region, webhook_url=webhook_url, job_id=job_id)
        except BaseException:
            await self.ctx.calls.settle_hold(hold, None, ok=False)
            raise
        if self.runner is not None:
            self.runner.nudge()
        return job

    # ---------------------------------------------------------------- read, wait, cancel

    async def get(self, job_id: str, principal: Principal) -> Job:
        """Another org's job is as absent as a job that never existed."""
        job = await self.queue.get(job_id, org_id=principal.org_id)
        if job is None:
            raise NotFound(f"No job '{job_id}'.", param="id", code="job_not_found")
        return job

    async def list(self, principal: Principal, *, status: str | None, limit: int, after: str | None
                   ) -> tuple[list[Job], bool]:
        if status is not None and status not in STATUSES:
            raise InvalidRequest(f"'status' is one of {', '.join(STATUSES)}.", param="status")
        cursor = None
        if after:
            last = await self.queue.get(after, org_id=principal.org_id)
            if last is None:
                raise InvalidRequest(f"'after' names no job of yours: '{after}'.", param="after")
            cursor = (last.created_at, last.id)
        rows = await self.queue.list(principal.org_id, status=status, limit=limit + 1, after=cursor)
        return rows[:limit], len(rows) > limit

    async def wait(self, job: Job, timeout: float) -> Job:
        """Until the job is final or `timeout` passes: woken at once by a runner here, else polling the row."""
        deadline = time.monotonic() + timeout
        poll = min(self.settings.job_poll_seconds, 0.5)
        while not job.final:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            fut = asyncio.get_running_loop().create_future()
            waiters = self._waiters.setdefault(job.id, [])
            waiters.append(fut)
            try:
                await asyncio.wait_for(fut, min(poll, left))
            except asyncio.TimeoutError:
                pass
            finally:  # a job finished by another process never fires our futures: drop them here
                if fut in waiters:
                    waiters.remove(fut)
                if not waiters and self._waiters.get(job.id) is waiters:
                    del self._waiters[job.id]
            fresh = await self.queue.get(job.id)
            job = fresh or job
        return job

    async def cancel(self, job_id: str, principal: Principal) -> tuple[Job, str]:
        """('cancelled' | 'requested' | 'final'); a pending job is refunded here, a running one by its runner."""
        job, outcome = await self.queue.cancel(job_id, principal.org_id)
        if job is None:
            raise NotFound(f"No job '{job_id}'.", param="id", code="job_not_found")
        if outcome == "cancelled":
            if job.meta.get("hold") is not None:  # never ran: the whole reservation goes back
                await self.ctx.calls.settle_hold(job.meta["hold"], None, ok=False)
                await self.queue.settled(job.id)
            self._finalized(job)
        elif outcome == "requested" and self.runner is not None:
            self.runner.cancel_local(job.id)
        return job, outcome

    # ---------------------------------------------------------------- rendering

    def base_url(self, job: Job) -> str:
        return self.settings.public_url or job.meta.get("base_url") or "http://localhost/"

    def result(self, job: Job, base_url: str | None = None) -> Any:
        return signed(job.result, self.ctx.media, base_url or self.base_url(job))

    def public(self, job: Job, base_url: str | None = None) -> dict[str, Any]:
        body = job.public()
        body["result"] = self.result(job, base_url)
        return body

    async def detail(self, job: Job, base_url: str | None = None) -> dict[str, Any]:
        """One job as GET /api/jobs/{id} shows it: the list's view plus the request it was given (long strings
        shortened), its place in the queue while pending, and what it used and cost once settled."""
        body = self.public(job, base_url)
        body["payload"] = shortened(job.payload)
        body["queue_position"] = await self.queue.queue_position(job) if job.status == "pending" else None
        rows = await self.queue.usage(job) if job.final else []
        body["usage"] = usage_sum(rows) if rows else None
        return body

    async def webhook_body(self, job: Job) -> dict[str, Any]:
        """fal's webhook shape (request_id, status OK/ERROR, payload) plus the job API's fields."""
        ok = job.status == "completed"
        return {"request_id": job.id, "gateway_request_id": job.id, "job_id": job.id, "status": "OK" if ok else "ERROR",
                "job_status": job.status, "payload": self.result(job) if ok else None,
                "error": None if ok else (job.error or {}).get("message"), "created_at": int(job.created_at),
                "finished_at": int(job.finished_at) if job.finished_at else None}

    def webhook_secret(self, org_id: str) -> str:
        return org_secret(self.master, org_id)


SHOWN_CHARS = 2000  # a payload string longer than this (an uploaded file's base64) is shown cut, with its length


def shortened(value: Any) -> Any:
    if isinstance(value, str) and len(value) > SHOWN_CHARS:
        return f"{value[:200]}… ({len(value):,} characters)"
    if isinstance(value, dict):
        return {k: shortened(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shortened(v) for v in value]
    return value
