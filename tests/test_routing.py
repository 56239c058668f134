"""The router: retries on another deployment, fallback models, cooldown with a half-open probe, regions."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import make_settings, running
from .support.metrics import value
from .support.waiting import wait_until

MSG = [{"role": "user", "content": "hi"}]


@pytest.fixture
def routed(tmp_path, stub_server, stub_server_b, stub, stub_b):
    a, b = stub_server[0].url + "/v1", stub_server_b[0].url + "/v1"
    models = [
        {"id": "pair", "deployments": [
            {"name": "a", "backend": "openai", "base_url": a, "model": "m", "region": "eu", "timeout": 2},
            {"name": "b", "backend": "openai", "base_url": b, "model": "m", "region": "us", "timeout": 2}]},
        {"id": "only-a", "fallbacks": ["only-b"], "deployments": [
            {"name": "a", "backend": "openai", "base_url": a, "model": "m", "timeout": 2}]},
        {"id": "only-b", "deployments": [{"name": "b", "backend": "openai", "base_url": b, "model": "m"}]},
    ]
    settings = make_settings(tmp_path, models=models, cooldown_failures=2, cooldown_seconds=0.5,
                             region_hosts={"eu.localhost": "eu"})
    with running(settings) as srv:
        yield srv


def chat(srv, model="pair", **kw):
    return httpx.post(srv.v1 + "/chat/completions", headers={**srv.headers(), **kw.pop("headers", {})},
                      json={"model": model, "messages": MSG, **kw}, timeout=10)


def test_a_failing_deployment_is_retried_on_the_healthy_one(routed, stub, stub_b):
    stub.mode = "error500"
    for _ in range(4):
        r = chat(routed)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "Hello from upstream B"
        assert r.headers["x-modelyard-deployment"] == "b"
    # a stream is retried too, as long as nothing was sent yet
    r = chat(routed, stream=True)
    assert r.status_code == 200 and r.headers["x-modelyard-deployment"] == "b"
    chunks = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == "Hello from upstream B"


def test_fallback_model_when_every_deployment_fails(routed, stub, stub_b):
    stub.mode = "overloaded"
    r = chat(routed, model="only-a")
    assert r.status_code == 200, r.text
    assert r.headers["x-modelyard-model"] == "only-b" and r.json()["model"] == "only-b"
    stub_b.mode = "error500"
    r = chat(routed, model="only-a")
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"


def test_client_errors_are_not_retried(routed, stub, stub_b):
    stub.mode = stub_b.mode = "bad_request"
    r = chat(routed)
    assert r.status_code == 400
    assert len(stub.requests) + len(stub_b.requests) == 1


def test_cooldown_then_half_open_probe(routed, stub, stub_b):
    router = routed.app.state.ctx.router
    # a long cooldown, ended by hand below: on a loaded machine a short one could lapse between the checks
    short, router.cooldown_seconds = router.cooldown_seconds, 30.0
    try:
        stub.mode = "error500"
        pair_a = router.stats["pair/a"]
        while pair_a.consecutive_failures < 2:  # least-busy choice with random ties: a is tried sooner or later
            assert chat(routed).status_code == 200
        assert pair_a.cooldown_until > 0
        seen = len(stub.requests)
        for _ in range(6):
            assert chat(routed).headers["x-modelyard-deployment"] == "b"
        assert len(stub.requests) == seen  # cooling down: a is not even tried
        stub.mode = "ok"
        pair_a.cooldown_until = time.monotonic()  # the cooldown is over
        for _ in range(12):  # one probe goes to a; it succeeds, so a is trusted again
            chat(routed)
        assert len(stub.requests) > seen and pair_a.cooldown_until == 0 and pair_a.consecutive_failures == 0
    finally:
        router.cooldown_seconds = short


def test_everything_cooling_down_is_503_with_retry_after(routed, stub, stub_b):
    router = routed.app.state.ctx.router
    # a long cooldown for this test: on a loaded machine 0.5 s can pass between the failures and the check
    short, router.cooldown_seconds = router.cooldown_seconds, 30.0
    try:
        stub.mode = stub_b.mode = "error500"
        for _ in range(3):
            chat(routed)
        r = chat(routed)
        assert r.status_code == 503 and r.json()["error"]["code"] == "deployments_cooling_down"
        assert int(r.headers["retry-after"]) >= 1
    finally:
        router.cooldown_seconds = short
        for stats in router.stats.values():
            stats.cooldown_until, stats.consecutive_failures, stats.probing = 0.0, 0, False


def test_region_pinning_by_header_and_by_host(routed, stub, stub_b):
    for _ in range(3):
        assert chat(routed, headers={"X-Region": "us"}).headers["x-modelyard-deployment"] == "b"
        assert chat(routed, headers={"X-Region": "EU"}).headers["x-modelyard-deployment"] == "a"
    # the host wins over the header
    r = chat(routed, headers={"Host": "eu.localhost", "X-Region": "us"})
    assert r.headers["x-modelyard-deployment"] == "a"
    r = chat(routed, headers={"X-Region": "ap"})
    assert r.status_code == 503 and "'ap'" in r.json()["error"]["message"]
    assert chat(routed, headers={"X-Region": "eu; drop"}).status_code == 400
    # a region whose deployments fail does not spill over into another region
    stub.mode = "error500"
    seen_b = len(stub_b.requests)
    r = chat(routed, headers={"X-Region": "eu"})
    assert r.status_code == 502 and len(stub_b.requests) == seen_b


def test_sdk_sees_the_healthy_answer(routed, stub):
    stub.mode = "error500"
    client = openai.OpenAI(base_url=routed.v1, api_key=routed.admin_key, max_retries=0)
    resp = client.chat.completions.create(model="pair", messages=MSG)
    assert resp.choices[0].message.content == "Hello from upstream B"


def test_client_disconnect_cancels_the_upstream_call(routed, stub, stub_b):
    stub.delay = stub_b.delay = 3.0
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(routed.v1 + "/chat/completions", headers=routed.headers(), timeout=0.5,
                   json={"model": "pair", "messages": MSG})
    wait_until(lambda: stub.disconnects + stub_b.disconnects == 1, 5, "the upstream to see the hang-up")


def test_client_disconnect_mid_stream_closes_the_upstream_stream(routed, stub, stub_b):
    for s in (stub, stub_b):
        s.chunk_delay, s.reply = 0.2, "one two three four five six seven eight"
    with httpx.stream("POST", routed.v1 + "/chat/completions", headers=routed.headers(), timeout=10,
                      json={"model": "pair", "messages": MSG, "stream": True}) as r:
        next(line for line in r.iter_lines() if '"content": "one"' in line or '"content":"one"' in line)
    wait_until(lambda: stub.disconnects + stub_b.disconnects == 1, 5, "the upstream to see the hang-up")
    stats = routed.app.state.ctx.router.stats
    wait_until(lambda: stats["pair/a"].in_flight == 0 and stats["pair/b"].in_flight == 0, 5, "both slots to free")


def test_first_byte_timeout_moves_to_the_next_deployment(tmp_path, stub_server, stub_server_b, stub, stub_b):
    models = [{"id": "impatient", "deployments": [
        {"name": "slow", "backend": "openai", "base_url": stub_server[0].url + "/v1", "first_byte_timeout": 0.3},
        {"name": "fast", "backend": "openai", "base_url": stub_server_b[0].url + "/v1", "weight": 0.001}]}]
    stub.delay = 2.0
    with running(make_settings(tmp_path, models=models)) as srv:
        for _ in range(3):  # the slow one would answer 200 after 2 s: "fast" means its first byte timed out
            r = chat(srv, model="impatient")
            assert r.status_code == 200 and r.headers["x-modelyard-deployment"] == "fast"


def test_metrics_expose_deployment_counters(routed, stub, stub_b):
    stub.mode = "error500"
    stats = routed.app.state.ctx.router.stats
    for _ in range(50):  # ties are broken at random: go on until deployment a has failed at least once
        assert chat(routed).status_code == 200
        if stats["pair/a"].failures:
            break
    assert httpx.get(routed.url + "/metrics").status_code == 401  # admin:read unless metrics_public
    text = httpx.get(routed.url + "/metrics", headers=routed.headers()).text
    assert "# TYPE modelyard_deployment_requests_total counter" in text
    b_ok = stats["pair/b"].successes
    assert b_ok >= 1 and value(text, "modelyard_deployment_requests_total", model="pair", deployment="b",
                               backend="openai", region="us", outcome="success") == b_ok
    failures = value(text, "modelyard_deployment_requests_total", model="pair", deployment="a", outcome="failure")
    assert failures == stats["pair/a"].failures >= 1
    assert value(text, "modelyard_model_state", model="pair", state="online") == 1
