"""Repositories for wallets and their ledger, usage records, and content-filter policies and events."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import Table, case, delete, func, insert, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from . import rollups
from .db import Store
from .log_tables import log_columns
from .repo import aware, new_id, utcnow
from .tables import content_filter_events, content_filter_policies, usage_records, wallet_ledger, wallets


class _Uncovered(Exception):
    """The balance does not cover a reservation: its transaction rolls back."""


@dataclass(frozen=True, slots=True)
class Movement:
    """One change to a wallet, applied in a batch: a release (+) or an extra charge (-) after a reservation."""

    org_id: str
    kind: str
    amount_micros: int
    ref: str | None = None
    note: str | None = None


class WalletRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def reserve(self, org_id: str, amount: int, ref: str) -> bool:
        """Take `amount` only if the balance covers it: one conditional UPDATE, exact under any concurrency.

        Idempotent per `ref`: a reservation already in the ledger under it is taken as made (True, nothing taken
        again). Work whose ref is derived from what it is (an agent node's job) can so be admitted again after a
        crash between its reservation and its job's write, adopting the first reservation instead of leaking it.
        """
        now = utcnow()
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        row = dict(id=new_id("led"), org_id=org_id, kind="reserve", amount_micros=-amount, ref=ref, created_at=now)
        try:
            async with self.engine.begin() as conn:
                if self.engine.dialect.name == "postgresql":
                    # no fsync wait on the request path: the row lock still makes the reservation exact, and a crash
                    # can only lose a whole (balance + ledger) reservation, never half of one or someone else's money
                    await conn.execute(text("SET LOCAL synchronous_commit TO OFF"))
                added = await conn.execute(dialect.insert(wallet_ledger).values(**row)
                                           .on_conflict_do_nothing(index_elements=["kind", "ref"]))
                if added.rowcount != 1:
                    return True  # reserved before under this ref
                done = await conn.execute(update(wallets).where(
                    wallets.c.org_id == org_id, wallets.c.balance_micros >= amount).values(
                    balance_micros=wallets.c.balance_micros - amount, updated_at=now))
                if done.rowcount != 1:
                    raise _Uncovered  # rolls the ledger row back with it
        except _Uncovered:
            return False
        return True

    async def reserved_unsettled(self, refs: list[str]) -> dict[str, int]:
        """Of these refs, those reserved and never released: ref -> the amount reserved."""
        if not refs:
            return {}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(wallet_ledger.c.ref, wallet_ledger.c.kind, wallet_ledger.c.amount_micros)
                                       .where(wallet_ledger.c.ref.in_(refs)))).all()
        reserved = {r.ref: -int(r.amount_micros) for r in rows if r.kind == "reserve"}
        for r in rows:
            if r.kind != "reserve":
                reserved.pop(r.ref, None)
        return reserved

    async def apply(self, movements: Iterable[Movement]) -> list[Movement]:
        """Apply releases and extra charges in one transaction; returns the charges the balance could not cover
        (those are skipped: a balance never goes below zero).

        Idempotent per call: a movement whose (kind, ref) is already in the ledger is not applied again, so a job
        settled twice (a runner died between settling and recording it) moves its money once. The unique index on
        (kind, ref) backs this up against a concurrent settlement on another machine: the batch is retried.
        """
        movements = list(movements)
        for attempt in (0, 1):
            try:
                return await self._apply(movements)
            except IntegrityError:
                if attempt:
                    raise
        return []  # pragma: no cover

    async def _apply(self, movements: list[Movement]) -> list[Movement]:
        now = utcnow()
        skipped, ledger = [], []
        async with self.engine.begin() as conn:
            refs = {m.ref for m in movements if m.ref}
            done_before: set[tuple[str, str]] = set()
            if refs:
                rows = await conn.execute(select(wallet_ledger.c.kind, wallet_ledger.c.ref)
                                          .where(wallet_ledger.c.ref.in_(refs)))
                done_before = {(r.kind, r.ref) for r in rows}
            seen: set[tuple[str, str]] = set()
            for m in movements:
                if m.ref:
                    key = (m.kind, m.ref)
                    if key in done_before or key in seen:
                        continue
                    seen.add(key)
                q = update(wallets).where(wallets.c.org_id == m.org_id)
                if m.amount_micros < 0:
                    q = q.where(wallets.c.balance_micros >= -m.amount_micros)
                done = await conn.execute(q.values(balance_micros=wallets.c.balance_micros + m.amount_micros,
                                                   updated_at=now))
                if done.rowcount != 1:
                    skipped.append(m)
                    continue
                ledger.append({"id": new_id("led"), "org_id": m.org_id, "kind": m.kind,
                               "amount_micros": m.amount_micros, "ref": m.ref, "note": m.note, "created_at": now})
            if ledger:
                await conn.execute(insert(wallet_ledger), ledger)
        return skipped

    async def top_up(self, org_id: str, amount: int, note: str | None = None) -> tuple[int, dict[str, Any]]:
        """Add money (an operator's top-up); returns the new balance and the ledger row."""
        now = utcnow()
        row = {"id": new_id("led"), "org_id": org_id, "kind": "top_up", "amount_micros": amount, "ref": None,
               "note": note, "created_at": now}
        for _ in range(2):  # the first top-up creates the wallet; a concurrent first top-up makes us retry
            try:
                async with self.engine.begin() as conn:
                    done = await conn.execute(update(wallets).where(wallets.c.org_id == org_id).values(
                        balance_micros=wallets.c.balance_micros + amount, updated_at=now))
                    if done.rowcount != 1:
                        await conn.execute(insert(wallets).values(org_id=org_id, balance_micros=amount, updated_at=now))
                    await conn.execute(insert(wallet_ledger).values(**row))
                    balance = (await conn.execute(select(wallets.c.balance_micros).where(
                        wallets.c.org_id == org_id))).scalar_one()
                return int(balance), row
            except IntegrityError:
                continue
        raise RuntimeError("could not create the wallet")

    async def balance(self, org_id: str) -> int:
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(wallets.c.balance_micros).where(wallets.c.org_id == org_id))).scalar()
        return int(value or 0)

    async def ledger(self, org_id: str, limit: int = 100) -> list[dict[str, Any]]:
        q = select(wallet_ledger).where(wallet_ledger.c.org_id == org_id).order_by(
            wallet_ledger.c.created_at.desc(), wallet_ledger.c.id).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_plain(r._asdict()) for r in rows]

    async def ledger_sum(self, org_id: str) -> int:
        async with self.engine.connect() as conn:
            value = (await conn.execute(select(func.coalesce(func.sum(wallet_ledger.c.amount_micros), 0)).where(
                wallet_ledger.c.org_id == org_id))).scalar_one()
        return int(value)


