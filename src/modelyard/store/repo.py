"""Repositories for organizations and API tokens; the only code that writes these tables."""

from __future__ import annotations

import hashlib
import itertools
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Mapping

from sqlalchemy import case, delete, func, insert, literal_column, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError

from .db import Store
from .tables import api_tokens, organizations, write_receipts

TOKEN_PREFIX = "myd_"  # recognizable in logs and by secret scanners


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


DELETE_BATCH = 5_000


async def delete_in_batches(engine: Any, source: Any, *where: Any, batch: int | None = None) -> int:
    """Delete the rows of `source` (a table, or a PostgreSQL partition) matching `where`, `batch` rows a
    transaction, picked by their physical row id (`ctid` on PostgreSQL, `rowid` on SQLite): retention never holds a
    lock long enough to stall the writers. The rows deleted."""
    batch = batch or DELETE_BATCH
    rid = literal_column("ctid" if engine.dialect.name == "postgresql" else "rowid")
    total = 0
    while True:
        some = select(rid).select_from(source).where(*where).limit(batch).scalar_subquery()
        async with engine.begin() as conn:
            n = int((await conn.execute(delete(source).where(rid.in_(some)))).rowcount or 0)
        total += n
        if n < batch:
            return total


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


class IdSequence:
    """Ids for records made by the thousand a second (usage rows): a random prefix drawn once per process, then a
    zero-padded counter. Unique across processes and restarts like `new_id`, without asking the OS for randomness
    per call; and one process's ids sort in the order they were made, so its rows land at the end of the primary
    key's index instead of on random pages (a random key dirties a page per row and per index)."""

    __slots__ = ("prefix", "_next")

    def __init__(self, prefix: str) -> None:
        self.prefix = f"{prefix}_{secrets.token_hex(8)}"
        self._next = itertools.count().__next__

    def __call__(self) -> str:
        return f"{self.prefix}{self._next():010x}"


def new_secret() -> str:
    """256 bits of randomness behind a recognizable prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def display_of(secret: str) -> str:
    return f"{secret[:8]}...{secret[-4:]}"


def aware(dt: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes; everything stored is UTC
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt


@dataclass(frozen=True)
class Org:
    id: str
    name: str
    plan: str
    status: str
    created_at: datetime
    profile: dict[str, Any] = field(default_factory=dict)
    library_autosave: bool = True  # every media result becomes a library item
    prompts_private: bool = False  # share links never show the prompt
    # {"bodies": bool, "redact": bool, "retention_days": int | None}; None: metadata only, the installation's days
    request_logging: dict[str, Any] | None = None

    @property
    def bodies(self) -> str | None:
        """What the request log keeps of this org's bodies: None, "raw" or "redact" (through the PII model)."""
        rl = self.request_logging or {}
        return ("redact" if rl.get("redact") else "raw") if rl.get("bodies") else None

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "plan": self.plan, "status": self.status,
                "profile": self.profile, "library_autosave": self.library_autosave,
                "prompts_private": self.prompts_private,
                "request_logging": {"bodies": False, "redact": False, "retention_days": None,
                                    **(self.request_logging or {})},
                "created_at": self.created_at.isoformat()}


@dataclass(frozen=True)
class Token:
    id: str
    org_id: str
    name: str
    display: str
    scopes: tuple[str, ...]
    status: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    created_by: str | None = None  # "user:<id>" for a signed-in person, a key's id, or None (CLI, first start)

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= utcnow()

    def public(self) -> dict[str, Any]:
        iso = lambda d: d.isoformat() if d else None  # noqa: E731
        return {"id": self.id, "object": "api_token", "org_id": self.org_id, "name": self.name,
                "display": self.display, "scopes": list(self.scopes), "status": self.status,
                "created_at": iso(self.created_at), "expires_at": iso(self.expires_at),
                "revoked_at": iso(self.revoked_at), "last_used_at": iso(self.last_used_at),
                "created_by": self.created_by}


def _org(m: Mapping[str, Any]) -> Org:
    return Org(id=m["id"], name=m["name"], plan=m["plan"], status=m["status"],
               created_at=aware(m["created_at"]), profile=m["profile"] or {},
               library_autosave=bool(m.get("library_autosave", True)), prompts_private=bool(m.get("prompts_private")),
               request_logging=m.get("request_logging"))


def _token(m: Mapping[str, Any]) -> Token:
    return Token(id=m["id"], org_id=m["org_id"], name=m["name"], display=m["display"], scopes=tuple(m["scopes"]),
                 status=m["status"], created_at=aware(m["created_at"]), expires_at=aware(m["expires_at"]),
                 revoked_at=aware(m["revoked_at"]), last_used_at=aware(m["last_used_at"]),
                 created_by=m.get("created_by"))


class Conflict(Exception):
    """A unique value (an org name) is already taken."""


class OrgRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def create(self, name: str, plan: str = "free", *, org_id: str | None = None) -> Org:
        row = {"id": org_id or new_id("org"), "name": name, "plan": plan, "status": "active",
               "profile": {}, "created_at": utcnow(), "library_autosave": True, "prompts_private": False}
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(organizations).values(**row))
        except IntegrityError as exc:
            raise Conflict(f"an organization named '{name}' already exists") from exc
        return _org(row)

    async def get(self, org_id_or_name: str) -> Org | None:
        q = select(organizations).where(
            (organizations.c.id == org_id_or_name) | (organizations.c.name == org_id_or_name))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _org(row._mapping) if row else None

    async def list(self) -> list[Org]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(organizations).order_by(organizations.c.created_at))).all()
        return [_org(r._mapping) for r in rows]

    async def update(self, org_id: str, **values: Any) -> Org | None:
        """Change plan, status, profile, the library settings or request logging (only the keys given)."""
        values = {k: v for k, v in values.items()
                  if k in ("plan", "status", "profile", "library_autosave", "prompts_private", "request_logging")
                  and v is not None}
        if values:
            async with self.engine.begin() as conn:
                await conn.execute(update(organizations).where(organizations.c.id == org_id).values(**values))
        return await self.get(org_id)

    async def count(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(organizations))).scalar_one())

    async def retention_days(self) -> dict[str, int]:
        """Orgs that keep their request log for a set number of days (`request_logging.retention_days`)."""
        out = {}
        for org in await self.list():
            days = (org.request_logging or {}).get("retention_days")
            if isinstance(days, int) and days > 0:
                out[org.id] = days
        return out


class TokenRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def create(self, org_id: str, name: str, scopes: list[str], *, expires_at: datetime | None = None,
                     secret: str | None = None, created_by: str | None = None) -> tuple[Token, str]:
        """Returns the token and its secret; the secret is never stored and cannot be read back."""
        secret = secret or new_secret()
        row = {"id": new_id("tok"), "org_id": org_id, "name": name, "secret_hash": hash_secret(secret),
               "display": display_of(secret), "scopes": list(scopes), "status": "active", "created_at": utcnow(),
               "expires_at": expires_at, "revoked_at": None, "last_used_at": None, "request_count": 0,
               "created_by": created_by}
        async with self.engine.begin() as conn:
            await conn.execute(insert(api_tokens).values(**row))
        return _token(row), secret

    async def by_secret(self, secret: str) -> Token | None:
        q = select(api_tokens).where(api_tokens.c.secret_hash == hash_secret(secret))
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _token(row._mapping) if row else None

    async def get(self, token_id: str, *, org_id: str | None = None) -> Token | None:
        q = select(api_tokens).where(api_tokens.c.id == token_id)
        if org_id is not None:
            q = q.where(api_tokens.c.org_id == org_id)
        async with self.engine.connect() as conn:
            row = (await conn.execute(q)).first()
        return _token(row._mapping) if row else None

    async def list(self, org_id: str | None = None, *, created_by: str | None = None) -> list[Token]:
        q = select(api_tokens).order_by(api_tokens.c.created_at)
        if org_id is not None:
            q = q.where(api_tokens.c.org_id == org_id)
        if created_by is not None:
            q = q.where(api_tokens.c.created_by == created_by)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_token(r._mapping) for r in rows]

    async def revoke(self, token_id: str, *, org_id: str | None = None) -> Token | None:
        q = update(api_tokens).where(api_tokens.c.id == token_id, api_tokens.c.status == "active")
        if org_id is not None:
            q = q.where(api_tokens.c.org_id == org_id)
        async with self.engine.begin() as conn:
            await conn.execute(q.values(status="revoked", revoked_at=utcnow()))
        return await self.get(token_id, org_id=org_id)

    async def revoke_created_by(self, org_id: str, created_by: str) -> list[str]:
        """Revoke every active token `created_by` made in the org (a person who leaves it); their ids."""
        c = api_tokens.c
        async with self.engine.begin() as conn:
            ids = [r[0] for r in await conn.execute(select(c.id).where(
                c.org_id == org_id, c.created_by == created_by, c.status == "active"))]
            if ids:
                await conn.execute(update(api_tokens).where(c.id.in_(ids), c.status == "active").values(
                    status="revoked", revoked_at=utcnow()))
        return ids

    async def record_use(self, counts: dict[str, tuple[int, datetime]], receipt: str | None = None) -> bool:
        """Batched from the auth layer off the request path: request counts and last use per token.

        With a `receipt` (the batch's id) the batch applies at most once: the receipt row is inserted in the same
        transaction, and a batch replayed from the write-behind spool finds it and changes nothing. Returns whether
        the counts were applied."""
        if not counts:
            return False
        async with self.engine.begin() as conn:
            if receipt is not None:
                ins = (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(write_receipts)
                done = await conn.execute(ins.values(id=receipt, created_at=utcnow()).on_conflict_do_nothing(
                    index_elements=["id"]))
                if done.rowcount != 1:
                    return False
            for token_id, (n, last) in counts.items():
                # max(): a batch replayed late must not move last use backwards
                newest = case((api_tokens.c.last_used_at.is_(None), last),
                              (api_tokens.c.last_used_at < last, last), else_=api_tokens.c.last_used_at)
                await conn.execute(update(api_tokens).where(api_tokens.c.id == token_id).values(
                    request_count=api_tokens.c.request_count + n, last_used_at=newest))
        return True

    async def prune_receipts(self, before: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(delete(write_receipts).where(write_receipts.c.created_at < before))
