"""The batches table: create, read, list; a driver's short lease on a batch; cancel; webhook bookkeeping."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, fields
from typing import Any, Mapping

from sqlalchemy import insert, or_, select, update

from ..store.db import Store
from ..store.paging import newest_first
from ..store import webhook_rows
from ..store.tables import batches

# states a driver still has work in; the rest are final
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")
TIMES = ("created_at", "in_progress_at", "expires_at", "finalizing_at", "completed_at", "failed_at", "expired_at",
         "cancelling_at", "cancelled_at")


def new_batch_id() -> str:
    return "batch_" + secrets.token_hex(12)


@dataclass
class Batch:
    id: str
    org_id: str
    token_id: str | None
    endpoint: str
    model: str | None
    input_file_id: str
    completion_window: str
    status: str
    ending: str | None
    errors: list[dict[str, Any]] | None
    meta: dict[str, str] | None
    output_expires_after: int | None
    output_file_id: str | None
    error_file_id: str | None
    total: int
    completed: int
    failed: int
    usage: dict[str, Any] | None
    base_url: str | None
    created_at: float
    expires_at: float
    in_progress_at: float | None
    finalizing_at: float | None
    completed_at: float | None
    failed_at: float | None
    expired_at: float | None
    cancelling_at: float | None
    cancelled_at: float | None
    driver_token: str | None
    webhook_attempts: int

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def public(self, counts: tuple[int, int, int] | None = None) -> dict[str, Any]:
        """OpenAI's batch object; `counts` (total, completed, failed) are live ones for a batch still running."""
        total, completed, failed = counts or (self.total, self.completed, self.failed)
        body: dict[str, Any] = {
            "id": self.id, "object": "batch", "endpoint": self.endpoint, "model": self.model,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id, "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id}
        for name in TIMES:
            value = getattr(self, name)
            body[name] = int(value) if value is not None else None
        body["request_counts"] = {"total": total, "completed": completed, "failed": failed}
        body["usage"] = self.usage
        body["metadata"] = self.meta
        return body


_FIELDS = tuple(f.name for f in fields(Batch))


def _batch(m: Mapping[str, Any]) -> Batch:
    return Batch(**{k: m[k] for k in _FIELDS})


class BatchRepo:
    """Every state change is one conditional UPDATE: a driver's only while its lease token is the row's, a
    client's cancel only from a state that can still be cancelled."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.engine = store.engine

    async def create(self, **row: Any) -> Batch:
        row = {"ending": None, "errors": None, "output_file_id": None, "error_file_id": None, "total": 0,
               "completed": 0, "failed": 0, "usage": None, "in_progress_at": None, "finalizing_at": None,
               "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
               "cancelled_at": None, "driver_token": None, "driver_expires": None, "webhook_status": None,
               "webhook_attempts": 0, "webhook_next_at": None, **row}
        async with self.engine.begin() as conn:
            await conn.execute(insert(batches).values(**row))
        return _batch(row)

    async def get(self, batch_id: str, *, org_id: str | None = None) -> Batch | None:
        q = select(batches).where(batches.c.id == batch_id)
        if org_id is not None:
            q = q.where(batches.c.org_id == org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _batch(row._mapping) if row else None

    async def list(self, org_id: str, *, limit: int, after: tuple[float, str] | None) -> list[Batch]:
        """Newest first, as OpenAI lists them; `after` is the (created_at, id) of the previous page's last."""
        q = newest_first(select(batches).where(batches.c.org_id == org_id), batches, after, limit)
        async with self.engine.connect() as conn:
            return [_batch(r._mapping) for r in (await conn.execute(q)).all()]

    # ---------------------------------------------------------------- drivers

    async def claim(self, lease: float, limit: int) -> list[Batch]:
        """Batches with work left that no live driver holds, each now held by a fresh token for `lease` seconds."""
        now = time.time()
        async with self.engine.connect() as conn:
            ids = (await conn.execute(
                select(batches.c.id).where(batches.c.status.in_(ACTIVE),
                                           or_(batches.c.driver_expires.is_(None), batches.c.driver_expires < now))
                .order_by(batches.c.created_at).limit(limit))).scalars().all()
        won = []
        for batch_id in ids:  # one conditional UPDATE each: of two drivers racing for a batch, one wins it
            token = secrets.token_hex(8)
            q = (update(batches).where(batches.c.id == batch_id, batches.c.status.in_(ACTIVE),
                                       or_(batches.c.driver_expires.is_(None), batches.c.driver_expires < now))
                 .values(driver_token=token, driver_expires=now + lease).returning(*batches.c))
            async with self.engine.begin() as conn:
                row = (await conn.execute(q)).first()
            if row is not None:
                won.append(_batch(row._mapping))
        return won

    async def renew(self, batch: Batch, lease: float) -> bool:
        return await self.advance(batch, driver_expires=time.time() + lease)

    async def let_go(self, batch: Batch) -> None:
        """The driver is done with this pass: any driver may take the batch on its next one."""
        await self.advance(batch, driver_token=None, driver_expires=None)

    async def advance(self, batch: Batch, **values: Any) -> bool:
        """A driver's write, counted only while it still holds the batch; False when its lease was lost."""
        q = update(batches).where(batches.c.id == batch.id, batches.c.driver_token == batch.driver_token) \
            .values(**values)
        async with self.engine.begin() as conn:
            return (await conn.execute(q)).rowcount == 1

    async def fresh(self, batch: Batch) -> Batch | None:
        """The row as it is now (a client may have cancelled it), keeping this driver's token."""
        row = await self.get(batch.id)
        return row if row is not None and row.driver_token == batch.driver_token else None

    # ---------------------------------------------------------------- clients

    async def cancel(self, batch_id: str, org_id: str) -> tuple[Batch | None, bool]:
        """(the batch, whether this call moved it to `cancelling`)."""
        now = time.time()
        q = (update(batches).where(batches.c.id == batch_id, batches.c.org_id == org_id,
                                   batches.c.status.in_(("validating", "in_progress", "finalizing")))
             .values(status="cancelling", cancelling_at=now, ending="cancelled").returning(*batches.c))
        async with self.engine.begin() as conn:
            row = (await conn.execute(q)).first()
        if row is not None:
            return _batch(row._mapping), True
        return await self.get(batch_id, org_id=org_id), False

    # ---------------------------------------------------------------- webhooks

    async def due_webhooks(self, limit: int = 20) -> list[Batch]:
        return await webhook_rows.claim_due(self.engine, batches, time.time(), limit, _batch)

    async def webhook_done(self, batch_id: str, *, delivered: bool, retry_at: float | None) -> None:
        await webhook_rows.mark_done(self.engine, batches, batch_id, delivered=delivered, retry_at=retry_at)