def _plain(row: dict[Any, Any]) -> dict[str, Any]:
    """JSON-ready: column names as plain str (orjson refuses SQLAlchemy's str subclass), datetimes as ISO text."""
    return {str(k): (aware(v).isoformat() if isinstance(v, datetime) else v) for k, v in row.items()}  # type: ignore[union-attr]


async def bound_waits(conn: AsyncConnection) -> None:
    """A write-behind batch must not wait forever on a lock or a stalled server: on PostgreSQL its transaction gives
    up (lock 5 s, statement 60 s), so the writer can spool and retry. SQLite's own busy timeout already bounds it."""
    if conn.dialect.name == "postgresql":
        await conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
        await conn.exec_driver_sql("SET LOCAL statement_timeout = '60s'")


async def insert_new(conn: AsyncConnection, table: Table, rows: list[dict[str, Any]], *,
                     key: tuple[str, ...] = ("id",), returning: bool = False) -> set[str]:
    """Insert rows, skipping ids already there (a replayed or twice-spooled record): one executemany statement.
    With `returning`, the ids actually inserted (what a caller may count on top: usage rollups)."""
    if not rows:
        return set()
    dialect = conn.dialect.name
    await bound_waits(conn)
    if dialect == "postgresql":
        q: Any = postgresql.insert(table).on_conflict_do_nothing(index_elements=list(key))
    elif dialect == "sqlite":
        q = sqlite.insert(table).on_conflict_do_nothing(index_elements=list(key))
    else:  # pragma: no cover - the two supported databases are above
        q = insert(table)
    if not returning:
        await conn.execute(q, rows)
        return set()
    # ON CONFLICT DO NOTHING RETURNING answers only the rows it inserted (SQLAlchemy batches the executemany)
    return set((await conn.execute(q.returning(table.c.id), rows)).scalars().all())


def _when(at: Any) -> datetime:
    return at if isinstance(at, datetime) else datetime.fromtimestamp(float(at), timezone.utc)


class UsageRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def insert_many(self, records: list[dict[str, Any]]) -> None:
        """Write usage records (as `UsageRecorder` encodes them: `at` in unix seconds) and add the ones that are new
        to the rollups, in one transaction (a replayed batch adds nothing twice).

        A call's request-log fields go into the same row: its `request_id` and the rest of its fields as one JSON
        array (`log_fields`, migration 0016), as `UsageRecorder` encodes them (an older version's record holds them
        as `log`, its log row as a list in `requestlog_repo.ROW` order). On SQLite they
        stay there (the `request_log` view reads them); on PostgreSQL the table's trigger moves them into the
        partitioned request log. Binding them with the usage row is what the log costs a call: no second row,
        statement or transaction (docs/performance.md, "The request log rides on the usage row")."""
        rows = []
        logged = False
        for r in records:
            when = _when(r["at"])
            row = {k: v for k, v in r.items() if k != "at" and k != "log"}
            row["created_at"], row["day"] = when, when.strftime("%Y-%m-%d")
            log = r.get("log")
            if log is not None:  # an older version's record: its log row as a list in requestlog_repo.ROW order
                row["request_id"], row["log_fields"] = log_columns(log)
            if "log_fields" in row:
                logged = True
            rows.append(row)
        if logged:  # one statement shape for the batch: the calls without a log row bind NULLs
            for row in rows:
                if "log_fields" not in row:
                    row["request_id"] = row["log_fields"] = None
        if rows:
            async with self.engine.begin() as conn:
                added = await insert_new(conn, usage_records, rows, returning=True)
                await rollups.upsert(conn, rows if len(added) == len(rows) else [r for r in rows if r["id"] in added])

    async def totals(self, org_id: str, start: str, end: str, by: tuple[str, ...]) -> list[dict[str, Any]]:
        """Sums over [start, end] (UTC days, inclusive), grouped by the named columns (day, model_id, task,
        token_id, status): read from the day rollups, a few rows per day whatever the traffic."""
        async with self.engine.connect() as conn:
            return await rollups.totals(conn, org_id, start, end, by)

    async def series(self, org_id: str, start: str, end: str, by: tuple[str, ...],
                     where: dict[str, str]) -> list[dict[str, Any]]:
        """`totals` narrowed to exact values of its columns (`where`), with the sum of latencies: the usage
        explorer's rows, from the same day rollups."""
        async with self.engine.connect() as conn:
            return await rollups.totals(conn, org_id, start, end, by, where=where, latency=True)

    async def totals_raw(self, org_id: str, start: str, end: str, by: tuple[str, ...]) -> list[dict[str, Any]]:
        """The same sums straight from the usage rows (what the rollups must equal; the bench's baseline)."""
        cols = [usage_records.c[name] for name in by]
        ok = func.sum(case((usage_records.c.status == "ok", 1), else_=0))
        q = (select(*cols, func.count().label("requests"), ok.label("succeeded"),
                    func.coalesce(func.sum(usage_records.c.price_micros), 0).label("price_micros"),
                    func.coalesce(func.sum(usage_records.c.input_tokens), 0).label("input_tokens"),
                    func.coalesce(func.sum(usage_records.c.output_tokens), 0).label("output_tokens"),
                    func.sum(case((usage_records.c.flagged.is_(True), 1), else_=0)).label("flagged"))
             .where(usage_records.c.org_id == org_id, usage_records.c.day >= start, usage_records.c.day <= end)
             .group_by(*cols).order_by(*cols))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [{str(k): (int(v) if k not in by and v is not None else v) for k, v in r._asdict().items()} for r in rows]


@dataclass(frozen=True)
class FilterPolicy:
    org_id: str
    action: str
    categories: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime

    def public(self) -> dict[str, Any]:
        return {"organization_id": self.org_id, "action": self.action,
                "categories": list(self.categories) if self.categories is not None else None,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat()}


def _policy(m: Any) -> FilterPolicy:
    cats = m["categories"]
    return FilterPolicy(org_id=m["org_id"], action=m["action"], categories=tuple(cats) if cats is not None else None,
                        created_at=aware(m["created_at"]), updated_at=aware(m["updated_at"]))  # type: ignore[arg-type]


class FilterRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    async def get(self, org_id: str) -> FilterPolicy | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(content_filter_policies).where(
                content_filter_policies.c.org_id == org_id))).first()
        return _policy(row._mapping) if row else None

    async def all(self) -> list[FilterPolicy]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(content_filter_policies))).all()
        return [_policy(r._mapping) for r in rows]

    async def put(self, org_id: str, action: str, categories: list[str] | None, *, create: bool) -> FilterPolicy | None:
        """Create (None when one exists) or update (None when none exists) an org's policy."""
        now = utcnow()
        values = {"action": action, "categories": categories, "updated_at": now}
        async with self.engine.begin() as conn:
            if create:
                try:
                    async with conn.begin_nested():
                        await conn.execute(insert(content_filter_policies).values(org_id=org_id, created_at=now,
                                                                                  **values))
                except IntegrityError:
                    return None
            else:
                done = await conn.execute(update(content_filter_policies).where(
                    content_filter_policies.c.org_id == org_id).values(**values))
                if done.rowcount != 1:
                    return None
        return await self.get(org_id)

    async def delete(self, org_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(content_filter_policies).where(content_filter_policies.c.org_id == org_id))
        return done.rowcount == 1

    async def record(self, events: list[dict[str, Any]]) -> None:
        """Write filter events (ids assigned when they happened, `created_at` in unix seconds or a datetime)."""
        rows = [{**e, "created_at": _when(e["created_at"])} for e in events]
        if rows:
            async with self.engine.begin() as conn:
                await insert_new(conn, content_filter_events, rows)

    async def events(self, org_id: str, limit: int = 100) -> list[dict[str, Any]]:
        q = select(content_filter_events).where(content_filter_events.c.org_id == org_id).order_by(
            content_filter_events.c.created_at.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).all()
        return [_plain(r._asdict()) for r in rows]
