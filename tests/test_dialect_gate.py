"""Every billable Anthropic and Gemini call passes the gate: admitted with its kind, settled with its usage (after
the last chunk for streams), failed when the backend fails, and the gate's headers reach the client."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import anthropic
import httpx
import pytest
from google import genai
from google.genai import types

from modelyard.pipeline.gate import Gate, Ticket, Units

from .conftest import fresh_postgres_database
from .support.dialect_servers import dialect_server

HI = [{"role": "user", "content": "Say hello."}]


@dataclass
class Record:
    admitted: list[tuple[str, str, str | None]] = field(default_factory=list)  # (model, task, kind)
    settled: list[Units | None] = field(default_factory=list)
    failed: int = 0


class RecordingGate(Gate):
    """The real pass-through gate, plus a record of what each route asked of it and a header to pass on."""

    def __init__(self, record: Record) -> None:
        super().__init__()
        self.record = record

    async def admit(self, principal: Any, model: Any, task: Any, **kw: Any) -> Ticket:
        ticket = await super().admit(principal, model, task, **kw)
        self.record.admitted.append((ticket.model_id, task.value, kw.get("kind")))
        record = self.record

        class Recorded(Ticket):
            def settle(self, units: Units | None = None, deployment: Any = None) -> None:
                record.settled.append(units)
                super().settle(units, deployment)

            def fail(self, status: int = 502) -> None:
                record.failed += 1
                super().fail(status)

        return Recorded(principal=ticket.principal, model_id=ticket.model_id, task=ticket.task,
                        headers={"X-RateLimit-Limit-Requests": "77"})


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def env(request, tmp_path_factory, stub_server, postgres_problem):
    tmp = tmp_path_factory.mktemp("gate")
    if request.param == "sqlite":
        with dialect_server(tmp, None, stub_server[0].url) as pair:
            yield pair[0]
        return
    with fresh_postgres_database(postgres_problem) as url, dialect_server(tmp, url, stub_server[0].url) as pair:
        yield pair[0]


@pytest.fixture
def record(env, stub):
    ctx = env.app.state.ctx
    original, rec = ctx.gate, Record()
    ctx.gate = RecordingGate(rec)
    yield rec
    ctx.gate = original


def test_anthropic_create_and_stream_settle_with_usage(env, record):
    client = anthropic.Anthropic(base_url=env.url, api_key=env.admin_key, max_retries=0)
    raw = client.messages.with_raw_response.create(model="stub-gpt", max_tokens=10, messages=HI)
    assert raw.headers["x-ratelimit-limit-requests"] == "77"
    with client.messages.stream(model="stub-gpt", max_tokens=10, messages=HI) as stream:
        stream.get_final_message()
    assert record.admitted == [("stub-gpt", "chat", "chat")] * 2
    assert record.settled == [Units(input_tokens=7, output_tokens=5)] * 2 and record.failed == 0


def test_gemini_generate_stream_and_embed_go_through_the_gate(env, record):
    client = genai.Client(api_key=env.admin_key, http_options=types.HttpOptions(base_url=env.url, api_version="v1beta"))
    client.models.generate_content(model="stub-gpt", contents="hi")
    list(client.models.generate_content_stream(model="stub-gpt", contents="hi"))
    client.models.embed_content(model="stub-embed", contents=["abc", "de"])
    assert record.admitted == [("stub-gpt", "chat", "chat"), ("stub-gpt", "chat", "chat"),
                               ("stub-embed", "embedding", "embeddings")]
    assert record.settled == [Units(input_tokens=7, output_tokens=5)] * 2 + [Units(input_tokens=2)]


def test_counting_tokens_is_free(env, record):
    headers = {"x-api-key": env.admin_key}
    assert httpx.post(env.url + "/v1/messages/count_tokens", headers=headers,
                      json={"model": "stub-gpt", "messages": HI}).status_code == 200
    assert httpx.post(env.url + "/v1beta/models/stub-gpt:countTokens", headers={"x-goog-api-key": env.admin_key},
                      json={"contents": [{"parts": [{"text": "hi"}]}]}).status_code == 200
    assert record.admitted == []


def test_backend_failures_fail_the_ticket(env, record, stub):
    stub.mode = "error500"
    resp = httpx.post(env.url + "/v1/messages", headers={"x-api-key": env.admin_key},
                      json={"model": "stub-gpt", "max_tokens": 5, "messages": HI})
    assert resp.status_code == 502 and resp.json()["error"]["type"] == "api_error"
    stub.mode = "midstream_error"
    with httpx.stream("POST", env.url + "/v1beta/models/stub-gpt:streamGenerateContent?alt=sse",
                      headers={"x-goog-api-key": env.admin_key}, json={"contents": [{"parts": [{"text": "hi"}]}]}) as r:
        r.read()
    assert record.failed == 2 and record.settled == []
