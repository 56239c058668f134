"""Repository for remote workers: registration, heartbeats, and the list the routers read."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Mapping

from sqlalchemy import and_, insert, select, update

from ..store.db import Store
from ..store.repo import aware, new_id, utcnow
from ..store.secrets import SecretBox
from ..store.tables import workers


@dataclass(frozen=True)
class Worker:
    id: str
    org_id: str
    name: str
    url: str
    region: str | None
    models: list[dict[str, Any]]
    secret: str
    status: str
    registered_at: datetime
    last_heartbeat: datetime

    def public(self, *, timeout: float) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "url": self.url, "region": self.region,
                "status": "online" if self.alive(timeout) else "offline", "models": self.models,
                "registered_at": self.registered_at.isoformat(), "last_heartbeat": self.last_heartbeat.isoformat()}

    def alive(self, timeout: float) -> bool:
        return self.status == "online" and utcnow() - self.last_heartbeat < timedelta(seconds=timeout)


def _worker(m: Mapping[str, Any], box: SecretBox) -> Worker:
    return Worker(id=m["id"], org_id=m["org_id"], name=m["name"], url=m["url"], region=m["region"],
                  models=list(m["models"] or []), secret=box.open(m["secret"]), status=m["status"],
                  registered_at=aware(m["registered_at"]), last_heartbeat=aware(m["last_heartbeat"]))


class WorkerRepo:
    """The serving key is stored sealed (store/secrets.py) and opened on read."""

    def __init__(self, store: Store) -> None:
        if store.secrets is None:
            raise RuntimeError("WorkerRepo needs a Store built with secrets= (the key that seals serving keys)")
        self.engine = store.engine
        self.box = store.secrets

    async def register(self, org_id: str, name: str, url: str, region: str | None, models: list[dict[str, Any]],
                       secret: str) -> Worker:
        """A worker (re)joining under a name takes over that name's row: same id, fresh state."""
        now = utcnow()
        values = {"url": url, "region": region, "models": models, "secret": self.box.seal(secret), "status": "online",
                  "last_heartbeat": now}
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(workers.c.id).where(
                and_(workers.c.org_id == org_id, workers.c.name == name)))).first()
            if row is None:
                worker_id = new_id("wrk")
                await conn.execute(insert(workers).values(id=worker_id, org_id=org_id, name=name, registered_at=now,
                                                          **values))
            else:
                worker_id = row.id
                await conn.execute(update(workers).where(workers.c.id == worker_id).values(registered_at=now, **values))
        found = await self.get(worker_id, org_id=org_id)
        assert found is not None
        return found

    async def heartbeat(self, worker_id: str, org_id: str, models: list[dict[str, Any]] | None) -> bool:
        values: dict[str, Any] = {"last_heartbeat": utcnow(), "status": "online"}
        if models is not None:
            values["models"] = models
        async with self.engine.begin() as conn:
            result = await conn.execute(update(workers).where(
                and_(workers.c.id == worker_id, workers.c.org_id == org_id)).values(**values))
        return result.rowcount == 1

    async def set_offline(self, worker_id: str, org_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(update(workers).where(
                and_(workers.c.id == worker_id, workers.c.org_id == org_id)).values(status="offline"))
        return result.rowcount == 1

    async def get(self, worker_id: str, *, org_id: str) -> Worker | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(workers).where(
                and_(workers.c.id == worker_id, workers.c.org_id == org_id)))).first()
        return _worker(row._mapping, self.box) if row else None

    async def list(self, org_id: str | None = None) -> list[Worker]:
        q = select(workers).order_by(workers.c.name)
        if org_id is not None:
            q = q.where(workers.c.org_id == org_id)
        async with self.engine.connect() as conn:
            return [_worker(r._mapping, self.box) for r in (await conn.execute(q)).all()]
