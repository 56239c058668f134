"""Rate limits: rule selection, headers, 429s, token-per-minute estimates, Redis shared by two gateways, Redis loss."""

from __future__ import annotations

import asyncio
import secrets
import time

import httpx
import pytest

from modelyard.config import PlanConfig
from modelyard.errors import RateLimited
from modelyard.pipeline.auth import Principal
from modelyard.pipeline.gate import Gate
from modelyard.pipeline.units import Units
from modelyard.pipeline.limits import Limiter, MemoryCounters
from modelyard.store.db import Store
from modelyard.types import Task

from ..conftest import Running, make_settings, running, upstream_models
from ..support.accounts import chat, org_with_key
from ..support.clock import Clock
from ..support.servers import free_port
from ..support.paths import REPO

PLANS = {
    "tiny": {"limits": [{"scope": "token", "kind": "chat", "count": 3}, {"scope": "org", "class": "api", "count": 50}]},
    "pair": {"limits": [{"scope": "org", "class": "api", "count": 5}]},
    "tpm": {"limits": [{"scope": "token", "count": 100, "unit": "tokens"}]},
}


def _on_clock(*servers: Running) -> Clock:
    """The servers' rate-limit windows read one clock the test holds: a count never straddles a window edge."""
    clock = Clock()
    for s in servers:
        s.app.state.ctx.gate.limits.clock = clock
    return clock


# ---------------------------------------------------------------- units

def test_memory_counters_refuse_without_counting():
    c = MemoryCounters()
    assert c.take(["a", "b"], [2, 1], [1, 1], [60, 60], 100.0) == (0, [1, 1])
    assert c.take(["a", "b"], [2, 1], [1, 1], [60, 60], 100.0) == (2, [1])  # b is full...
    assert c.take(["a"], [2], [1], [60], 100.0) == (0, [2])  # ...and a was not counted by the refusal
    assert c.take(["a"], [2], [1], [60], 161.0) == (0, [1])  # a new window


def test_redis_counters_match_memory_counters(redis_url):
    """The Lua script has the memory counters' semantics: all-or-nothing, refusals count nowhere, keys expire."""
    from modelyard.pipeline.limits import RedisCounters

    async def run():
        r = RedisCounters(redis_url, f"test-{secrets.token_hex(6)}:")
        try:
            assert await r.take(["a", "b"], [2, 1], [1, 1], [60, 60], 0) == (0, [1, 1])
            assert await r.take(["a", "b"], [2, 1], [1, 1], [60, 60], 0) == (2, [1])
            assert await r.take(["a"], [2], [1], [60], 0) == (0, [2])
            await r.adjust("a", -2)
            assert await r.take(["a"], [2], [1], [60], 0) == (0, [1])
            await r.adjust("missing", 5)  # a correction never creates a counter without expiry
            assert await r.client.exists(r.prefix + "missing") == 0
            assert 0 < await r.client.ttl(r.prefix + "a") <= 61
        finally:
            await r.aclose()
    asyncio.run(run())


def test_rules_apply_by_class_and_kind():
    lim = Limiter({})
    free_chat = lim.applicable("free", "api", "chat")
    assert sorted((r.scope, r.count) for r in free_chat) == [("org", 60), ("token", 10)]
    assert sorted((r.scope, r.count) for r in lim.applicable("free", "job", "images")) == [("org", 10), ("token", 5)]
    assert sorted((r.scope, r.count) for r in lim.applicable("pro", "api", "chat")) == [("org", 600), ("token", 300)]
    assert [(r.scope, r.count) for r in lim.applicable("enterprise", "job", None)] == [("org", 1000)]
    studio = lim.applicable("studio", "api", None)
    assert any(r.seconds == 1 and r.count == 5 and r.scope == "token" for r in studio)
    assert lim.applicable("unlimited", "api", "chat") == ()


def test_job_submissions_count_against_job_rules_only():
    lim = Limiter({"j": PlanConfig.model_validate({"limits": [{"scope": "org", "class": "job", "count": 2}]})},
                  clock=Clock())

    async def run():
        for _ in range(5):
            headers, _ = await lim.admit("j", "org1", "tok1", "api", None)
            assert headers == {}  # no api rule on this plan
        await lim.admit("j", "org1", "tok1", "job", None)
        await lim.admit("j", "org1", "tok2", "job", None)  # org scope: another key shares the count
        with pytest.raises(RateLimited) as err:
            await lim.admit("j", "org1", "tok3", "job", None)
        assert err.value.headers["Retry-After"] == "50" and err.value.headers["X-RateLimit-Limit-Requests"] == "2"
        lim.clock.advance(50)  # the next window has room again
        await lim.admit("j", "org1", "tok3", "job", None)
    asyncio.run(run())


