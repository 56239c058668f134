"""The request log: written with the usage rows (migration 0016), read back as written; retention with a clock the
test moves (whole day partitions dropped on PostgreSQL, log fields cleared in batches on SQLite; bodies go with
them); replayed and older spooled rows are written once."""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timedelta, timezone

import orjson
from sqlalchemy import func, select

from modelyard.config import normalize_database_url
from modelyard.pipeline.requestlog import Retention
from modelyard.store.db import Store
from modelyard.store.billing_repo import UsageRepo
from modelyard.store.log_tables import request_bodies, request_log
from modelyard.store.requestlog_repo import DELETE_BATCH, RequestLogRepo

from ..support.clock import Clock

START = datetime(2026, 1, 10, 12, tzinfo=timezone.utc)


def _row(i: int, at: datetime) -> dict:
    return {"id": f"use_{i}", "at": at.timestamp(), "org_id": "org_a", "token_id": None, "model_id": "m",
            "task": "chat", "deployment": "d", "route": "/v1/chat/completions", "status": "ok", "http_status": 200,
            "latency_ms": 5, "ttft_ms": None, "input_tokens": 1, "output_tokens": 2, "price_micros": 3,
            "request_id": f"req_{i}", "trace_id": None, "error_code": None, "job_id": None}


def _usage(r: dict) -> dict:
    """The usage record of a call whose log row is `r` (the log row shares its id and reads the rest from it)."""
    return {"id": r["id"], "org_id": r["org_id"], "token_id": r["token_id"], "model_id": r["model_id"],
            "task": r["task"], "units": {}, "input_tokens": r["input_tokens"], "output_tokens": r["output_tokens"],
            "price_micros": r["price_micros"], "status": r["status"], "latency_ms": r["latency_ms"], "region": None,
            "flagged": False, "at": r["at"], "job_id": r["job_id"], "run_id": None, "run_node": None}


async def _insert(store: Store, repo: RequestLogRepo, rows: list[dict], log_rows: list | None = None) -> None:
    """Calls as the writer lands them: their usage rows, then their log rows (`log_rows`: as the writer hands them
    over, when not the dicts themselves)."""
    await UsageRepo(store).insert_many([_usage(r) for r in rows])
    await repo.insert_many(rows if log_rows is None else log_rows)


async def _count(store: Store, table) -> int:
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(table))).scalar_one())


def test_retention_drops_what_is_older_than_the_setting(database_url):
    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        clock = Clock(START.timestamp())
        upkeep = Retention(repo, days=3, clock=clock)
        made = (await upkeep.run_once())["made"]
        if repo.pg:  # yesterday, today and three days ahead
            assert made == [f"request_log_p202601{d:02d}" for d in range(9, 14)]
        old = [_row(i, START - timedelta(days=1, seconds=i % 3600)) for i in range(DELETE_BATCH + 700)]
        fresh = [_row(100_000 + i, START + timedelta(days=2, seconds=i)) for i in range(10)]
        ancient = [_row(200_000, datetime(2025, 6, 1, tzinfo=timezone.utc))]  # before any partition: the default
        await _insert(store, repo, old + fresh + ancient)
        await repo.insert_many(fresh)  # replayed from the spool: written once
        await repo.insert_bodies([{"log_id": "use_1", "request_id": "req_1", "org_id": "org_a",
                                   "at": old[1]["at"], "request": {"a": 1}, "response": None, "redacted": "no"}])
        assert await _count(store, request_log) == len(old) + 11
        again = await upkeep.run_once()
        assert again["made"] == [] and again["rows"] == 1  # nothing new to make the same day; the ancient row goes

        clock.advance(4 * 86400)  # now Jan 14 12:00: the cutoff is Jan 11 12:00
        done = await upkeep.run_once()
        assert await _count(store, request_log) == 10
        assert await _count(store, request_bodies) == 0
        if repo.pg:
            assert done["partitions"] == 2 and done["rows"] == 0  # Jan 9 and 10, whole
            names = await repo.partitions()
            assert "request_log_p20260109" not in names and "request_log_p20260112" in names
            assert "request_log_p20260117" in names  # made ahead as the clock moved
        else:
            assert done["rows"] == len(old)  # in batches of DELETE_BATCH
        assert [e["id"] for e in await repo.list("org_a", limit=3)] == ["use_100009", "use_100008", "use_100007"]
        await store.aclose()
    asyncio.run(go())


