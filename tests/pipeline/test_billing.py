"""Prices and wallets on SQLite and PostgreSQL: exact reservations under concurrency, settlement on real usage,
no charge for failures, 402s, plan restrictions, banned accounts, studio prices and job holds."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import func, select

from modelyard.pipeline.units import Units
from modelyard.store.billing_repo import WalletRepo
from modelyard.store.db import Store
from modelyard.store.tables import usage_records, wallet_ledger
from modelyard.types import Task

from ..conftest import make_settings, running
from ..support.accounts import chat, create_key, create_org, org_with_key, top_up, wallet
from ..support.waiting import wait_until

PER_REQUEST = 0.01  # $0.01 a call: 10_000 micro-dollars


def billing_models(stub_url: str) -> list[dict[str, Any]]:
    up = {"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-model", "timeout": 10}
    return [
        {"id": "stub-gpt", "type": "text", "deployments": [up]},  # free: no price
        {"id": "paid-flat", "type": "text", "price": {"per_request": PER_REQUEST},
         "deployments": [{**up, "max_concurrency": 256, "max_queue": 256}]},
        {"id": "paid-tokens", "type": "text", "price": {"input_per_1m": 2.0, "output_per_1m": 8.0},
         "deployments": [up]},
        {"id": "paid-embed", "type": "embedding", "price": {"input_per_1m": 1000.0},  # $0.001 a token
         "deployments": [{**up, "model": "stub-embedder"}]},
        {"id": "pro-only", "type": "text", "plans": ["pro", "enterprise"], "deployments": [up]},
        {"id": "aliased", "type": "text", "aliases": ["cheap-alias"], "deployments": [up]},
        {"id": "studio-image", "type": "image", "deployments": [{**up, "model": "stub-images"}]},  # the studio's t2i
    ]


@pytest.fixture
def srv(tmp_path, database_url, stub_server, stub):
    settings = make_settings(tmp_path, database_url=database_url, models=billing_models(stub_server[0].url),
                             cooldown_failures=1_000_000, auth_cache_ttl=0.0,
                             prices={"cheap-alias": {"per_request": 0.001}}, model_plans={"cheap-alias": ["pro"]},
                             studio_models={"t2i": "studio-image"})
    with running(settings) as s:
        yield s


def _db(srv, fn):
    async def go():
        store = Store(srv.settings.resolved_database_url)
        try:
            return await fn(store)
        finally:
            await store.aclose()
    return asyncio.run(go())


def _flush(srv) -> None:
    srv.on_server_loop(srv.app.state.ctx.gate.flush())


def _settles_to(srv, org_id: str, balance: int) -> None:
    """A stream settles as its generator closes, just after the client read its end (on the server's thread):
    flush the gate until the wallet shows it."""
    def settled() -> bool:
        _flush(srv)
        return wallet(srv, org_id)["balance_micros"] == balance
    wait_until(settled, 5, f"the wallet to settle at {balance}")


def test_200_concurrent_paid_calls_against_a_wallet_for_100(srv):
    org_id, key = org_with_key(srv, plan="enterprise", cents=100)  # $1.00 = exactly 100 calls at $0.01

    async def burst() -> list[Any]:
        client = openai.AsyncOpenAI(base_url=srv.v1, api_key=key, max_retries=0, timeout=60)
        async def one():
            try:
                return await client.chat.completions.create(model="paid-flat",
                                                            messages=[{"role": "user", "content": "hi"}])
            except openai.APIStatusError as exc:
                return exc
        try:
            return await asyncio.gather(*[one() for _ in range(200)])
        finally:
            await client.close()

    results = asyncio.run(burst())
    served = [r for r in results if not isinstance(r, Exception)]
    refused = [r for r in results if isinstance(r, openai.APIStatusError)]
    assert len(served) == 100 and len(refused) == 100
    assert {r.status_code for r in refused} == {402}
    body = refused[0].body
    assert body["type"] == "insufficient_quota" and body["code"] == "insufficient_balance"
    _flush(srv)

    async def sums(store):
        wallets = WalletRepo(store)
        async with store.engine.connect() as conn:
            kinds = dict((await conn.execute(select(wallet_ledger.c.kind, func.sum(wallet_ledger.c.amount_micros))
                                             .where(wallet_ledger.c.org_id == org_id)
                                             .group_by(wallet_ledger.c.kind))).all())
            charged = (await conn.execute(select(func.count(), func.sum(usage_records.c.price_micros)).where(
                usage_records.c.org_id == org_id, usage_records.c.status == "ok"))).one()
        return await wallets.balance(org_id), await wallets.ledger_sum(org_id), kinds, charged
    balance, ledger_sum, kinds, (ok_rows, charged) = _db(srv, sums)
    assert balance == 0 and ledger_sum == 0
    assert kinds == {"top_up": 1_000_000, "reserve": -1_000_000}  # estimate == price: nothing to release
    assert ok_rows == 100 and charged == 1_000_000


def test_token_priced_call_settles_on_real_usage_and_releases_the_rest(srv, stub):
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    r = chat(srv, key, "paid-tokens", max_tokens=50)
    assert r.status_code == 200, r.text
    usage = r.json()["usage"]
    _flush(srv)
    w = wallet(srv, org_id)
    price = usage["prompt_tokens"] * 2 + usage["completion_tokens"] * 8  # micro-dollars: $/1M x tokens
    assert w["balance_micros"] == 1_000_000 - price
    kinds = {e["kind"]: e["amount_micros"] for e in w["ledger"]}
    assert kinds["reserve"] + kinds["release"] == -price and kinds["release"] > 0
    # a stream that asks for usage is charged on the final chunk's numbers
    client = openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=0)
    stream = client.chat.completions.create(model="paid-tokens", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True}, max_tokens=50)
    final = [c for c in stream if c.usage is not None][-1].usage
    second = final.prompt_tokens * 2 + final.completion_tokens * 8
    _settles_to(srv, org_id, 1_000_000 - price - second)


def test_failed_upstream_is_not_charged(srv, stub):
    org_id, key = org_with_key(srv, plan="pro", cents=5)
    stub.mode = "error500"
    r = chat(srv, key, "paid-flat")
    assert r.status_code == 502
    _flush(srv)
    w = wallet(srv, org_id)
    assert w["balance_micros"] == 50_000
    assert sorted(e["kind"] for e in w["ledger"]) == ["release", "reserve", "top_up"]
    usage = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()
    assert usage["totals"]["failed"] == 1 and usage["totals"]["price_micros"] == 0
    # a stream whose upstream breaks after the first bytes is not charged either
    stub.mode = "midstream_error"
    r = chat(srv, key, "paid-tokens", stream=True)
    assert r.status_code == 200 and '"error"' in r.text
    _settles_to(srv, org_id, 50_000)
    usage = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()
    assert usage["totals"]["failed"] == 2 and usage["totals"]["price_micros"] == 0


def test_a_stream_the_client_leaves_is_charged_for_what_it_received(srv, stub):
    org_id, key = org_with_key(srv, plan="pro", cents=5)
    stub.reply = " ".join(["word"] * 40)
    stub.chunk_delay = 0.05
    with httpx.stream("POST", srv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": "paid-tokens", "messages": [{"role": "user", "content": "hi"}],
                            "max_tokens": 100, "stream": True}) as r:
        lines = r.iter_lines()
        got = [next(lines) for _ in range(6)]  # a few events, then hang up
    assert any(line.startswith("data: {") for line in got)

    def settled() -> bool:  # the server notices the hang-up on its own thread, then settles
        _flush(srv)
        u = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()["totals"]
        return u["requests"] == 1
    wait_until(settled, 10, "the abandoned stream to be settled")
    totals = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()["totals"]
    assert totals["succeeded"] == 1 and 0 < totals["output_tokens"] < 40  # what was relayed, not the whole reply
    assert wallet(srv, org_id)["balance_micros"] == 50_000 - totals["price_micros"] and totals["price_micros"] > 0


def test_free_models_work_with_an_empty_wallet_and_paid_ones_say_402(srv):
    org_id, key = org_with_key(srv, plan="free")
    assert chat(srv, key, "stub-gpt").status_code == 200
    r = chat(srv, key, "paid-flat")
    assert r.status_code == 402
    err = r.json()["error"]
    assert err["type"] == "insufficient_quota" and err["code"] == "insufficient_balance" and "$0.01" in err["message"]
    assert wallet(srv, org_id)["balance_micros"] == 0


def test_the_operators_own_org_is_not_charged_but_its_usage_is_priced(srv):
    me = httpx.get(srv.url + "/api/v1/me", headers=srv.headers()).json()
    assert me["plan"] == "unlimited" and me["balance_micros"] == 0
    for _ in range(3):
        assert chat(srv, srv.admin_key, "paid-flat").status_code == 200  # an empty wallet, and no 402
    _flush(srv)

    async def priced(store):
        async with store.engine.connect() as conn:
            return (await conn.execute(select(func.count(), func.sum(usage_records.c.price_micros)).where(
                usage_records.c.org_id == me["organization_id"], usage_records.c.model_id == "paid-flat"))).one()
    count, total = _db(srv, priced)
    assert count == 3 and total == 3 * PER_REQUEST * 1_000_000  # list prices, for the operator's accounting
    assert wallet(srv, me["organization_id"])["balance_micros"] == 0


def test_an_absurd_max_tokens_is_a_402_not_a_crash(srv):
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    for cap in (10**19, 10**400):
        r = httpx.post(srv.v1 + "/chat/completions", headers=srv.headers(key), timeout=30,
                       json={"model": "paid-tokens", "max_tokens": cap, "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 402, r.text  # reserved as the largest real output, which $1 does not cover
    assert wallet(srv, org_id)["balance_micros"] == 1_000_000


def test_job_payloads_are_estimated_like_sync_requests():
    from modelyard.pipeline.billing import fill_units, payload_estimate

    image = payload_estimate(Task.TEXT_TO_IMAGE, {"prompt": "x", "n": 3, "size": "1024x1024", "quality": "hd"})
    assert (image.images, image.image_size, image.image_quality) == (3, "1024x1024", "hd")
    odd = payload_estimate(Task.TEXT_TO_IMAGE, {"prompt": "x", "n": "zz", "size": [1]})
    assert (odd.images, odd.image_size) == (1, None)
    video = payload_estimate(Task.TEXT_TO_VIDEO, {"prompt": "x", "size": "1280x720", "duration": 5})
    assert (video.video_seconds, video.video_resolution) == (5.0, "720p")
    chat = payload_estimate(Task.CHAT, {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**30})
    assert 0 < chat.input_tokens < 100 and chat.output_tokens == 1_000_000
    speech = payload_estimate(Task.SPEECH, {"input": "hello there"})
    assert speech.characters == 11
    # a result that cannot say its size tier or characters is completed from the estimate
    assert fill_units(Units(images=2), image).image_size == "1024x1024"
    assert fill_units(Units(), speech).characters == 11


def test_media_routes_price_from_the_result(srv):
    """Embeddings go through the media routes' `_run`: estimated from the input, settled on the upstream's usage."""
    org_id, key = org_with_key(srv, plan="pro", cents=1)
    r = httpx.post(srv.v1 + "/embeddings", headers={"Authorization": f"Bearer {key}"},
                   json={"model": "paid-embed", "input": ["a", "b", "c"]})
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["prompt_tokens"] == 3
    _flush(srv)
    assert wallet(srv, org_id)["balance_micros"] == 10_000 - 3 * 1000
    usage = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()
    assert usage["data"][0]["task"] == "embedding" and usage["data"][0]["price_micros"] == 3000
    assert usage["data"][0]["input_tokens"] == 3


def test_a_model_restricted_to_plans(srv):
    _, free_key = org_with_key(srv, plan="free")
    r = chat(srv, free_key, "pro-only")
    assert r.status_code == 403
    err = r.json()["error"]
    assert err["type"] == "permission_error" and err["param"] == "model" and "free" in err["message"]
    _, pro_key = org_with_key(srv, plan="pro")
    assert chat(srv, pro_key, "pro-only").status_code == 200
    # prices and plan lists written under an alias apply to the model, whichever name the client uses
    assert chat(srv, free_key, "aliased").status_code == 403
    assert chat(srv, pro_key, "aliased").status_code == 402
    assert chat(srv, srv.admin_key, "pro-only").status_code == 200  # the operator's unlimited plan


def test_a_banned_account_gets_403_on_everything(srv):
    org_id, key = org_with_key(srv, plan="pro", cents=10)
    r = httpx.patch(f"{srv.url}/api/organizations/{org_id}", headers=srv.headers(), json={"status": "banned"})
    assert r.status_code == 200 and r.json()["status"] == "banned"
    for resp in (chat(srv, key), httpx.get(srv.v1 + "/models", headers={"Authorization": f"Bearer {key}"}),
                 httpx.get(srv.url + "/api/v1/balance", headers={"Authorization": f"Bearer {key}"})):
        assert resp.status_code == 403
        assert resp.json()["error"]["type"] == "permission_error"
    httpx.patch(f"{srv.url}/api/organizations/{org_id}", headers=srv.headers(), json={"status": "active"})
    assert chat(srv, key).status_code == 200


def test_job_holds_settle_later_and_refund_on_failure(srv):
    """The contract job runners use: hold at submission, settle (or refund) when the job ends."""
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    ctx = srv.app.state.ctx

    async def run() -> list[dict[str, Any]]:
        principal = await ctx.auth.resolve(key)
        model = ctx.catalog.get("stub-gpt")
        holds = []
        for mode, size in (("t2i", "1k"), ("i2i_pro_plus", "4k")):
            t = await ctx.gate.admit(principal, model, Task.TEXT_TO_IMAGE, job=True,
                                     estimate=Units(mode=mode, image_size=size, images=1))
            holds.append(t.hold())
        await ctx.gate.settle_hold(holds[0], None, ok=True)
        await ctx.gate.settle_hold(holds[1], None, ok=False)
        return holds
    holds = srv.on_server_loop(run())
    assert [h["reserved_micros"] for h in holds] == [50_000, 300_000]  # seed prices: t2i 1k $0.05, pro+ 4k $0.30
    assert wallet(srv, org_id)["balance_micros"] == 1_000_000 - 50_000


def test_a_job_settled_twice_moves_its_money_once(srv):
    """A runner can die after settling a job but before recording it; the next runner settles it again."""
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    ctx = srv.app.state.ctx

    async def run() -> None:
        principal = await ctx.auth.resolve(key)
        model = ctx.catalog.get("stub-gpt")
        t = await ctx.gate.admit(principal, model, Task.TEXT_TO_IMAGE, job=True,
                                 estimate=Units(mode="i2i_pro_plus", image_size="4k", images=1))
        hold = t.hold()
        for _ in range(3):  # refunded (failed) three times over: the refund happens once
            await ctx.gate.settle_hold(hold, None, ok=False)
    srv.on_server_loop(run())
    assert wallet(srv, org_id)["balance_micros"] == 1_000_000


def test_studio_video_prices_scale_with_resolution_and_duration(srv):
    prices = srv.app.state.ctx.gate.prices
    assert prices.cost("x", Units(mode="t2v", video_resolution="720p", video_seconds=5)) == 750_000
    assert prices.cost("x", Units(mode="i2v_pro", video_resolution="720p", video_seconds=10)) == 1_980_000
    assert prices.cost("x", Units(mode="t2v", video_resolution="1080p", video_seconds=5)) == 1_125_000
    assert prices.cost("x", Units(mode="t2i_pro", image_size="2048x2048")) == 100_000  # t2i_pro 2k $0.10


def test_studio_prices_each_generation_not_each_image(srv):
    """The pricing table reads "each generation deducts": t2i's four images are one $0.05, so $0.25 buys exactly five."""
    assert srv.app.state.ctx.gate.prices.cost("x", Units(mode="t2i", image_size="1k", images=4)) == 50_000
    org_id, key = org_with_key(srv, plan="pro", cents=25)
    headers = {"Authorization": f"Bearer {key}"}
    body = {"mode": "t2i", "positive_prompt": "a lighthouse at dusk"}
    ids = []
    for _ in range(5):
        r = httpx.post(srv.url + "/api/v1/generate", json=body, headers=headers, timeout=30)
        assert r.status_code == 200, r.text
        ids.append(r.json()["job_id"])
    sixth = httpx.post(srv.url + "/api/v1/generate", json=body, headers=headers, timeout=30)
    assert sixth.status_code == 402 and sixth.json()["code"] == "insufficient_balance", sixth.text
    jobs = srv.app.state.ctx.jobs

    async def finished(job_id: str) -> str:
        job = await jobs.queue.get(job_id)
        return (await jobs.wait(job, 60)).status  # woken by the runner once the job is final and settled

    assert [srv.on_server_loop(finished(i), timeout=90) for i in ids] == ["completed"] * 5
    for job_id in ids:
        status = httpx.get(f"{srv.url}/api/v1/status/{job_id}", headers=headers, timeout=30).json()
        assert status["status"] == "COMPLETED" and len(status["result_urls"]) == 4, status
    assert wallet(srv, org_id)["balance_micros"] == 0


def test_model_price_tables():
    from modelyard.config import PriceConfig
    from modelyard.pipeline.billing import ModelPrice, dollars

    img = ModelPrice(PriceConfig(per_image={"1024x1024": 0.04, "1024x1024/hd": 0.08, "default": 0.02}))
    assert img.cost(Units(images=2, image_size="1024x1024", image_quality="hd", requests=0)) == 160_000
    assert img.cost(Units(images=1, image_size="1024x1024", requests=0)) == 40_000
    assert img.cost(Units(images=1, image_size="512x512", requests=0)) == 20_000
    video = ModelPrice(PriceConfig(per_video_second={"720p": 0.10, "1080p": 0.20}))
    assert video.cost(Units(video_seconds=6, video_resolution="1080p", requests=0)) == 1_200_000
    speech = ModelPrice(PriceConfig(per_1k_characters=0.015, per_audio_minute=0.006))
    assert speech.cost(Units(characters=2000)) == 30_000 and speech.cost(Units(audio_seconds=30)) == 3_000
    tokens = ModelPrice(PriceConfig(input_per_1m=0.15, output_per_1m=0.60))
    assert tokens.cost(Units(input_tokens=1, output_tokens=0)) == 1  # a fraction of a micro-dollar rounds up
    assert dollars(1_234_500) == "1.2345" and dollars(50_000) == "0.05" and dollars(3_000_000) == "3.00"


def test_balance_and_me_in_the_studio_shape(srv):
    org = create_org(srv, "standard")
    top_up(srv, org["id"], 999)
    key = create_key(srv, org["id"])
    r = httpx.get(srv.url + "/api/v1/balance", headers={"Authorization": f"Bearer {key}"})
    assert r.json() == {"balance_cents": 999, "balance_dollars": "9.99", "balance_micros": 9_990_000}
    me = httpx.get(srv.url + "/api/v1/me", headers={"Authorization": f"Bearer {key}"}).json()
    assert me["organization_id"] == org["id"] and me["plan"] == "standard" and me["balance_cents"] == 999
    assert me["created_at"] and me["username"] == org["name"]


def test_queued_usage_and_refunds_are_flushed_on_shutdown(tmp_path, database_url, stub_server, stub):
    settings = make_settings(tmp_path, database_url=database_url, models=billing_models(stub_server[0].url),
                             usage_flush_seconds=3600.0)  # the background flush never runs in this test
    with running(settings) as s:
        org_id, key = org_with_key(s, plan="pro", cents=10)
        assert chat(s, key, "paid-tokens", max_tokens=20).status_code == 200
        assert chat(s, key, "stub-gpt").status_code == 200
        assert s.app.state.ctx.gate.usage.pending == 2
    # the server is gone: only what its shutdown wrote is in the database

    async def read(store):
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(usage_records.c.model_id, usage_records.c.price_micros).where(
                usage_records.c.org_id == org_id).order_by(usage_records.c.model_id))).all()
        return [tuple(r) for r in rows], await WalletRepo(store).balance(org_id), await WalletRepo(store).ledger_sum(org_id)
    rows, balance, ledger_sum = _db(s, read)
    assert [m for m, _ in rows] == ["paid-tokens", "stub-gpt"]
    assert balance == 100_000 - rows[0][1] and ledger_sum == balance  # the release was written at shutdown too


def test_a_hold_settled_weeks_after_admission_still_writes_its_usage_row(srv):
    """A job's latency is wall time since admission; weeks of it must not overflow the usage row (int4 on
    PostgreSQL), or the row - the operator's accounting - would fail to write."""
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    ctx = srv.app.state.ctx

    async def run() -> None:
        principal = await ctx.auth.resolve(key)
        call = await ctx.calls.admit(principal, ctx.catalog.get("paid-flat"), Task.CHAT,
                                     {"messages": [{"role": "user", "content": "hi"}]}, job=True,
                                     estimate=Units(input_tokens=1))
        hold = {**call.hold(), "admitted_at": time.time() - 30 * 86400}
        await ctx.calls.settle_hold(hold, None, ok=True)
    srv.on_server_loop(run())
    usage = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()["totals"]
    assert usage["requests"] == 1 and usage["succeeded"] == 1 and usage["price_micros"] == 10_000, usage
    assert wallet(srv, org_id)["balance_micros"] == 1_000_000 - 10_000
