"""Every billable Anthropic and Gemini call passes the gate: admitted with its kind (the plan's per-kind rate limit
is the one in its headers), settled with its usage (after the last chunk for streams), failed when the backend fails.
Asserted on what the real gate wrote: usage rows and the rate-limit headers."""

from __future__ import annotations

import functools
from typing import Any

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types
from sqlalchemy import select

from modelyard.store.tables import usage_records

from ...conftest import Running, server_fixture
from ...support.accounts import org_with_key
from ...support.dialect_servers import dialect_server

HI = [{"role": "user", "content": "Say hello."}]
# one request rule per kind, each with its own count, so a call's headers say which kind admission counted it as
PLANS = {"gate": {"limits": [{"scope": "token", "kind": "chat", "count": 77},
                             {"scope": "token", "kind": "embeddings", "count": 55}]}}

env = server_fixture("env", functools.partial(dialect_server, plans=PLANS))


@pytest.fixture
def srv(env: Any) -> Running:
    return env[0]


@pytest.fixture
def account(srv: Running, stub: Any) -> tuple[str, str]:
    """A fresh organization on the `gate` plan and its key: (org id, key)."""
    return org_with_key(srv, plan="gate")


def usage_rows(srv: Running, org_id: str) -> list[tuple[str, str, int, int, str]]:
    """What the gate wrote for this org, written now: (model, task, input tokens, output tokens, status)."""
    ctx = srv.app.state.ctx

    async def read() -> list[tuple[str, str, int, int, str]]:
        await ctx.gate.flush()
        c = usage_records.c
        async with ctx.store.engine.connect() as conn:
            rows = await conn.execute(select(c.model_id, c.task, c.input_tokens, c.output_tokens, c.status)
                                      .where(c.org_id == org_id))
            return sorted(tuple(r) for r in rows)
    return srv.on_server_loop(read())


def test_anthropic_create_and_stream_settle_with_usage(srv, account):
    org_id, key = account
    client = anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="stub-gpt", max_tokens=10, messages=HI)
    assert raw.headers["x-ratelimit-limit-requests"] == "77"  # counted as chat
    assert raw.headers["x-ratelimit-remaining-requests"] == "76"
    with client.messages.stream(model="stub-gpt", max_tokens=10, messages=HI) as stream:
        stream.get_final_message()
        assert stream.response.headers["x-ratelimit-remaining-requests"] == "75"
    assert usage_rows(srv, org_id) == [("stub-gpt", "chat", 7, 5, "ok")] * 2


def test_gemini_generate_stream_and_embed_go_through_the_gate(srv, account):
    org_id, key = account
    client = genai.Client(api_key=key, http_options=types.HttpOptions(base_url=srv.url, api_version="v1beta"))
    client.models.generate_content(model="stub-gpt", contents="hi")
    list(client.models.generate_content_stream(model="stub-gpt", contents="hi"))
    client.models.embed_content(model="stub-embed", contents=["abc", "de"])
    assert usage_rows(srv, org_id) == [("stub-embed", "embedding", 2, 0, "ok")] + [("stub-gpt", "chat", 7, 5, "ok")] * 2
    # the kinds admission counted them as: chat twice, embeddings once
    headers = {"x-goog-api-key": key}
    chat = httpx.post(srv.url + "/v1beta/models/stub-gpt:generateContent", headers=headers,
                      json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert chat.headers["x-ratelimit-limit-requests"] == "77" and chat.headers["x-ratelimit-remaining-requests"] == "74"
    embed = httpx.post(srv.url + "/v1beta/models/stub-embed:embedContent", headers=headers,
                       json={"content": {"parts": [{"text": "abc"}]}})
    assert embed.status_code == 200, embed.text
    assert embed.headers["x-ratelimit-limit-requests"] == "55" and embed.headers["x-ratelimit-remaining-requests"] == "53"


def test_counting_tokens_is_free(srv, account):
    org_id, key = account
    assert httpx.post(srv.url + "/v1/messages/count_tokens", headers={"x-api-key": key},
                      json={"model": "stub-gpt", "messages": HI}).status_code == 200
    assert httpx.post(srv.url + "/v1beta/models/stub-gpt:countTokens", headers={"x-goog-api-key": key},
                      json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200
    assert usage_rows(srv, org_id) == []


def test_backend_failures_fail_the_ticket(srv, account, stub):
    org_id, key = account
    stub.mode = "error500"
    resp = httpx.post(srv.url + "/v1/messages", headers={"x-api-key": key},
                      json={"model": "stub-gpt", "max_tokens": 5, "messages": HI})
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "api_error"
    stub.mode = "midstream_error"
    with httpx.stream("POST", srv.url + "/v1beta/models/stub-gpt:streamGenerateContent?alt=sse",
                      headers={"x-goog-api-key": key}, json={"contents": [{"parts": [{"text": "hi"}]}]}) as r:
        r.read()
    assert usage_rows(srv, org_id) == [("stub-gpt", "chat", 0, 0, "failed")] * 2
