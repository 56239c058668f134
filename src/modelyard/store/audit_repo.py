"""The audit log: who changed what in the accounts (before and after), when, from where; written at once."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import insert, select

from .paging import newest_first
from .log_tables import audit_log
from .repo import aware, delete_in_batches, new_id, utcnow

# never kept in before/after, whatever a caller hands over
SECRET_KEYS = frozenset({"secret", "secret_hash", "api_key", "password", "token", "webhook_secret", "key"})


def scrub(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: ("[redacted]" if k in SECRET_KEYS else scrub(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


class AuditRepo:
    def __init__(self, store: Any) -> None:
        self.engine = store.engine  # a Store, or anything with an .engine (the CLI's)

    async def record(self, *, action: str, actor_kind: str, actor_id: str, org_id: str | None,
                     target: str | None = None, before: Any = None, after: Any = None,
                     actor_org_id: str | None = None, client_ip: str | None = None,
                     request_id: str | None = None) -> dict[str, Any]:
        row = {"id": new_id("aud"), "at": utcnow(), "org_id": org_id, "actor_kind": actor_kind,
               "actor_id": actor_id[:200], "actor_org_id": actor_org_id, "action": action, "target": target,
               "before": scrub(before), "after": scrub(after), "client_ip": client_ip,
               "request_id": request_id}
        async with self.engine.begin() as conn:
            await conn.execute(insert(audit_log).values(**row))
        return row

    async def drop_before(self, cutoff: datetime) -> int:
        """Retention (`audit_log_retention_days`): entries older than `cutoff`, deleted in batches."""
        return await delete_in_batches(self.engine, audit_log, audit_log.c.at < cutoff)

    async def list(self, org_id: str | None, *, action: str | None = None, start: datetime | None = None,
                   end: datetime | None = None, after: tuple[datetime, str] | None = None,
                   limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; `org_id` None: every org's (the operator's view)."""
        c = audit_log.c
        q = select(audit_log)
        if org_id is not None:
            q = q.where(c.org_id == org_id)
        if action:
            q = q.where(c.action == action)
        if start is not None:
            q = q.where(c.at >= start)
        if end is not None:
            q = q.where(c.at < end)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(newest_first(q, audit_log, after, limit, time="at"))).all()
        out = []
        for r in rows:
            m = {str(k): v for k, v in r._mapping.items()}
            m["at"] = aware(m["at"]).isoformat()  # type: ignore[union-attr]
            m["object"] = "audit_log.entry"
            out.append(m)
        return out
