"""The queue's guarantees, straight against SQLite and PostgreSQL: leases, lost leases, reaping, dead letters,
cancel, and the gate contract (each job's hold settled exactly once); plus the URL guard."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any, AsyncIterator

import httpx
import pytest
from sqlalchemy import select

from modelyard.errors import InvalidRequest
from modelyard.jobs.queue import JobQueue, new_job_id
from modelyard.catalog import build_catalog
from modelyard.jobs.runner import JobRunner
from modelyard.jobs.standalone import runner_context
from modelyard.routing import Router
from modelyard.net import BlockedURL, GuardedResolver, check_url, fetch_bytes
from modelyard.store.billing_repo import WalletRepo
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo
from modelyard.store.tables import usage_records, wallet_ledger

from ..conftest import make_settings, running
from ..support.accounts import org_with_key
from ..support.clock import Clock
from ..support.jobs import FAST, chat_payload, job_models, wait_status
from ..support.servers import ServerThread
from ..support.waiting import wait_until


@pytest.fixture
async def queue(tmp_path: Path, database_url: str) -> AsyncIterator[tuple[JobQueue, str]]:
    """A queue on a clock the test moves (`q.clock.advance`): leases expire and backoffs pass when it says."""
    store = Store(make_settings(tmp_path, database_url=database_url).resolved_database_url)
    await store.migrate()
    org = await OrgRepo(store).create("q-org")
    try:
        yield JobQueue(store, backoff=0.05, backoff_max=0.1, clock=Clock(tick=1e-6)), org.id
    finally:
        await store.aclose()


async def _submit(q: JobQueue, org: str, **kw: Any):
    return await q.submit(org_id=org, token_id=None, model="echo", task="chat", payload=chat_payload(), meta={}, **kw)


async def test_claim_order_lease_and_exclusive_completion(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    low = await _submit(q, org, priority=0)
    high = await _submit(q, org, priority=5)
    assert await q.queue_position(low) == 1 and await q.queue_position(high) == 0
    [a] = await q.claim("a", 0.2)
    assert a.id == high.id and a.status == "running" and a.attempts == 1
    [b] = await q.claim("b", 30)
    assert b.id == low.id
    assert await q.claim("c", 30) == []
    q.clock.advance(0.3)  # a's lease runs out; the reaper gives the job back ...
    assert await q.reap() == []
    assert await q.claim("c", 30) == []  # ... after its backoff
    q.clock.advance(q.delay(1))
    [again] = await q.claim("c", 30)
    assert again.id == high.id and again.attempts == 2
    assert await q.renew(a, 30) == (False, False)  # a lost its lease ...
    assert await q.complete(a, {"by": "a"}) is False  # ... and its result is not accepted
    assert await q.complete(again, {"by": "c"}) is True
    assert await q.complete(again, {"by": "c twice"}) is False  # finished once
    row = await q.get(high.id)
    assert row.status == "completed" and row.result == {"by": "c"}


async def _claim(q: JobQueue, owner: str, lease: float = 30):
    [claimed] = await q.claim(owner, lease)
    return claimed


async def test_expired_leases_dead_letter_after_max_attempts(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    job = await _submit(q, org, max_attempts=2)
    for attempt in (1, 2):
        claimed = await _claim(q, f"r{attempt}", lease=0.1)
        assert claimed.attempts == attempt
        q.clock.advance(0.15)
        finals = await q.reap()
        q.clock.advance(q.delay(attempt))
    assert [j.id for j in finals] == [job.id]
    row = await q.get(job.id)
    assert row.status == "dead_letter" and row.error["code"] == "lease_expired" and row.finished_at


async def test_retryable_failure_backs_off_then_dead_letters(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    job = await _submit(q, org, max_attempts=2)
    claimed = await _claim(q, "r")
    failed_at = q.clock()
    assert await q.fail(claimed, {"message": "down"}, retryable=True) == "pending"
    assert (await q.get(job.id)).run_after >= failed_at + q.delay(1)  # backoff before the next attempt
    assert await q.claim("r", 30) == []
    q.clock.advance(q.delay(1))
    claimed = await _claim(q, "r")
    assert await q.fail(claimed, {"message": "down"}, retryable=True) == "dead_letter"
    other = await _submit(q, org)
    claimed = await _claim(q, "r")
    assert await q.fail(claimed, {"message": "bad input"}, retryable=False) == "failed"
    assert (await q.get(other.id)).attempts == 1


async def test_cancel_pending_running_final_and_other_org(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    pending = await _submit(q, org)
    assert (await q.cancel(pending.id, "org_someone_else"))[1] == "missing"
    job, outcome = await q.cancel(pending.id, org)
    assert outcome == "cancelled" and job.status == "cancelled"
    running_job = await _submit(q, org)
    claimed = await _claim(q, "r")
    assert (await q.cancel(running_job.id, org))[1] == "requested"
    assert await q.renew(claimed, 30) == (True, True)  # the runner learns of it at its next heartbeat
    assert await q.cancelled(claimed) is True
    assert (await q.cancel(running_job.id, org))[1] == "final"


async def test_batch_claim_takes_each_job_once(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    ids = {(await _submit(q, org)).id for _ in range(10)}
    first, second = await asyncio.gather(q.claim("a", 30, limit=6), q.claim("b", 30, limit=6))
    got = [j.id for j in first + second]
    assert len(got) == len(set(got)) == 10 and set(got) == ids
    assert len(first) <= 6 and len(second) <= 6


async def test_a_claim_takes_no_more_than_its_limit_on_a_fresh_table(queue: tuple[JobQueue, str]) -> None:
    """Before ANALYZE has run, PostgreSQL planned `id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)` as a nested
    loop that ran the locking subquery once per pending row: one runner took every pending job, whatever its limit."""
    q, org = queue
    ids = [(await _submit(q, org, priority=i % 3)).id for i in range(40)]
    taken = []
    while batch := await q.claim("r", 30, limit=3):
        assert len(batch) <= 3
        assert [j.priority for j in batch] == sorted((j.priority for j in batch), reverse=True)
        taken += batch
    assert sorted(j.id for j in taken) == sorted(ids) and len(taken) == 40
    assert [j.priority for j in taken[:14]] == [2] * 13 + [1]  # the most urgent first, in claim order


async def test_a_flush_completes_only_what_the_runner_still_holds(queue: tuple[JobQueue, str]) -> None:
    """complete_many and renew_many: one statement for many jobs, each counted only while its lease is the caller's."""
    q, org = queue
    for _ in range(4):
        await _submit(q, org)
    mine = await q.claim("a", 30, limit=3)
    lost = mine[2]
    q.clock.advance(31)  # its lease runs out, the reaper gives it back and another runner takes it
    assert await q.renew(mine[0], 30) == (True, False) and await q.renew(mine[1], 30) == (True, False)
    await q.reap()
    q.clock.advance(q.delay(1))
    theirs = await q.claim("b", 30, limit=2)
    assert lost.id in {j.id for j in theirs}
    assert (await q.cancel(mine[1].id, org))[1] == "requested"
    assert await q.renew_many(mine, 30) == {mine[0].id: False, mine[1].id: True}  # the lost one is missing
    hold = {"org_id": org, "job_id": mine[0].id}
    mine[0].meta = {"hold": hold}
    won = await q.complete_many([(mine[0], {"n": 0}, {"hold": hold, "settle_units": {}}), (mine[1], [1], None),
                                 (lost, {"n": "late"}, None)])
    assert won == {mine[0].id, mine[1].id}
    assert await q.complete_many([(mine[0], {"n": "again"}, None)]) == set()  # finished once
    rows = {j.id: await q.get(j.id) for j in mine}
    assert rows[mine[0].id].status == "completed" and rows[mine[0].id].result == {"n": 0}
    assert rows[mine[0].id].settle_due is True and rows[mine[0].id].meta["settle_units"] == {}
    assert rows[mine[1].id].result == [1] and rows[mine[1].id].meta == {} and rows[mine[1].id].settle_due is False
    assert rows[lost.id].status == "running" and rows[lost.id].lease_owner == "b" and rows[lost.id].result is None
    assert all(r.lease_token is None and r.lease_expires is None for r in (rows[mine[0].id], rows[mine[1].id]))


