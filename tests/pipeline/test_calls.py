"""The call path: every face reads the same text for the content filter and refuses it in its own envelope; every
authenticated request counts against its org's limits and carries the rate-limit headers."""

from __future__ import annotations

import time
from typing import Any, Iterator

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from modelyard.config import PlanConfig
from modelyard.pipeline.filter import filtered_text
from modelyard.protocols.openai.schema import ChatRequest
from modelyard.server.routes.openai import ChatFraming
from modelyard.types import Task

from ..conftest import Running, make_settings, running, upstream_models
from ..support.accounts import create_key, create_org, org_with_key, wallet

# Personal data Presidio finds: an e-mail address and a US phone number.
PII = "Write to john.smith@example.com or call +1 212 555 0199 about the order."


@pytest.fixture(scope="module")
def blocked(tmp_path_factory: pytest.TempPathFactory, stub_server: Any) -> Iterator[tuple[Running, str]]:
    """A server whose one org blocks personal data, classified by the built-in Presidio model."""
    tmp = tmp_path_factory.mktemp("blocked")
    with running(make_settings(tmp, models=upstream_models(stub_server[0].url), auth_cache_ttl=0.0)) as srv:
        org = create_org(srv, "pro")
        key = create_key(srv, org["id"], ["user:read", "user:write", "admin:write"])
        r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/content-filter-policy", headers=srv.headers(key),
                       json={"action": "block", "categories": ["pii"]})
        assert r.status_code == 201, r.text
        yield srv, key


def _post(srv: Running, key: str, path: str, body: dict[str, Any], **headers: str) -> httpx.Response:
    return httpx.post(srv.url + path, headers={"Authorization": f"Bearer {key}", **headers}, json=body, timeout=120)


def _refused_openai(r: httpx.Response, param: str) -> None:
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["code"] == "content_filter" and err["param"] == param and "pii" in err["message"], err


