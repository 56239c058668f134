"""The request log's tables: rows read with filters and a cursor, and dropped when old.

A call's log fields are written with its usage row (`UsageRepo.insert_many`, migration 0016). On PostgreSQL the
usage table's trigger moves them into `request_log`, one partition per UTC day (`request_log_pYYYYMMDD`, made a few
days ahead); retention drops a whole partition once its day has passed: no row-by-row delete, no bloat, no long
lock. On SQLite they stay on the usage row and `request_log` is a view over the rows that have them; retention
clears a row's log fields (the usage row is billing's and stays) in batches of `DELETE_BATCH` per transaction, org
by org along the view's own index, so a writer never waits long behind it. `insert_many` lands rows that older
versions spooled on their own.
"""

from __future__ import annotations

import logging
import time
from operator import itemgetter
from datetime import datetime, timedelta, timezone
from typing import Any

import orjson
from sqlalchemy import column, delete, select, table, text, tuple_
from sqlalchemy.exc import DataError, IntegrityError

from .billing_repo import bound_waits, insert_new
from .db import Store
from .paging import newest_first
from .log_tables import log_columns, request_bodies, request_log
from .tables import usage_records
from .repo import DELETE_BATCH, aware, delete_in_batches

log = logging.getLogger(__name__)
PARTITION = "request_log_p"
# SQLite: a spooled log row lands on its usage row (the same org's, not one that has its fields already)
_SQLITE_LAND = ("UPDATE usage_records SET request_id = ?, log_fields = ? "
                "WHERE id = ? AND org_id = ? AND log_fields IS NULL")
# SQLite: one batch of an org's log fields older than a time, cleared (the partial index finds them)
_SQLITE_CLEAR = ("UPDATE usage_records SET request_id = NULL, log_fields = NULL WHERE rowid IN (SELECT rowid FROM "
                 "usage_records WHERE org_id = ? AND log_fields IS NOT NULL AND created_at < ? LIMIT ?)")


def _day(d: datetime) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _when(at: Any) -> datetime:
    return at if isinstance(at, datetime) else datetime.fromtimestamp(float(at), timezone.utc)


def public(row: Any) -> dict[str, Any]:
    m = {str(k): v for k, v in row._mapping.items()}
    m["at"] = aware(m["at"]).isoformat()  # type: ignore[union-attr]
    m["object"] = "request_log.entry"
    return m


# The order of a log row as older versions handed it over and spooled it (a list; also a usage record's `log`
# before migration 0016) and as the PostgreSQL insert names the columns.
ROW = ("at", "id", "org_id", "deployment", "route", "http_status", "ttft_ms", "request_id", "trace_id", "error_code")
assert sorted(ROW) == sorted(c.name for c in request_log.columns), "ROW must name every request_log column once"
_FROM_DICT = itemgetter(*ROW[1:])
# An entry's fields in the order the API has always shown them: the table's columns before migration 0015, those
# it no longer has read from the call's usage row
SHOWN = ("id", "at", "org_id", "token_id", "model_id", "task", "deployment", "route", "status", "http_status",
         "latency_ms", "ttft_ms", "input_tokens", "output_tokens", "price_micros", "request_id", "trace_id",
         "error_code", "job_id")
# A spool written before migration 0015 holds rows in those columns' order, time first: only the log's own are kept
WIDE = ("at", "id", *SHOWN[2:])
_FROM_WIDE = itemgetter(*(WIDE.index(name) for name in ROW[1:]))
_SHOWN_COLUMNS = [request_log.c[name] if name in request_log.c else usage_records.c[name] for name in SHOWN]


def _entries() -> Any:
    """Request-log rows with their usage rows' fields (an outer join: a row whose usage row is gone still lists)."""
    return select(*_SHOWN_COLUMNS).select_from(
        request_log.outerjoin(usage_records, usage_records.c.id == request_log.c.id))