async def test_release_on_shutdown_does_not_spend_an_attempt(queue: tuple[JobQueue, str]) -> None:
    q, org = queue
    job = await _submit(q, org)
    claimed = await _claim(q, "r")
    assert await q.release(claimed) is True
    row = await q.get(job.id)
    assert row.status == "pending" and row.attempts == 0 and row.lease_owner is None


# ---------------------------------------------------------------- the gate contract, through a live server

async def _ledger_and_usage(store: Store, org_id: str) -> tuple[list[Any], list[Any]]:
    """What the gate wrote for one org: its ledger as (kind, amount), its usage rows as (model, output tokens,
    status), each sorted."""
    async with store.engine.connect() as conn:
        ledger = await conn.execute(select(wallet_ledger.c.kind, wallet_ledger.c.amount_micros)
                                    .where(wallet_ledger.c.org_id == org_id))
        u = usage_records.c
        usage = await conn.execute(select(u.model_id, u.output_tokens, u.status).where(u.org_id == org_id))
        return sorted(tuple(r) for r in ledger), sorted(tuple(r) for r in usage)


def test_each_job_hold_is_settled_exactly_once(tmp_path: Path, database_url: str) -> None:
    """Reserved at submit; charged once on success, released once on a dead letter or a cancel, one usage row each."""
    models = [{**m, "price": {"per_request": 0.01}} for m in job_models(2.0)]  # 10_000 micro-dollars a job
    settings = make_settings(tmp_path, database_url=database_url, models=models, **FAST)
    with running(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        org_id, key = org_with_key(srv, plan="enterprise", cents=100)
        h = {"Authorization": f"Bearer {key}"}
        ok = http.post("/api/jobs", json={"model_id": "echo", "task": "chat", "payload": chat_payload("a b c")},
                       headers=h).json()["id"]
        dead = http.post("/api/jobs", json={"model_id": "always-down", "task": "chat", "payload": chat_payload(),
                                            "max_attempts": 2}, headers=h).json()["id"]
        slow = http.post("/api/jobs", json={"model_id": "echo-slow", "task": "chat", "payload": chat_payload()},
                         headers=h).json()["id"]
        wait_status(http, f"/api/jobs/{slow}", h, {"running"})
        http.post(f"/api/jobs/{slow}/cancel", headers=h)
        for job_id, want in ((ok, "completed"), (dead, "dead_letter"), (slow, "cancelled")):
            wait_status(http, f"/api/jobs/{job_id}", h, {want}, timeout=30)
        ctx = srv.app.state.ctx
        # a job is final before its runner settles it; settled, its row's settle_due is cleared
        wait_until(lambda: not any(srv.on_server_loop(ctx.jobs.queue.get(j)).settle_due for j in (ok, dead, slow)),
                   what="the runner to settle the three jobs")
        srv.on_server_loop(ctx.gate.flush())
        ledger, usage = srv.on_server_loop(_ledger_and_usage(ctx.store, org_id))
    assert ledger == sorted([("top_up", 1_000_000)] + [("reserve", -10_000)] * 3 + [("release", 10_000)] * 2)
    assert usage == [("always-down", 0, "failed"), ("echo", 3, "ok"), ("echo-slow", 0, "failed")]


# ---------------------------------------------------------------- URLs fetched for clients

async def test_url_guard_refuses_private_targets_at_check_and_at_connect() -> None:
    for url in ("http://127.0.0.1/x", "http://localhost:9/x", "http://10.1.2.3/x", "http://169.254.169.254/latest",
                "http://[::1]/x", "http://192.168.0.10/x"):
        with pytest.raises(BlockedURL):
            await check_url(url, "webhook_url", allow_private=False)
    with pytest.raises(InvalidRequest):
        await check_url("file:///etc/passwd", "image_url", allow_private=False)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"secret"})

    # the resolver the HTTP client connects through refuses too, so a name cannot resolve differently at connect
    with pytest.raises(BlockedURL):
        await GuardedResolver(allow_private=False).resolve("localhost", 80)
    assert await GuardedResolver(allow_private=True).resolve("localhost", 80)
    with ServerThread(app, lifespan="off") as s:
        with pytest.raises(BlockedURL):
            await fetch_bytes(s.url + "/", "image_url", allow_private=False, limit=100)
        assert await fetch_bytes(s.url + "/", "image_url", allow_private=True, limit=100) == b"secret"


