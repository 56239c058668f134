"""Usage rollups on SQLite and PostgreSQL: upserted with each usage batch, idempotent under replay, safe with two
writers at once, and equal to what the raw usage rows sum to."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timezone

import pytest
from sqlalchemy import func, select

from modelyard.config import normalize_database_url
from modelyard.store.billing_repo import UsageRepo
from modelyard.store.db import Store
from modelyard.store.log_tables import usage_rollups

T0 = datetime(2026, 3, 30, 23, 58, tzinfo=timezone.utc).timestamp()  # the batch straddles an hour and a day


def _records(n: int, seed: int, prefix: str) -> list[dict]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        ok = rnd.random() < 0.8
        out.append({"id": f"{prefix}{i}", "org_id": rnd.choice(["org_a", "org_b"]),
                    "token_id": rnd.choice(["tok_1", "tok_2", None]), "model_id": rnd.choice(["m1", "m2", "m3"]),
                    "task": rnd.choice(["chat", "embedding"]), "units": {}, "input_tokens": rnd.randint(0, 500),
                    "output_tokens": rnd.randint(0, 500) if ok else 0, "price_micros": rnd.randint(0, 9000) if ok else 0,
                    "status": "ok" if ok else "failed", "latency_ms": rnd.randint(1, 900), "region": None,
                    "flagged": rnd.random() < 0.1, "at": T0 + rnd.uniform(0, 300), "job_id": None, "run_id": None,
                    "run_node": None})
    return out


async def _store(url: str) -> Store:
    store = Store(normalize_database_url(url))
    await store.migrate()
    return store


async def _equal(repo: UsageRepo, org: str) -> None:
    for by in ((), ("day", "model_id", "task"), ("token_id",), ("day", "status")):
        raw = await repo.totals_raw(org, "2026-03-01", "2026-04-30", by)
        rolled = await repo.totals(org, "2026-03-01", "2026-04-30", by)
        key = lambda r: tuple(str(r[k]) for k in by)  # noqa: E731
        assert sorted(rolled, key=key) == sorted(raw, key=key), by


def test_a_replayed_batch_counts_once_and_rollups_equal_the_rows(database_url):
    async def go() -> None:
        store = await _store(database_url)
        repo = UsageRepo(store)
        batch = _records(400, 1, "use_a")
        await repo.insert_many(batch)
        await repo.insert_many(batch)  # replayed from the spool: nothing twice
        await repo.insert_many(batch[100:200] + _records(50, 2, "use_b"))  # half old, half new
        for org in ("org_a", "org_b"):
            await _equal(repo, org)
        async with store.engine.connect() as conn:
            grains = dict((await conn.execute(select(usage_rollups.c.grain, func.sum(usage_rollups.c.requests))
                                              .group_by(usage_rollups.c.grain))).all())
            buckets = set((await conn.execute(select(usage_rollups.c.bucket).where(
                usage_rollups.c.grain == "hour"))).scalars())
        assert {g: int(n) for g, n in grains.items()} == {"minute": 450, "hour": 450, "day": 450}
        assert buckets == {"2026-03-30T23", "2026-03-31T00"}
        await store.aclose()
    asyncio.run(go())


def test_two_writers_at_once_neither_deadlock_nor_lose_counts(database_url):
    async def go() -> None:
        store = await _store(database_url)
        a, b = UsageRepo(store), UsageRepo(store)
        batches = [_records(300, s, f"use_{s}_") for s in range(8)]
        # the same keys from both sides, in different row orders: sorted upserts take locks in one order
        await asyncio.gather(*(r.insert_many(list(reversed(x)) if i % 2 else x)
                               for i, (r, x) in enumerate(zip([a, b] * 4, batches))))
        for org in ("org_a", "org_b"):
            await _equal(a, org)
        both = [await a.totals(o, "2026-03-01", "2026-04-30", ()) for o in ("org_a", "org_b")]
        assert sum(rows[0]["requests"] for rows in both) == 2400
        await store.aclose()
    asyncio.run(go())


def test_no_usage_reads_as_nothing(database_url):
    async def go() -> None:
        store = await _store(database_url)
        repo = UsageRepo(store)
        assert await repo.totals("org_x", "2026-01-01", "2026-01-31", ()) == []
        assert await repo.totals("org_x", "2026-01-01", "2026-01-31", ("token_id",)) == []
        await store.aclose()
    asyncio.run(go())


def test_the_migration_rolls_up_the_usage_rows_already_there(database_url):
    from alembic import command

    from modelyard.store.billing_repo import insert_new
    from modelyard.store.db import alembic_config
    from modelyard.store.tables import usage_records

    def upgrade(to: str):
        def run(connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, to)
        return run

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        async with store.engine.begin() as conn:
            await conn.run_sync(upgrade("0010"))
        rows = []
        for r in _records(300, 3, "use_old"):
            when = datetime.fromtimestamp(r.pop("at"), timezone.utc)
            rows.append({**r, "created_at": when, "day": when.strftime("%Y-%m-%d")})
        async with store.engine.begin() as conn:
            await insert_new(conn, usage_records, rows)
        await store.migrate()  # 0011 fills the rollups from these rows
        repo = UsageRepo(store)
        for org in ("org_a", "org_b"):
            await _equal(repo, org)
        async with store.engine.connect() as conn:
            hours = dict((await conn.execute(select(usage_rollups.c.bucket, func.sum(usage_rollups.c.requests))
                                             .where(usage_rollups.c.grain == "hour")
                                             .group_by(usage_rollups.c.bucket))).all())
            minutes = (await conn.execute(select(func.sum(usage_rollups.c.requests)).where(
                usage_rollups.c.grain == "minute"))).scalar_one()
        expect: dict[str, int] = {}
        for r in rows:
            key = r["created_at"].strftime("%Y-%m-%dT%H")
            expect[key] = expect.get(key, 0) + 1
        assert {k: int(v) for k, v in hours.items()} == expect and int(minutes) == 300
        await store.aclose()
    asyncio.run(go())


def test_upkeep_prunes_minute_and_hour_rollups_past_their_days_and_keeps_days(database_url):
    """The request log's upkeep drops minute rows older than `usage_rollup_minute_days` and hour rows older than
    `usage_rollup_hour_days`, org by org in batches; the day grain (what the usage APIs read) stays whole, and the
    audit log loses what is past `audit_log_retention_days`."""
    from datetime import timedelta

    from modelyard.pipeline.requestlog import Retention
    from modelyard.store import repo as store_repo
    from modelyard.store.audit_repo import AuditRepo
    from modelyard.store.requestlog_repo import RequestLogRepo

    async def go() -> None:
        store = await _store(database_url)
        repo = UsageRepo(store)
        await repo.insert_many(_records(300, 3, "use_p"))  # 2026-03-30 23:58 → 2026-03-31 00:03
        audit = AuditRepo(store)
        await audit.record(action="org.update", actor_kind="key", actor_id="tok_1", org_id="org_a")

        async def grains() -> dict[str, int]:
            async with store.engine.connect() as conn:
                return dict((await conn.execute(select(usage_rollups.c.grain, func.count())
                                                .group_by(usage_rollups.c.grain))).all())
        before = await grains()
        assert before["minute"] > before["hour"] > 0 and before["day"] > 0
        days_before = {org: await repo.totals(org, "2026-03-01", "2026-04-30", ("day",)) for org in ("org_a", "org_b")}

        old = store_repo.DELETE_BATCH
        store_repo.DELETE_BATCH = 7  # several batches per org
        try:
            # at 2026-03-31 00:01 with minutes kept 1 day and hours 2, every row is younger than its cut-off
            one_day = datetime(2026, 3, 31, 0, 1, tzinfo=timezone.utc)
            upkeep = Retention(RequestLogRepo(store), 0, clock=one_day.timestamp,
                               rollup_days={"minute": 1, "hour": 2}, audit=audit, audit_days=0)
            first = await upkeep.run_once()
            after = await grains()
            assert first["rollups"] == {"minute": 0, "hour": 0} and after == before
            # three days later every minute and hour row is past its days; the day rows and the audit stay
            later = one_day + timedelta(days=3)
            upkeep.clock = later.timestamp
            second = await upkeep.run_once()
            assert second["rollups"] == {"minute": before["minute"], "hour": before["hour"]}
            assert await grains() == {"day": before["day"]}
            assert second["audit"] == 0 and len(await audit.list(None)) == 1
            for org, totals in days_before.items():
                assert await repo.totals(org, "2026-03-01", "2026-04-30", ("day",)) == totals
            # the audit log with a retention: entries older than it go
            upkeep.audit_days = 1
            upkeep.clock = (datetime.now(timezone.utc) + timedelta(days=2)).timestamp
            assert (await upkeep.run_once())["audit"] == 1 and await audit.list(None) == []
        finally:
            store_repo.DELETE_BATCH = old
        await store.aclose()
    asyncio.run(go())