class _TimeText:
    """`at` (epoch seconds) as UTC text, 'YYYY-MM-DD HH:MM:SS.ffffff': what SQLAlchemy's SQLite DATETIME stores
    (every read parses it back and every bound filter compares it as text), and what the PostgreSQL insert casts
    to its timestamptz. The date and time are formatted once per second: a batch's rows share their seconds, and
    this is a quarter of what a datetime and SQLAlchemy's own bind processor cost a row (1.1 against 4.0 µs).
    `slow` formats a datetime (an older spool's `at`, or a time this cannot take exactly)."""

    __slots__ = ("_sec", "_prefix", "_slow")

    def __init__(self, slow: Any) -> None:
        self._sec, self._prefix, self._slow = -1, "", slow

    def __call__(self, at: Any) -> str:
        if isinstance(at, datetime):
            return self._slow(at)
        at = float(at)
        sec = int(at)
        micros = round((at - sec) * 1_000_000)
        if micros >= 1_000_000 or sec < 0:  # rounds up into the next second (or before 1970): the exact path
            return self._slow(datetime.fromtimestamp(at, timezone.utc))
        if sec != self._sec:
            self._sec, self._prefix = sec, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(sec))
        return f"{self._prefix}.{micros:06d}"


def _utc_text(d: datetime) -> str:
    """A datetime as UTC text (a naive one is taken as UTC, as every time here is)."""
    return (d.astimezone(timezone.utc) if d.tzinfo is not None else d).strftime("%Y-%m-%d %H:%M:%S.%f")


# PostgreSQL takes a batch as one JSON parameter (an array of rows, each an array in `ROW` order) and unpacks it
# itself: the gateway makes one string with orjson instead of binding ten parameters a row through asyncpg, which
# cost it ~20,000 instructions a row (docs/performance.md, "One record a batch, one JSON statement on PostgreSQL").
_PG_INSERT = (f"INSERT INTO request_log ({', '.join(ROW)}) "
              "SELECT (v->>0)::timestamp AT TIME ZONE 'UTC', v->>1, v->>2, v->>3, v->>4, (v->>5)::int, (v->>6)::int, "
              "v->>7, v->>8, v->>9 FROM json_array_elements($1::json) AS t(v) ON CONFLICT (id, at) DO NOTHING")
assert _PG_INSERT.count("v->>") == len(ROW)


def _older(record: Any, bind_at: Any) -> tuple[Any, ...]:
    """A row as older spools hold it: a dict by column name, or a list in `WIDE` order."""
    if type(record) is dict:
        return (bind_at(record["at"]), *_FROM_DICT(record))
    return (bind_at(record[0]), *_FROM_WIDE(record))


class RequestLogRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.pg = self.engine.dialect.name == "postgresql"
        self._inserts: dict[int, str] = {}  # rows a statement → its SQL (SQLite)
        # `at` as UTC text (see _TimeText): on SQLite through SQLAlchemy's DATETIME bind processor where this cannot
        # take it exactly, so a row stores what SQLAlchemy would have stored
        dialect = self.engine.dialect
        bind = request_log.c.at.type.dialect_impl(dialect).bind_processor(dialect)
        self._bind_at: Any = _TimeText(_utc_text if self.pg or bind is None else bind)

    # ---------------------------------------------------------------- writes (the write-behind's sinks)

    async def insert_many(self, records: list[Any]) -> None:
        """Lands request-log rows that older versions spooled on their own, skipping one already there (a replayed
        batch). A record is a list of rows (a usage batch's, queued as one record) or one row; a row is a list in
        `ROW` order, or as older spools hold it: a dict by column name, or a list in `WIDE` order.

        PostgreSQL takes the batch as one statement with one JSON parameter (`_PG_INSERT`). On SQLite each row goes
        onto its usage row (`_SQLITE_LAND`), which its usage batch wrote before the log row was queued.

        A row the database refuses (a value its column cannot hold) must not keep the rest of its batch out: the
        batch is halved until the bad rows stand alone, every other row is written, and the first refusal is
        raised, so the write-behind keeps the record in rejected.jsonl (its good rows are skipped by their key if
        it is ever replayed)."""
        if not records:
            return
        bind_at = self._bind_at
        n = len(ROW)
        rows: list[tuple[Any, ...]] = []
        for r in records:
            if type(r) is list and r and type(r[0]) is list:  # a usage batch's rows, queued as one record
                rows += [(bind_at(x[0]), *x[1:]) if len(x) == n else _older(x, bind_at) for x in r]
            else:
                rows.append((bind_at(r[0]), *r[1:]) if type(r) is list and len(r) == n else _older(r, bind_at))
        await self._insert_rows(rows)

    async def _insert_rows(self, rows: list[tuple[Any, ...]]) -> None:
        try:
            await self._write(rows)
        except (IntegrityError, DataError):
            if len(rows) == 1:
                raise
            refused: BaseException | None = None
            half = len(rows) // 2
            for part in (rows[:half], rows[half:]):
                try:
                    await self._insert_rows(part)
                except (IntegrityError, DataError) as exc:
                    refused = refused or exc
            if refused is not None:
                raise refused

    async def _write(self, rows: list[tuple[Any, ...]]) -> None:
        async with self.engine.begin() as conn:
            await bound_waits(conn)
            if self.pg:
                await conn.exec_driver_sql(_PG_INSERT, (orjson.dumps(rows).decode(),))
                return
            await conn.exec_driver_sql(_SQLITE_LAND, [(*log_columns(r), r[1], r[2]) for r in rows])

    async def insert_bodies(self, records: list[dict[str, Any]]) -> None:
        rows = [{**r, "at": _when(r["at"])} for r in records]
        if rows:
            async with self.engine.begin() as conn:
                await insert_new(conn, request_bodies, rows, key=("log_id",))

    # ---------------------------------------------------------------- reads

    async def list(self, org_id: str | None, *, model: str | None = None, status: str | None = None,
                   start: datetime | None = None, end: datetime | None = None,
                   after: tuple[datetime, str] | None = None, limit: int = 50) -> list[dict[str, Any]]:
        """Newest first; `after` is the (at, id) of the last entry of the previous page."""
        c, u = request_log.c, usage_records.c
        q = _entries()
        if org_id is not None:
            q = q.where(c.org_id == org_id)
        if model:
            q = q.where(u.model_id == model)
        if status:
            q = q.where(u.status == status) if status in ("ok", "failed") else q.where(c.http_status == int(status))
        if start is not None:
            q = q.where(c.at >= start)
        if end is not None:
            q = q.where(c.at < end)
        q = newest_first(q, request_log, after, limit, time="at")
        async with self.engine.connect() as conn:
            return [public(r) for r in (await conn.execute(q)).all()]

    async def get(self, request_id: str, org_id: str | None) -> list[dict[str, Any]]:
        """Every call a request made (usually one), each with its bodies when they were kept."""
        q = _entries().where(request_log.c.request_id == request_id)
        if org_id is not None:
            q = q.where(request_log.c.org_id == org_id)
        async with self.engine.connect() as conn:
            entries = [public(r) for r in (await conn.execute(q.order_by(request_log.c.at))).all()]
            if entries:
                found = (await conn.execute(select(request_bodies).where(
                    request_bodies.c.log_id.in_([e["id"] for e in entries])))).all()
                bodies = {b.log_id: b for b in found}
                for e in entries:
                    b = bodies.get(e["id"])
                    e["body"] = None if b is None else {"request": b.request, "response": b.response,
                                                        "redacted": b.redacted}
        return entries

    # ---------------------------------------------------------------- partitions and retention

    async def partitions(self) -> list[str]:
        if not self.pg:
            return []
        async with self.engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'request_log' ORDER BY 1"))
            return [r[0] for r in rows]

    async def ensure_partitions(self, now: datetime, ahead_days: int = 3) -> list[str]:
        """PostgreSQL: a partition for each UTC day from yesterday to `ahead_days` ahead (made once each)."""
        if not self.pg:
            return []
        made = []
        have = set(await self.partitions())
        first = _day(now) - timedelta(days=1)
        for i in range(ahead_days + 2):
            lo = first + timedelta(days=i)
            name = f"{PARTITION}{lo:%Y%m%d}"
            if name in have:
                continue
            hi = lo + timedelta(days=1)
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(text(
                        f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF request_log "
                        f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"))
                made.append(name)
            except Exception as exc:  # e.g. the default partition already holds rows of that day: keep them there
                log.warning("request log: could not create partition %s (%s)", name, exc)
        return made

    async def drop_before(self, cutoff: datetime) -> dict[str, int]:
        """Retention: everything logged before `cutoff` goes (whole day partitions on PostgreSQL)."""
        dropped = 0
        if self.pg:
            for name in await self.partitions():
                if not name.startswith(PARTITION):
                    continue
                day = datetime.strptime(name[len(PARTITION):], "%Y%m%d").replace(tzinfo=timezone.utc)
                if day + timedelta(days=1) <= cutoff:
                    async with self.engine.begin() as conn:
                        await conn.execute(text(f"DROP TABLE IF EXISTS {name}"))
                    dropped += 1
        if self.pg:  # rows PostgreSQL kept in its default partition: deleted in batches
            source = table("request_log_default", column("at"))
            rows = await delete_in_batches(self.engine, source, source.c.at < cutoff)
        else:  # SQLite: every org's log fields on usage rows older than the cutoff, cleared
            async with self.engine.connect() as conn:
                orgs = (await conn.exec_driver_sql(
                    "SELECT DISTINCT org_id FROM usage_records WHERE log_fields IS NOT NULL")).scalars().all()
            rows = 0
            for org_id in orgs:
                rows += await self._clear(org_id, cutoff)
        bodies = await delete_in_batches(self.engine, request_bodies, request_bodies.c.at < cutoff)
        return {"partitions": dropped, "rows": rows, "bodies": bodies}

    async def _clear(self, org_id: str, cutoff: datetime) -> int:
        """SQLite: an org's log fields on usage rows from before `cutoff`, cleared `DELETE_BATCH` rows a
        transaction; how many."""
        total = 0
        bound = self._bind_at(cutoff)
        while True:
            async with self.engine.begin() as conn:
                n = int((await conn.exec_driver_sql(_SQLITE_CLEAR, (org_id, bound, DELETE_BATCH))).rowcount or 0)
            total += n
            if n < DELETE_BATCH:
                return total

    async def drop_org_before(self, org_id: str, cutoff: datetime) -> dict[str, int]:
        """An org's own, shorter retention: its rows and bodies logged before `cutoff`, deleted in batches."""
        out = {}
        if not self.pg:
            out["rows"] = await self._clear(org_id, cutoff)
        # by key, not `delete_in_batches`' physical row id: on PostgreSQL these rows span day partitions, and a
        # ctid is only unique within one
        tables = [(request_log, ("id", "at"))] if self.pg else []
        for t, key in [*tables, (request_bodies, ("log_id",))]:
            total = 0
            while True:
                cols = [t.c[k] for k in key]
                some = select(*cols).where(t.c.org_id == org_id, t.c.at < cutoff).limit(DELETE_BATCH)
                where = tuple_(*cols).in_(some) if len(cols) > 1 else cols[0].in_(some.scalar_subquery())
                async with self.engine.begin() as conn:
                    n = int((await conn.execute(delete(t).where(where))).rowcount or 0)
                total += n
                if n < DELETE_BATCH:
                    break
            out["rows" if t is request_log else "bodies"] = total
        return out