def test_tokens_per_minute_reserve_an_estimate_and_settle_on_real_usage():
    lim = Limiter({"tpm": PlanConfig.model_validate(PLANS["tpm"])}, clock=Clock())

    async def run():
        headers, taken = await lim.admit("tpm", "o", "t", "api", "chat", tokens=60)
        assert headers["X-RateLimit-Remaining-Tokens"] == "40"
        with pytest.raises(RateLimited):
            await lim.admit("tpm", "o", "t", "api", "chat", tokens=60)
        lim.correct(taken, 10)  # the call used 10, not the 60 reserved
        headers, _ = await lim.admit("tpm", "o", "t", "api", "chat", tokens=60)
        assert headers["X-RateLimit-Remaining-Tokens"] == "30"
    asyncio.run(run())


def test_admit_costs_microseconds_for_a_free_model(tmp_path):
    """A free call on the memory limiter queues its usage row and never a wallet movement; prints what it costs."""
    big = {"limits": [{"scope": "token", "kind": "chat", "count": 10**9}, {"scope": "org", "class": "api", "count": 10**9}]}
    settings = make_settings(tmp_path, plans={"bench": big})
    gate = Gate(settings, Store(settings.resolved_database_url))
    model = type("M", (), {"id": "smollm2-135m-instruct"})()
    principals = [Principal(token_id=f"tok{i}", org_id="org", org_name="o", plan="bench", scopes=frozenset(),
                            expires_at=None) for i in range(50)]

    async def run(n: int, settle: bool = True) -> float:
        start = time.perf_counter()
        for i in range(n):
            t = await gate.admit(principals[i % 50], model, Task.CHAT, kind="chat",
                                 estimate=Units(input_tokens=20, output_tokens=100))
            if settle:
                t.settle(Units(input_tokens=20, output_tokens=10))
        return (time.perf_counter() - start) / n

    asyncio.run(run(2000))  # warm
    admit_only = asyncio.run(run(20000, settle=False))
    per_call = asyncio.run(run(20000))
    unlimited = [Principal("t", "o", "o", "unlimited", frozenset(), None)]
    principals[:] = unlimited * 50
    per_call_unlimited = asyncio.run(run(20000))
    print(f"\nadmit alone, free model, memory limiter, 2-rule plan: {admit_only * 1e6:.1f} us/call")
    print(f"admit+settle, free model, memory limiter: {per_call * 1e6:.1f} us/call on a 2-rule plan, "
          f"{per_call_unlimited * 1e6:.1f} us/call on the unlimited plan")
    # numbers, not a timed assertion (DESIGN 5): bench/gate.py measures this properly
    assert gate.usage.pending > 0 and not gate._moves  # free: usage queued, no wallet movement


# ---------------------------------------------------------------- through the server

@pytest.fixture
def srv(tmp_path, database_url, stub_server, stub):
    settings = make_settings(tmp_path, database_url=database_url, models=upstream_models(stub_server[0].url),
                             plans=PLANS, auth_cache_ttl=0.0)
    with running(settings) as s:
        yield s