def test_listing_pages_and_filters(database_url):
    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        rows = [_row(i, START + timedelta(seconds=i // 2)) for i in range(9)]  # pairs share a timestamp
        rows[4] = {**rows[4], "status": "failed", "http_status": 429, "model_id": "other"}
        await _insert(store, repo, rows)
        seen, after = [], None
        while True:
            page = await repo.list("org_a", after=after, limit=2)
            if not page:
                break
            seen += [e["id"] for e in page]
            after = (datetime.fromisoformat(page[-1]["at"]), page[-1]["id"])
        assert sorted(seen) == sorted(r["id"] for r in rows) and len(seen) == 9
        assert [e["id"] for e in await repo.list("org_a", status="429")] == ["use_4"]
        assert [e["id"] for e in await repo.list("org_a", status="failed", model="other")] == ["use_4"]
        assert await repo.list("org_b") == []
        await store.aclose()
    asyncio.run(go())


def test_an_org_that_keeps_its_log_for_less_loses_only_its_own_older_rows(database_url):
    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        clock = Clock(START.timestamp())

        async def org_days() -> dict[str, int]:
            return {"org_short": 2, "org_long": 30}  # org_long asks for more than the server keeps: no effect

        upkeep = Retention(repo, days=7, clock=clock, org_days=org_days)
        await upkeep.run_once()
        rows = []
        for org in ("org_short", "org_long", "org_a"):
            for age in (1, 3, 5):
                r = _row(len(rows), START - timedelta(days=age))
                rows.append({**r, "org_id": org, "id": f"use_{org}_{age}"})
        await _insert(store, repo, rows)
        await repo.insert_bodies([{"log_id": f"use_{org}_3", "request_id": None, "org_id": org,
                                   "at": (START - timedelta(days=3)).timestamp(), "request": {"a": 1},
                                   "response": None, "redacted": "no"} for org in ("org_short", "org_a")])
        done = await upkeep.run_once()
        assert done["orgs"] == {"org_short": {"rows": 2, "bodies": 1}}
        assert [e["id"] for e in await repo.list("org_short", limit=10)] == ["use_org_short_1"]
        assert len(await repo.list("org_long", limit=10)) == len(await repo.list("org_a", limit=10)) == 3
        assert await _count(store, request_bodies) == 1  # org_a's stays
        await store.aclose()
    asyncio.run(go())


def test_a_row_reads_back_as_it_was_written(database_url):
    """The insert binds plain tuples through the driver: every field, and the time to the microsecond, must read
    back through the table's own types as it went in."""
    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        at = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=timezone.utc)
        await Retention(repo, days=0, clock=lambda: at.timestamp()).run_once()  # today's partition
        row = {**_row(7, at), "token_id": "tok_1", "ttft_ms": 4, "trace_id": "ab" * 16, "error_code": "x",
               "job_id": "job_1", "route": None, "deployment": None}
        await _insert(store, repo, [row])
        got = (await repo.list("org_a"))[0]
        assert got.pop("object") == "request_log.entry"
        assert datetime.fromisoformat(got.pop("at")) == at
        assert got == {k: v for k, v in row.items() if k != "at"}
        await store.aclose()
    asyncio.run(go())


def test_rows_written_as_lists_read_back_like_dicts_with_the_same_time(database_url):
    """The writer hands rows over as lists in ROW order (what the spool keeps); older spools hold dicts. Both land
    the same, and `at` comes back to the microsecond, including a time whose microseconds round up to a second."""
    from modelyard.pipeline.requestlog import RequestLog
    from modelyard.pipeline.usage import UsageRecorder
    from modelyard.store.requestlog_repo import ROW
    from modelyard.store.writebehind import WriteBehind

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        times = [START.timestamp() + 0.123456, START.timestamp() + 59.9999996, START.timestamp() + 3600]
        # the third as a datetime: what a caller that has one may pass
        as_list = [[t if i != 2 else datetime.fromtimestamp(t, timezone.utc), *(_row(i, START)[k] for k in ROW[1:])]
                   for i, t in enumerate(times)]
        as_dict = [{**_row(10 + i, START), "at": t} for i, t in enumerate(times)]
        # a spool written before migration 0015 holds lists that also copied the usage row's fields
        from modelyard.store.requestlog_repo import WIDE
        as_wide = [[t, *(_row(20 + i, START)[k] for k in WIDE[1:])] for i, t in enumerate(times)]
        # each call's usage row at its log row's time, as the writer makes them (a log row shares its usage row's
        # id and time: on SQLite the time shown is the usage row's)
        calls = [{**_row(k + i, START), "at": t} for k in (0, 10, 20)
                 for i, t in enumerate(times)]
        await _insert(store, repo, calls, as_list + as_dict + as_wide)
        got = {e["id"]: e for e in await repo.list("org_a", limit=10)}
        for i, t in enumerate(times):
            want = datetime.fromtimestamp(t, timezone.utc)
            for key in (f"use_{i}", f"use_{10 + i}", f"use_{20 + i}"):
                assert datetime.fromisoformat(got[key]["at"]) == want, (key, got[key]["at"], want)
                assert got[key]["request_id"] == f"req_{key[4:]}" and got[key]["price_micros"] == 3
                assert (got[key]["deployment"], got[key]["http_status"], got[key]["model_id"]) == ("d", 200, "m")
        # what the writer makes is what the insert takes: a call's fields taken, its row made and queued with its
        # usage record, and written with it
        log = RequestLog(store, WriteBehind(None))
        usage = UsageRecorder(store, log.writer)
        fields = log.fields(None, {"path": "/v1/chat/completions", "state": {"request_id": "req_rec"},
                                   "headers": [(b"traceparent", b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01")]},
                            200, None, None)
        usage.record(org_id="org_a", token_id=None, model_id="m", task="chat", units=None, price_micros=0,
                     status="ok", latency_ms=1, region=None, flagged=False, log=fields)
        (queued,) = log.writer.queued("usage")
        encoded = usage._row(queued)  # what the spool keeps: the usage row's own log columns
        assert encoded["request_id"] == "req_rec" and len(orjson.loads(encoded["log_fields"])) == 6
        await log.writer.flush()
        (entry,) = await repo.get("req_rec", "org_a")
        assert entry["trace_id"] == "a" * 32 and entry["route"] == "/v1/chat/completions" and entry["status"] == "ok"
        # an older version's spooled usage record holds its log row as a `log` list in ROW order: the same lands
        older = {k: v for k, v in encoded.items() if k not in ("log_fields", "request_id")}
        older.update(id="use_older", log=[now := time.time(), "use_older", "org_a", "dep-old", "/v1/embeddings", 201,
                                          None, "req_older", None, "e"])
        older["at"] = now
        await UsageRepo(store).insert_many([older])
        (old_entry,) = await repo.get("req_older", "org_a")
        assert (old_entry["deployment"], old_entry["route"], old_entry["http_status"], old_entry["error_code"]) == (
            "dep-old", "/v1/embeddings", 201, "e")
        await store.aclose()

    asyncio.run(go())


def test_a_spooled_batch_of_any_size_lands_once(database_url):
    """Log rows an older version spooled on their own land whatever the batch size (one JSON statement on
    PostgreSQL, each row onto its usage row on SQLite), each as it was sent, and a replayed batch that overlaps what
    is there (the spool after a write that did commit) adds only what is new: the first write stays."""
    from modelyard.store.requestlog_repo import ROW

    PAGE = 128

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        n = 0
        for size in (1, 2, 3, PAGE - 1, PAGE, PAGE + 1, 2 * PAGE + PAGE // 2 + 7):
            calls = []
            for i in range(n, n + size):
                row = _row(i, START + timedelta(seconds=i))
                row["latency_ms"], row["input_tokens"], row["http_status"] = i, i * 7, 200 + i % 300
                calls.append(row)
            await _insert(store, repo, calls, [[r[k] for k in ROW] for r in calls])
            n += size
            assert await _count(store, request_log) == n, size
        got = {e["id"]: e for e in await repo.list("org_a", limit=n + 10)}
        assert len(got) == n
        for i in range(n):
            e = got[f"use_{i}"]
            assert (e["latency_ms"], e["input_tokens"], e["request_id"], e["http_status"]) == (i, i * 7, f"req_{i}",
                                                                                         200 + i % 300)
            assert datetime.fromisoformat(e["at"]) == START + timedelta(seconds=i)
        # a replay of the last rows plus new ones: the old are skipped by their key, the new written
        replay = [_row(i, START + timedelta(seconds=i)) for i in range(n - 40, n + 60)]
        await _insert(store, repo, replay, [[r[k] for k in ROW] for r in replay])
        assert await _count(store, request_log) == n + 60
        assert (await repo.get(f"req_{n - 1}", "org_a"))[0]["http_status"] == 200 + (n - 1) % 300  # the first write
        await store.aclose()

    asyncio.run(go())


def test_a_calls_log_row_rides_on_its_usage_record_through_the_spool(database_url, tmp_path):
    """The gate queues one record per call: its usage record carries the request-log fields; the writer makes both
    rows and writes the log rows once their usage rows are committed, in the same flush. Spooled and replayed
    twice, each lands once, under the same id; a call without log fields (the log off) gets a usage row only; and
    the scope is not kept, only what the row needs from it."""
    from modelyard.pipeline.requestlog import RequestLog
    from modelyard.pipeline.units import Units
    from modelyard.pipeline.usage import UsageRecorder
    from modelyard.store.tables import usage_records
    from modelyard.store.writebehind import WriteBehind

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        writer = WriteBehind(tmp_path / "spool")
        usage, log = UsageRecorder(store, writer, batch=1_000), RequestLog(store, writer)
        scope = {"path": "/v1/chat/completions", "state": {"request_id": "req_c0"},
                 "headers": [(b"host", b"gw"), (b"traceparent", b"00-" + b"c" * 32 + b"-" + b"d" * 16 + b"-01")]}
        ids = []
        for i, ok in enumerate((True, False)):
            fields = log.fields("dep-a", {**scope, "state": {"request_id": f"req_c{i}"}}, 200 if ok else 502,
                                7 if ok else None, None if ok else "upstream_error")
            assert not any(isinstance(f, dict) for f in fields)  # values, not the scope
            ids.append(usage.record(org_id="org_a", token_id="tok_1", model_id="m", task="chat",
                                    units=Units(input_tokens=11, output_tokens=4) if ok else None, price_micros=9 if ok else 0,
                                    status="ok" if ok else "failed", latency_ms=20, region=None, flagged=False,
                                    log=fields))
        ids.append(usage.record(org_id="org_a", token_id=None, model_id="m", task="chat", units=None,
                                price_micros=0, status="ok", latency_ms=1, region=None, flagged=False))
        assert writer.depth("request_log") == 0 and writer.depth("usage") == 3
        await writer._spool_all()
        spool = b"".join(p.read_bytes() for p in (tmp_path / "spool").glob("spool-*.jsonl"))
        assert spool.count(b'"log_fields"') == 2  # the two log rows travel inside their usage records
        await writer.flush()
        assert await _count(store, usage_records) == 3 and await _count(store, request_log) == 2
        # one row a call: on SQLite the log fields stay on the usage rows (the view reads them); on PostgreSQL the
        # trigger moved them into the partitioned table
        async with store.engine.connect() as conn:
            kept = (await conn.execute(select(func.count()).select_from(usage_records).where(
                usage_records.c.log_fields.is_not(None)))).scalar_one()
        assert kept == (0 if log.repo.pg else 2)
        # the same spooled records replayed again (a write that committed, then a crash before the spool was cut)
        (tmp_path / "spool" / "spool-replay-0.jsonl").write_bytes(spool)
        again = WriteBehind(tmp_path / "spool")
        # a new process's writers (they register their sinks); the log is off now, and rows spooled while it was on
        # are still written, once
        UsageRecorder(store, again, batch=1_000)
        RequestLog(store, again, enabled=False)
        await again.start()
        await again.aclose()
        assert not list((tmp_path / "spool").glob("spool-*.jsonl"))  # replayed, not left behind
        assert await _count(store, usage_records) == 3 and await _count(store, request_log) == 2
        (ok_entry,), (failed_entry,) = [await log.repo.get(f"req_c{i}", "org_a") for i in (0, 1)]
        assert ok_entry["id"] == ids[0] and failed_entry["id"] == ids[1]
        assert (ok_entry["status"], ok_entry["http_status"], ok_entry["ttft_ms"], ok_entry["input_tokens"],
                ok_entry["output_tokens"], ok_entry["price_micros"], ok_entry["deployment"], ok_entry["route"],
                ok_entry["trace_id"]) == ("ok", 200, 7, 11, 4, 9, "dep-a", "/v1/chat/completions", "c" * 32)
        assert (failed_entry["status"], failed_entry["http_status"], failed_entry["input_tokens"],
                failed_entry["error_code"]) == ("failed", 502, 0, "upstream_error")
        await store.aclose()

    asyncio.run(go())


def test_a_log_row_is_written_in_the_same_periodic_drain_as_its_usage_row(database_url, tmp_path):
    """The writer's tick writes what is due. A log row handed over once its usage row is committed is due as its
    call was, so the same drain writes it: it does not sit in memory for another tick."""
    from modelyard.pipeline.requestlog import RequestLog
    from modelyard.pipeline.usage import UsageRecorder
    from modelyard.store.tables import usage_records
    from modelyard.store.writebehind import WriteBehind

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        writer = WriteBehind(tmp_path / "spool")
        usage, log = UsageRecorder(store, writer, interval=0.2), RequestLog(store, writer, interval=0.2)
        usage.record(org_id="org_a", token_id=None, model_id="m", task="chat", units=None, price_micros=0,
                     status="ok", latency_ms=1, region=None, flagged=False,
                     log=log.fields("dep", None, 200, None, None, request_id="req_tick"))
        await asyncio.sleep(0.25)  # the record is now due
        await writer._drain(due_only=True)
        assert await _count(store, usage_records) == 1 and await _count(store, request_log) == 1
        assert writer.depth() == 0
        await store.aclose()

    asyncio.run(go())


def test_the_migration_keeps_each_rows_own_fields_and_reads_the_rest_from_usage_and_downgrades_back(database_url):
    """Migration 0015 drops the request log's copies of the usage row's fields: a row logged before it lists the
    same afterwards (its own columns kept, the rest joined from its usage row); a downgrade fills them back."""
    from alembic import command
    from sqlalchemy import text

    from modelyard.store.db import alembic_config

    def migrate(to: str, down: bool = False):
        def run(connection) -> None:
            cfg = alembic_config()
            cfg.attributes["connection"] = connection
            (command.downgrade if down else command.upgrade)(cfg, to)
        return run

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        async with store.engine.begin() as conn:
            await conn.run_sync(migrate("0014"))
        rows = [{**_row(i, START + timedelta(seconds=i)), "token_id": "tok_1", "latency_ms": 10 + i, "ttft_ms": i,
                 "http_status": 200 if i % 2 else 502, "status": "ok" if i % 2 else "failed", "job_id": f"job_{i}",
                 "error_code": None if i % 2 else "upstream_error", "trace_id": "ab" * 16} for i in range(4)]
        await UsageRepo(store).insert_many([_usage(r) for r in rows])
        names = list(_row(0, START))  # the 0011 columns
        insert = f"INSERT INTO request_log ({', '.join(names)}) VALUES ({', '.join(':' + k for k in names)})"
        async with store.engine.begin() as conn:
            await conn.execute(text(insert), [{**r, "at": datetime.fromtimestamp(r["at"], timezone.utc)} for r in rows])
        await store.migrate()
        repo = RequestLogRepo(store)
        listed = {e["id"]: e for e in await repo.list("org_a", limit=10)}
        for r in rows:
            got = dict(listed[r["id"]])
            got.pop("object")
            assert datetime.fromisoformat(got.pop("at")) == datetime.fromtimestamp(r["at"], timezone.utc)
            assert got == {k: v for k, v in r.items() if k != "at"}
        assert [e["id"] for e in await repo.list("org_a", status="failed")] == ["use_2", "use_0"]
        async with store.engine.begin() as conn:
            await conn.run_sync(migrate("0014", down=True))
            back = (await conn.execute(text("SELECT id, model_id, latency_ms, job_id, status FROM request_log "
                                            "ORDER BY id"))).all()
        assert [tuple(b) for b in back] == [(r["id"], "m", r["latency_ms"], r["job_id"], r["status"]) for r in rows]
        await store.aclose()

    asyncio.run(go())


def test_a_row_the_database_refuses_keeps_no_other_row_of_its_batch_out(database_url):
    """A spooled batch of log rows goes as one record (one JSON statement on PostgreSQL). A row its table refuses
    (here a NULL org) fails the statement; the batch is halved until that row stands alone, every other row lands,
    and the refusal is raised for the write-behind to keep the record in rejected.jsonl. On SQLite a row lands on
    its own org's usage row only: the NULL org's matches none and lands nowhere, and the rest land."""
    import pytest
    from sqlalchemy.exc import IntegrityError

    from modelyard.store.requestlog_repo import ROW

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        repo = RequestLogRepo(store)
        calls = [_row(i, START + timedelta(seconds=i)) for i in range(9)]
        await UsageRepo(store).insert_many([_usage(r) for r in calls])
        batch = [[r[name] for name in ROW] for r in calls]
        batch[4][ROW.index("org_id")] = None
        if repo.pg:
            with pytest.raises(IntegrityError):
                await repo.insert_many([batch])
        else:
            await repo.insert_many([batch])
        got = sorted(e["id"] for e in await repo.list(None, limit=20))
        assert got == sorted(r["id"] for i, r in enumerate(calls) if i != 4)
        if repo.pg:
            with pytest.raises(IntegrityError):  # the write-behind tries the record alone: the same, nothing twice
                await repo.insert_many([batch])
        else:
            await repo.insert_many([batch])
        assert await _count(store, request_log) == 8
        await store.aclose()

    asyncio.run(go())


def test_a_nul_in_a_path_is_dropped_from_the_route_and_costs_the_call_nothing(database_url, tmp_path):
    """PostgreSQL keeps no NUL in text, and a call's log fields are written with its usage row (on PostgreSQL its
    trigger moves them into the log): a path with `%00` in it must cost the call neither its usage row nor its
    log entry."""
    from modelyard.pipeline.requestlog import RequestLog
    from modelyard.pipeline.usage import UsageRecorder
    from modelyard.store.tables import usage_records
    from modelyard.store.writebehind import WriteBehind

    async def go() -> None:
        store = Store(normalize_database_url(database_url))
        await store.migrate()
        await Retention(RequestLogRepo(store), days=0).run_once()  # today's partition
        writer = WriteBehind(tmp_path / "spool")
        usage, log = UsageRecorder(store, writer), RequestLog(store, writer)
        fields = log.fields("dep", {"path": "/fal/app\x00x/requests", "state": {"request_id": "req_nul"},
                                    "headers": []}, 200, None, None)
        usage.record(org_id="org_a", token_id=None, model_id="m", task="chat", units=None, price_micros=0,
                     status="ok", latency_ms=1, region=None, flagged=False, log=fields)
        await writer.flush()
        assert writer.rejected == 0 and writer.depth() == 0
        assert await _count(store, usage_records) == 1
        (entry,) = await log.repo.get("req_nul", "org_a")
        assert entry["route"] == "/fal/appx/requests"
        await store.aclose()

    asyncio.run(go())
