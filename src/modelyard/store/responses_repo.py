"""Stored Responses API responses: written behind the request in batches, read back scoped to the caller's org."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, insert, select
from sqlalchemy.exc import IntegrityError

from .db import Store
from .repo import _aware, utcnow
from .tables import responses

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredResponse:
    id: str
    org_id: str
    model: str
    status: str
    body: dict[str, Any]
    history: list[dict[str, Any]]
    input: list[dict[str, Any]]
    created_at: datetime

    def row(self) -> dict[str, Any]:
        return {"id": self.id, "org_id": self.org_id, "model": self.model, "status": self.status, "body": self.body,
                "history": self.history, "input": self.input, "created_at": self.created_at}


class ResponseLog:
    """Stored responses, written off the request path.

    `add` only queues (no DB I/O while the client waits); a background task writes what is queued as one batch
    every `flush_seconds`. Reads look at the queue first, so a client that asks for a response (or continues it)
    right after getting it finds it on this replica; other replicas see it once the batch lands.
    """

    def __init__(self, store: Store, *, flush_seconds: float = 0.2) -> None:
        self.engine = store.engine
        self.flush_seconds = flush_seconds
        self._pending: dict[str, StoredResponse] = {}
        self._task: asyncio.Task | None = None
        # a delete waits for a batch being written, so a deleted response cannot land in the table after it
        self._writing = asyncio.Lock()

    def add(self, org_id: str, body: dict[str, Any], history: list[dict[str, Any]],
            input_items: list[dict[str, Any]]) -> None:
        self._pending[body["id"]] = StoredResponse(id=body["id"], org_id=org_id, model=body["model"],
                                                   status=body["status"], body=body, history=history,
                                                   input=input_items, created_at=utcnow())

    async def delete(self, org_id: str, response_id: str) -> bool:
        """Delete now (not batched: the client is told it is gone); False when the org has no such response."""
        async with self._writing:
            pending = self._pending.get(response_id)
            if pending is not None and pending.org_id == org_id:
                del self._pending[response_id]
                return True
            async with self.engine.begin() as conn:
                result = await conn.execute(delete(responses).where(
                    and_(responses.c.id == response_id, responses.c.org_id == org_id)))
            return bool(result.rowcount)

    async def get(self, org_id: str, response_id: str) -> StoredResponse | None:
        """The response if it belongs to `org_id`; another org's id is indistinguishable from an unknown one."""
        pending = self._pending.get(response_id)
        if pending is not None:
            return pending if pending.org_id == org_id else None
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(responses).where(
                and_(responses.c.id == response_id, responses.c.org_id == org_id)))).mappings().first()
        if row is None:
            return None
        return StoredResponse(id=row["id"], org_id=row["org_id"], model=row["model"], status=row["status"],
                              body=row["body"], history=list(row["history"] or []), input=list(row["input"] or []),
                              created_at=_aware(row["created_at"]))  # type: ignore[arg-type]

    async def flush(self) -> None:
        if not self._pending:
            return
        async with self._writing:
            await self._write()

    async def _write(self) -> None:
        batch = list(self._pending.values())
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(responses), [r.row() for r in batch])
        except IntegrityError:
            # one bad row (its org deleted meanwhile, an id written twice) must not lose the rest
            for r in batch:
                try:
                    async with self.engine.begin() as conn:
                        await conn.execute(insert(responses), [r.row()])
                except IntegrityError as exc:
                    log.warning("dropping stored response %s: %s", r.id, exc.orig)
        for r in batch:
            if self._pending.get(r.id) is r:
                del self._pending[r.id]

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self.flush_seconds)
            try:
                await self.flush()
            except Exception:
                log.exception("writing stored responses failed; retrying")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        try:
            await self.flush()
        except Exception:  # shutdown goes on: the rest of the app still has to close
            log.exception("writing stored responses at shutdown failed; %d lost", len(self._pending))