@pytest.mark.slow
def test_every_face_refuses_the_same_personal_data_in_its_own_envelope(blocked: tuple[Running, str]) -> None:
    srv, key = blocked
    oa = openai.OpenAI(base_url=srv.v1, api_key=key, max_retries=0, timeout=120)
    user = [{"role": "user", "content": PII}]

    # OpenAI, through the official SDK: chat (plain, streamed, async job), completions, Responses, embeddings
    for call, param in (
        (lambda: oa.chat.completions.create(model="stub-gpt", messages=user), "messages"),  # type: ignore[arg-type]
        (lambda: oa.chat.completions.create(model="stub-gpt", messages=user, stream=True), "messages"),  # type: ignore[arg-type]
        (lambda: oa.chat.completions.create(model="stub-gpt", messages=user, extra_body={"async": True}),  # type: ignore[arg-type]
         "messages"),
        (lambda: oa.completions.create(model="stub-gpt", prompt=PII), "prompt"),
        (lambda: oa.responses.create(model="stub-gpt", input=PII), "input"),
        (lambda: oa.embeddings.create(model="stub-embed", input=[PII]), "input"),
        (lambda: oa.images.generate(model="demo-image", prompt=PII), "prompt"),
        (lambda: oa.audio.speech.create(model="espeak-ng", voice="alloy", input=PII), "input"),
    ):
        with pytest.raises(openai.BadRequestError) as caught:
            call()
        body = caught.value.body
        assert isinstance(body, dict) and body.get("code") == "content_filter", body
        assert body["param"] == param and "pii" in body["message"], body

    # a tool result is the caller's words too, and so are system instructions
    tool_turn = [{"role": "user", "content": "look it up"},
                 {"role": "assistant", "content": None, "tool_calls": [
                     {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                 {"role": "tool", "tool_call_id": "c1", "content": PII}]
    _refused_openai(_post(srv, key, "/v1/chat/completions", {"model": "stub-gpt", "messages": tool_turn}), "messages")
    _refused_openai(_post(srv, key, "/v1/chat/completions", {"model": "stub-gpt", "messages": [
        {"role": "system", "content": PII}, {"role": "user", "content": "hello"}]}), "messages")
    # the blocking video route runs as a job; its refusal comes before anything is queued
    _refused_openai(_post(srv, key, "/v1/videos/generations", {"model": "demo-video", "prompt": PII}), "prompt")

    # Anthropic, through the official SDK: its envelope has no param, so the message names the field
    an = anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0, timeout=120)
    with pytest.raises(anthropic.BadRequestError) as refused:
        an.messages.create(model="stub-gpt", max_tokens=16, messages=[{"role": "user", "content": PII}])
    err = refused.value.body["error"]  # type: ignore[index]
    assert err["type"] == "invalid_request_error" and "messages" in err["message"] and "pii" in err["message"]

    # Gemini, through the official SDK: INVALID_ARGUMENT with a field violation on `contents`
    gm = genai.Client(api_key=key, http_options=genai_types.HttpOptions(base_url=srv.url, api_version="v1beta",
                                                                                 timeout=120_000))
    with pytest.raises(genai_errors.ClientError) as gerr:
        gm.models.generate_content(model="stub-gpt", contents=PII)
    assert gerr.value.code == 400 and gerr.value.status == "INVALID_ARGUMENT"
    violation = gerr.value.details["error"]["details"][0]["fieldViolations"][0]
    assert violation["field"] == "contents" and "pii" in violation["description"]

    # the job API, the studio and fal: each its own envelope, naming the field as the client sent it
    r = _post(srv, key, "/api/jobs", {"model_id": "demo-image", "task": "text-to-image", "payload": {"prompt": PII}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "payload.prompt", r.text
    assert r.json()["error"]["code"] == "content_filter"
    r = _post(srv, key, "/api/v1/generate", {"mode": "t2i", "positive_prompt": PII})
    assert r.status_code == 400 and r.json() == {"error": r.json()["error"], "code": "content_filter",
                                                 "field": "positive_prompt"}, r.text
    r = _post(srv, key, "/fal/modelyard/demo-image", {"prompt": PII})
    assert r.status_code == 400, r.text
    assert r.json()["error_type"] == "content_filter" and r.json()["detail"][0]["loc"] == ["body", "prompt"]

    # and nothing was queued or charged for any of them
    jobs = httpx.get(srv.url + "/api/jobs", headers={"Authorization": f"Bearer {key}"}).json()
    assert jobs["data"] == []


def test_one_definition_of_the_filtered_text() -> None:
    """Roles the caller speaks through are read; the model's own turns are not; analysis tasks are not filtered."""
    req = ChatRequest.model_validate({"model": "m", "messages": [
        {"role": "system", "content": "S"}, {"role": "developer", "content": "D"},
        {"role": "user", "content": [{"type": "text", "text": "U"}]},
        {"role": "assistant", "content": "A"}, {"role": "tool", "tool_call_id": "t", "content": "T"}]})
    assert filtered_text(Task.CHAT, req) == ("S\nD\nU\nT", "messages")
    payload = {"messages": [{"role": "user", "content": [{"type": "text", "text": "secret plan"}]}]}
    assert filtered_text(Task.CHAT, payload) == ("secret plan", "messages")  # a job's payload reads the same
    assert filtered_text(Task.EMBEDDING, {"input": ["a", "b"]}) == ("a\nb", "input")
    assert filtered_text(Task.TEXT_TO_IMAGE, {"positive_prompt": "p"}) == ("p", "positive_prompt")
    assert filtered_text(Task.COMPLETION, {"prompt": [1, 2, 3]}) == (None, "prompt")  # token ids: nothing to read
    assert filtered_text(Task.PII, {"input": PII}) == (None, "input")


def test_every_authenticated_request_counts_and_carries_the_rate_limit_headers(tmp_path: Any, stub_server: Any
                                                                             ) -> None:
    """Reads count as API requests (models, job polls, usage); paid calls count once, at admission."""
    plans = {"tiny": PlanConfig(limits=[{"scope": "org", "class": "api", "window": "minute", "count": 5}])}
    with running(make_settings(tmp_path, models=upstream_models(stub_server[0].url), plans=plans,
                               auth_cache_ttl=0.0)) as srv:
        # the limits count in fixed minute windows: held a second into one, so the six requests never straddle two
        now = time.time()
        srv.app.state.ctx.gate.limits.clock = lambda: now - now % 60 + 1
        org = create_org(srv, "tiny")
        key = create_key(srv, org["id"], ["user:read", "user:write", "admin:read"])
        auth = {"Authorization": f"Bearer {key}"}
        seen = []
        for method, path, body in (("GET", "/v1/models", None), ("GET", "/api/jobs", None),
                                   ("GET", f"/api/organizations/{org['id']}/usage", None),
                                   ("POST", "/v1/chat/completions",
                                    {"model": "stub-gpt", "messages": [{"role": "user", "content": "hi"}]}),
                                   ("GET", "/api/v1/me", None)):
            r = httpx.request(method, srv.url + path, headers=auth, json=body, timeout=30)
            assert r.status_code == 200, (path, r.text)
            seen.append(int(r.headers["x-ratelimit-remaining-requests"]))
            assert r.headers["x-ratelimit-limit-requests"] == "5"
        assert seen == [4, 3, 2, 1, 0]  # each request counted exactly once, the chat call included
        r = httpx.get(srv.v1 + "/models", headers=auth)
        assert r.status_code == 429 and r.json()["error"]["type"] == "rate_limit_error"
        assert int(r.headers["retry-after"]) >= 1 and r.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_stream_closed_before_its_relay_began_is_released(tmp_path: Any, stub_server: Any, stub: Any) -> None:
    """A client that leaves between the stream's opening and its first byte is not charged, and the upstream
    stream is closed (a generator closed before it starts would run no cleanup of its own)."""
    up = {"backend": "openai", "base_url": stub_server[0].url + "/v1", "model": "stub-model"}
    models = [{"id": "paid", "type": "text", "price": {"per_request": 0.01}, "deployments": [up]}]
    with running(make_settings(tmp_path, models=models, auth_cache_ttl=0.0)) as srv:
        org_id, key = org_with_key(srv, plan="pro", cents=100)
        ctx = srv.app.state.ctx

        async def leave_before_the_first_byte() -> None:
            principal = await ctx.auth.resolve(key)
            model = ctx.router.resolve("paid", Task.CHAT)
            req = ChatRequest.model_validate({"model": "paid", "stream": True,
                                              "messages": [{"role": "user", "content": "hi"}]})
            async with ctx.calls.start(principal, model, Task.CHAT, req) as call:
                first, stream, deployment = await call.open(ctx.router.open_stream(model, req, None))
            assert call.ticket.reserved == 10_000  # one cent, reserved while the stream is open
            await call.relay(first, stream, deployment, ChatFraming()).aclose()
            assert call.ticket.closed

        srv.on_server_loop(leave_before_the_first_byte())
        assert wallet(srv, org_id)["balance_cents"] == 100  # released in full
        usage = httpx.get(f"{srv.url}/api/organizations/{org_id}/usage", headers=srv.headers()).json()["totals"]
        assert usage["requests"] == 1 and usage["failed"] == 1 and usage["price_micros"] == 0, usage