def test_headers_then_429_with_retry_after_in_the_openai_envelope(srv):
    clock = _on_clock(srv)
    window_end = str(int(clock() // 60 + 1) * 60)
    _, key = org_with_key(srv, plan="tiny")
    for remaining in (2, 1, 0):
        r = chat(srv, key)
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "3"  # the token rule: tighter than the org's 50
        assert r.headers["x-ratelimit-remaining-requests"] == str(remaining)
        assert r.headers["x-ratelimit-reset-requests"] == window_end
    r = chat(srv, key)
    assert r.status_code == 429
    assert r.json()["error"]["type"] == "rate_limit_error" and r.json()["error"]["code"] == "rate_limit"
    assert r.headers["retry-after"] == "50"  # the clock stands 10 s into its minute
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    # another key of the same org has its own per-key count
    _, other = org_with_key(srv, plan="tiny")
    assert chat(srv, other).status_code == 200
    # and the next window lets the first key through again
    clock.advance(50)
    assert chat(srv, key).status_code == 200


def test_the_default_free_plan_reproduces_the_seed(srv):
    _, key = org_with_key(srv, plan="free")
    r = chat(srv, key)
    assert r.status_code == 200 and r.headers["x-ratelimit-limit-requests"] == "10"
    assert "x-ratelimit-limit-requests" not in chat(srv, srv.admin_key).headers  # the operator: unlimited


def test_two_gateways_sharing_redis_let_exactly_n_through(tmp_path, stub_server, stub, redis_url):
    prefix = f"test-{secrets.token_hex(6)}:"
    common = dict(models=upstream_models(stub_server[0].url), plans=PLANS, redis_url=redis_url,
                  redis_key_prefix=prefix, auth_cache_ttl=0.0)
    with running(make_settings(tmp_path, **common)) as a, running(make_settings(tmp_path, **common)) as b:
        _on_clock(a, b)
        _, key = org_with_key(a, plan="pair")  # 5 API requests per minute per org, counted in Redis

        async def burst():
            async with httpx.AsyncClient(timeout=30) as client:
                calls = [client.post((a if i % 2 else b).v1 + "/chat/completions",
                                     headers={"Authorization": f"Bearer {key}"},
                                     json={"model": "stub-gpt", "messages": [{"role": "user", "content": "hi"}]})
                         for i in range(16)]
                return await asyncio.gather(*calls)
        codes = [r.status_code for r in asyncio.run(burst())]
        assert codes.count(200) == 5 and codes.count(429) == 11
        assert httpx.get(a.url + "/readyz").json()["rate_limits"] == {"backend": "redis", "status": "ok"}


def test_without_redis_the_gateway_serves_on_local_limits_and_says_so(tmp_path, stub_server, stub, caplog):
    dead = f"redis://127.0.0.1:{free_port()}"
    settings = make_settings(tmp_path, models=upstream_models(stub_server[0].url), plans=PLANS, redis_url=dead)
    with running(settings) as s:
        _on_clock(s)
        _, key = org_with_key(s, plan="tiny")
        codes = [chat(s, key).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]  # still limited, by this process's own counters
        ready = httpx.get(s.url + "/readyz")
        assert ready.status_code == 200
        assert ready.json()["rate_limits"]["status"] == "degraded"
        assert "Redis" in ready.json()["rate_limits"]["detail"]
    assert any("Redis rate limiter unreachable" in r.message for r in caplog.records)


@pytest.mark.slow
def test_two_gateway_processes_sharing_redis(tmp_path, stub_server, stub, redis_url):
    """The same, with two real `modelyard serve` processes on one database."""
    import os

    import yaml

    from ..conftest import ADMIN_KEY
    from ..support.processes import serve, stop

    (tmp_path / "modelyard.yaml").write_text(yaml.safe_dump({
        "models": upstream_models(stub_server[0].url)[:1], "plans": PLANS, "builtin_models": False}))
    src = str(REPO / "src")
    env = {"MODELYARD_ADMIN_KEY": ADMIN_KEY, "MODELYARD_REDIS_URL": redis_url, "MODELYARD_AUTH_CACHE_TTL": "0",
           "MODELYARD_REDIS_KEY_PREFIX": f"test-{secrets.token_hex(6)}:",
           "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    first, url_a = serve(tmp_path, env=env)
    try:
        second, url_b = serve(tmp_path, env=env)
    except BaseException:
        stop(first)
        raise
    try:
        org = httpx.post(url_a + "/api/organizations", headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                         json={"name": "pair-org", "plan": "pair"}).json()
        key = httpx.post(f"{url_a}/api/organizations/{org['id']}/tokens",
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"}, json={}).json()["secret"]
        answers = [httpx.post((url_a if i % 2 else url_b) + "/v1/chat/completions", timeout=30,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": "stub-gpt", "messages": [{"role": "user", "content": "hi"}]})
                   for i in range(12)]
        # two processes keep real time: the burst may straddle a minute's edge, so count per window (every
        # answer, 200 or 429, names its window's end); in a window that refused any, exactly 5 went through
        by_window: dict[str, list[int]] = {}
        for r in answers:
            by_window.setdefault(r.headers["x-ratelimit-reset-requests"], []).append(r.status_code)
        assert len(by_window) <= 2 and any(429 in codes for codes in by_window.values()), by_window
        for codes in by_window.values():
            assert codes.count(200) == 5 if 429 in codes else codes.count(200) <= 5, by_window
    finally:
        stop(second)
        stop(first)
