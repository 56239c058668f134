"""Stored Responses API responses: written behind the request in batches, read back scoped to the caller's org."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, select

from ..store.billing_repo import insert_new
from ..store.db import Store
from ..store.repo import aware, utcnow
from ..store.tables import responses
from ..store.writebehind import Sink, WriteBehind

log = logging.getLogger(__name__)
KIND = "response"  # the write-behind kind of stored responses
MAX_RECENT = 10_000  # responses kept in memory for reads before their write lands


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
    """Stored responses, written off the request path by the process's write-behind.

    `add` only queues (no DB I/O while the client waits); the writer writes what is queued as one batch every
    `flush_seconds`, spooling it to the data dir while the database lags. Reads look at the recent ones kept here
    first, so a client that asks for a response (or continues it) right after getting it finds it on this replica;
    other replicas see it once the batch lands.
    """

    def __init__(self, store: Store, *, flush_seconds: float = 0.2, writer: WriteBehind | None = None) -> None:
        self.engine = store.engine
        self.flush_seconds = flush_seconds
        self._own = writer is None  # standalone (no gate): a writer of our own, memory only
        self.writer = writer if writer is not None else WriteBehind(None, tick_seconds=flush_seconds)
        self.writer.register(Sink(KIND, self._write, encode=_encode, interval=flush_seconds, batch=500))
        # recent responses by id, for reads before their batch lands (bounded: older ones are read from the table)
        self._pending: dict[str, StoredResponse] = {}
        self._deleted: set[str] = set()  # deleted while still queued: the queued write must not bring them back
        # a delete waits for a batch being written, so a deleted response cannot land in the table after it
        self._writing = asyncio.Lock()

    def add(self, org_id: str, body: dict[str, Any], history: list[dict[str, Any]],
            input_items: list[dict[str, Any]]) -> None:
        stored = StoredResponse(id=body["id"], org_id=org_id, model=body["model"], status=body["status"], body=body,
                                history=history, input=input_items, created_at=utcnow())
        self._pending[stored.id] = stored
        if len(self._pending) > MAX_RECENT:
            del self._pending[next(iter(self._pending))]
        self._deleted.discard(stored.id)
        self.writer.put(KIND, stored)

    async def delete(self, org_id: str, response_id: str) -> bool:
        """Delete now (not batched: the client is told it is gone); False when the org has no such response."""
        async with self._writing:
            pending = self._pending.get(response_id)
            found = pending is not None and pending.org_id == org_id
            if found:
                del self._pending[response_id]
                self._deleted.add(response_id)
            async with self.engine.begin() as conn:
                result = await conn.execute(delete(responses).where(
                    and_(responses.c.id == response_id, responses.c.org_id == org_id)))
            return found or bool(result.rowcount)

    async def get(self, org_id: str, response_id: str) -> StoredResponse | None:
        """The response if it belongs to `org_id`; another org's id is indistinguishable from an unknown one."""
        if response_id in self._deleted:
            return None
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
                              created_at=aware(row["created_at"]))  # type: ignore[arg-type]

    async def flush(self) -> None:
        await self.writer.flush()

    async def _write(self, records: list[dict[str, Any]]) -> None:
        """The sink: insert (skipping ids already there), then forget them from the read cache."""
        async with self._writing:
            rows = [{**r, "created_at": datetime.fromisoformat(r["created_at"])} for r in records
                    if r["id"] not in self._deleted]
            if rows:
                async with self.engine.begin() as conn:
                    await insert_new(conn, responses, rows)
            for r in records:
                self._deleted.discard(r["id"])
                pending = self._pending.get(r["id"])
                if pending is not None and pending.created_at.isoformat() == r["created_at"]:
                    del self._pending[r["id"]]

    async def start(self) -> None:
        if self._own:
            await self.writer.start()

    async def aclose(self) -> None:
        if self._own:
            await self.writer.aclose()


def _encode(r: StoredResponse) -> dict[str, Any]:
    return {**r.row(), "created_at": r.created_at.isoformat()}
