"""The batch service the routes call: create, read, list, cancel; it owns the driver and runs batch lines."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from ..catalog import Deployment
from ..errors import InvalidRequest, ModelyardError, NotFound
from ..jobs.queue import Job
from ..pipeline.auth import Principal
from ..pipeline.units import Units
from .driver import BatchDriver
from .endpoints import ENDPOINTS, execute, prepare
from .lines import BatchLines
from .repo import Batch, BatchRepo, new_batch_id

if TYPE_CHECKING:
    from ..context import AppContext

WINDOWS = {"24h"}  # OpenAI's only completion window; `batch_window_seconds` says how long it is here
MAX_METADATA = 16


class BatchService:
    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx
        self.repo = BatchRepo(ctx.store)
        self.lines = BatchLines(ctx.store)
        self.driver = BatchDriver(ctx, self.repo, self.lines)
        self._task: asyncio.Task[None] | None = None
        if ctx.jobs is not None:  # runners here run batch lines, and a line ending wakes the driver
            ctx.jobs.executors["batch_line"] = self.run_line
            ctx.jobs.listeners.append(self._line_ended)

    def start(self) -> None:
        """Drive batches from this process (where runners run)."""
        self._task = asyncio.create_task(self.driver.run_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _line_ended(self, job: Job) -> None:
        if job.meta.get("executor") == "batch_line":
            self.driver.wake.set()

    async def run_line(self, job: Job) -> tuple[Any, Units, Deployment]:
        """A runner's work on one admitted line: the endpoint's call, its response body, the units it is settled on."""
        line = await prepare(self.ctx, ENDPOINTS[job.meta["endpoint"]], job.payload, job.org_id)
        base = self.ctx.settings.public_url or job.meta.get("base_url") or "http://localhost/"
        body, units, deployment = await execute(self.ctx, line, job.region, base)
        return body, units if units is not None else line.estimate, deployment

    # ---------------------------------------------------------------- clients

    async def create(self, principal: Principal, body: dict[str, Any], base_url: str) -> Batch:
        file_id = body.get("input_file_id")
        if not isinstance(file_id, str) or not file_id:
            raise InvalidRequest("'input_file_id' is required.", param="input_file_id",
                                 code="missing_required_parameter")
        endpoint = body.get("endpoint")
        if endpoint not in ENDPOINTS:
            raise InvalidRequest(f"'endpoint' is one of {', '.join(ENDPOINTS)}.", param="endpoint")
        window = body.get("completion_window")
        if window not in WINDOWS:
            raise InvalidRequest("'completion_window' must be '24h'.", param="completion_window")
        metadata = _metadata(body.get("metadata"))
        expires_after = _output_expiry(body.get("output_expires_after"))
        file = await self.ctx.files.get(principal.org_id, file_id)  # another org's file is a 404 like a missing one
        if file.purpose != "batch":
            raise InvalidRequest(f"File '{file_id}' has purpose '{file.purpose}'; a batch reads a 'batch' file.",
                                 param="input_file_id")
        now = time.time()
        batch = await self.repo.create(id=new_batch_id(), org_id=principal.org_id, token_id=principal.token_id,
                                       endpoint=endpoint, model=None, input_file_id=file_id,
                                       completion_window=window, status="validating", meta=metadata,
                                       output_expires_after=expires_after, base_url=base_url, created_at=now,
                                       expires_at=now + self.ctx.settings.batch_window_seconds)
        self.driver.wake.set()
        return batch

    async def get(self, principal: Principal, batch_id: str) -> Batch:
        batch = await self.repo.get(batch_id, org_id=principal.org_id)
        if batch is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        return batch

    async def list(self, principal: Principal, *, limit: int, after: str | None) -> tuple[list[Batch], bool]:
        cursor = None
        if after:
            last = await self.repo.get(after, org_id=principal.org_id)
            if last is None:
                raise NotFound(f"No batch found with id '{after}'.", param="after", code="batch_not_found")
            cursor = (last.created_at, last.id)
        rows = await self.repo.list(principal.org_id, limit=limit + 1, after=cursor)
        return rows[:limit], len(rows) > limit

    async def cancel(self, principal: Principal, batch_id: str) -> Batch:
        """`cancelling` at once: queued lines dropped now, running ones stop at their next heartbeat, finished ones
        kept; the driver writes the files and ends it `cancelled`. A finished batch is a 409 and stays as it is."""
        batch, moved = await self.repo.cancel(batch_id, principal.org_id)
        if batch is None:
            raise NotFound(f"No batch found with id '{batch_id}'.", param="batch_id", code="batch_not_found")
        if batch.final:
            raise ModelyardError(f"Cannot cancel a batch with status '{batch.status}'.", param="batch_id",
                                 code="batch_not_cancellable", status=409)
        if moved:
            await self.driver.stop(batch)
            self.driver.wake.set()
        return batch

    async def public(self, batch: Batch) -> dict[str, Any]:
        """OpenAI's object; a batch still running counts its lines now (a finished one keeps its final counts)."""
        if batch.final or batch.status == "validating":
            return batch.public()
        counts = await self.lines.counts(batch.id)
        completed = counts.get("completed", 0)
        failed = counts.get("failed", 0) + counts.get("dead_letter", 0) + counts.get("cancelled", 0)
        total = batch.total or sum(counts.values())
        return batch.public((total, completed, failed))


def _metadata(value: Any) -> dict[str, str] | None:
    """OpenAI's metadata: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA:
        raise InvalidRequest(f"'metadata' is an object of at most {MAX_METADATA} string pairs.", param="metadata")
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > 64 or len(v) > 512:
            raise InvalidRequest("'metadata' keys are at most 64 characters and values strings of at most 512.",
                                 param=f"metadata.{k[:64]}")
    return value


def _output_expiry(value: Any) -> int | None:
    """`output_expires_after: {anchor: "created_at", seconds}` (an hour to thirty days) for the output files."""
    if value is None:
        return None
    if not isinstance(value, dict) or value.get("anchor") != "created_at":
        raise InvalidRequest("'output_expires_after' is {anchor: 'created_at', seconds}.",
                             param="output_expires_after.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, bool) or not isinstance(seconds, int) or not 3600 <= seconds <= 30 * 86400:
        raise InvalidRequest("'output_expires_after.seconds' is from 3600 to 2592000.",
                             param="output_expires_after.seconds")
    return seconds