async def test_fetch_bytes_reads_a_body_sent_in_many_writes_to_the_end() -> None:
    """read(n) answers only what is buffered: a body bigger than one network chunk must still arrive whole."""
    body = bytes(range(256)) * 2400  # ~600 KB

    async def app(scope: Any, receive: Any, send: Any) -> None:
        chunked = scope["path"] == "/chunked"  # no content-length: only counting while reading can refuse it
        headers = [] if chunked else [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(0, len(body), 50_000):
            await send({"type": "http.response.body", "body": body[i:i + 50_000], "more_body": True})
            await asyncio.sleep(0.005)
        await send({"type": "http.response.body", "body": b""})

    with ServerThread(app, lifespan="off") as s:
        for path in ("/", "/chunked"):
            got = await fetch_bytes(s.url + path, "image_url", allow_private=True, limit=len(body))
            assert len(got) == len(body) and got == body
            with pytest.raises(InvalidRequest) as err:
                await fetch_bytes(s.url + path, "image_url", allow_private=True, limit=len(body) - 1)
            assert err.value.param == "image_url" and "larger than" in err.value.message


async def test_unencodable_host_names_are_400_not_500() -> None:
    for url in ("http://a..b/", "http://" + "a" * 64 + ".example.com/", "http://.a/x", "http://[::1/x"):
        for allow_private in (False, True):
            with pytest.raises(InvalidRequest) as err:
                await check_url(url, "webhook_url", allow_private=allow_private)
            assert err.value.param == "webhook_url" and err.value.status == 400


async def test_ipv6_addresses_embedding_a_private_ipv4_are_refused() -> None:
    teredo_to_loopback = "2001:0:4136:e378:8000:63bf:80ff:fffe"  # Teredo, client 127.0.0.1
    for host in ("2002:7f00:1::1", "2002:a00:1::1", "2002:a9fe:a9fe::1", teredo_to_loopback, "64:ff9b::7f00:1"):
        with pytest.raises(BlockedURL):
            await check_url(f"http://[{host}]/x", "image_url", allow_private=False)
        with pytest.raises(BlockedURL):
            await GuardedResolver(allow_private=False).resolve(f"[{host}]", 80)
    await check_url("http://[2002:808:808::1]/x", "image_url", allow_private=False)  # 6to4 of 8.8.8.8 is public


def test_private_webhook_and_image_urls_are_400_at_submit(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, models=job_models(), **FAST)  # allow_private_urls stays off
    with running(settings) as srv, httpx.Client(base_url=srv.url, timeout=30) as http:
        r = http.post("/api/jobs", json={"model_id": "echo", "task": "chat", "payload": chat_payload(),
                                         "webhook_url": "http://127.0.0.1:9/hook"}, headers=srv.headers())
        assert r.status_code == 400 and r.json()["error"]["param"] == "webhook_url"
        for bad in ("http://a..b/hook", "http://" + "a" * 64 + ".com/hook"):  # getaddrinfo raised UnicodeError: 500
            r = http.post("/api/jobs", json={"model_id": "echo", "task": "chat", "payload": chat_payload(),
                                             "webhook_url": bad}, headers=srv.headers())
            assert r.status_code == 400 and r.json()["error"]["param"] == "webhook_url", r.text
        r = http.post("/fal/modelyard/echo", params={"fal_webhook": "http://a..b/"}, json={"prompt": "x"},
                      headers=srv.headers())
        assert r.status_code == 400, r.text
        r = http.post("/fal/modelyard/demo-image/image-to-image", json={"prompt": "x",
                      "image_url": "http://169.254.169.254/latest/meta-data"}, headers=srv.headers())
        assert r.status_code == 400 and r.json()["detail"][0]["loc"] == ["body", "image_url"]
        r = http.post("/fal/modelyard/echo", params={"fal_webhook": "http://10.0.0.1/x"}, json={"prompt": "x"},
                      headers=srv.headers())
        assert r.status_code == 400
        assert http.get("/api/jobs", headers=srv.headers()).json()["data"] == []


async def test_a_runner_flushes_finished_work_and_drops_work_whose_lease_it_lost(queue: tuple[JobQueue, str],
                                                                                   tmp_path: Path) -> None:
    """The runner's own statements, step by step: a claim fills its slots, a finished result waits for the flush
    (one statement for all of them), and the lease renewal stops work whose lease another runner took."""
    q, org = queue
    settings = make_settings(tmp_path, models=job_models(60.0), **FAST)
    catalog = build_catalog(settings)
    runner = JobRunner(runner_context(settings, q.store, catalog, Router(catalog)), q, name="r")
    try:
        slow = await q.submit(org_id=org, token_id=None, model="echo-slow", task="chat", payload=chat_payload(),
                              meta={})
        fast = await _submit(q, org)
        assert await runner._claim() is True and set(runner.working) == {slow.id, fast.id}
        slow_task, fast_task = runner.active[slow.id], runner.active[fast.id]
        await asyncio.wait_for(runner.wake.wait(), 30)  # the fast job finished: its result waits for the flush
        assert [job.id for job, *_ in runner.finished] == [fast.id] and (await q.get(fast.id)).status == "running"
        assert runner.busy == 1  # a result waiting to be written leaves its slot to the next job
        await runner._flush()
        await fast_task
        assert runner.completed == 1 and (await q.get(fast.id)).result["choices"][0]["message"]["content"]
        # the slow job's runner was presumed dead: its lease ran out and another runner took the job
        q.clock.advance(settings.job_lease_seconds + 1)
        await q.reap()
        q.clock.advance(q.delay(1))
        assert [j.id for j in await q.claim("thief", 30)] == [slow.id]
        await runner._renew()
        await slow_task  # stopped: the work of a lost lease is dropped
        row = await q.get(slow.id)
        assert row.status == "running" and row.lease_owner == "thief" and row.attempts == 2
        assert runner.completed == 1 and not runner.active and not runner.finished
    finally:
        for task in runner.active.values():
            task.cancel()
        await runner.lane.aclose()
        await runner.flush_lane.aclose()


async def test_a_settlement_lost_to_a_crash_is_swept_once(queue: tuple[JobQueue, str], tmp_path: Path) -> None:
    q, org = queue
    wallets = WalletRepo(q.store)
    await wallets.top_up(org, 100)
    assert await wallets.reserve(org, 7, "call_lost")  # what admission took for the job
    job_id = new_job_id()
    hold = {"org_id": org, "token_id": None, "model_id": "echo", "task": "chat", "reserved_micros": 7,
            "ref": "call_lost", "estimate": None, "flagged": False, "house": False, "admitted_at": time.time(),
            "job_id": job_id}
    job = await q.submit(org_id=org, token_id=None, model="echo", task="chat", payload=chat_payload(),
                         meta={"hold": hold}, job_id=job_id)
    [claimed] = await q.claim("r", 30)
    # the runner committed the result, then died before the gate settled
    assert await q.complete(claimed, {"ok": 1}, {**claimed.meta, "settle_units": {"output_tokens": 5}})
    assert (await q.get(job.id)).settle_due is True
    settings = make_settings(tmp_path, **FAST)
    catalog = build_catalog(settings)
    runner = JobRunner(runner_context(settings, q.store, catalog, Router(catalog)), q)
    await runner._sweep_settlements()
    assert await _ledger_and_usage(q.store, org) == ([("reserve", -7), ("top_up", 100)], [])  # within the grace
    q.clock.advance(3600)  # the finisher is long gone
    await runner._sweep_settlements()
    await runner._sweep_settlements()
    # free model: the whole reservation goes back, once; one usage row with the units the runner committed
    assert await _ledger_and_usage(q.store, org) == ([("release", 7), ("reserve", -7), ("top_up", 100)],
                                                     [("echo", 5, "ok")])
    assert await wallets.balance(org) == 100
    assert (await q.get(job.id)).settle_due is False
