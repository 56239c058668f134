"""An OpenAI-compatible upstream behind Modelyard, driven by the official openai SDK."""

from __future__ import annotations

import time

import httpx
import openai
import pytest


@pytest.fixture
def client(server):
    return openai.OpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0)


def test_non_stream_passes_fields_through_and_renames_model(server, stub, client):
    resp = client.chat.completions.create(
        model="stub-gpt", messages=[{"role": "user", "content": "hi"}], temperature=0.3, max_tokens=20,
        stop=["\n\n", "END"], seed=42, extra_body={"repetition_penalty": 1.1, "top_k": 5},
    )
    assert resp.choices[0].message.content == "Hello from the stub upstream"
    assert resp.model == "stub-gpt"
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens > 0
    sent = stub.requests[-1]
    assert sent["model"] == "stub-model"  # the upstream's own name for it
    assert sent["repetition_penalty"] == 1.1 and sent["top_k"] == 5  # unknown fields reach the upstream
    assert sent["temperature"] == 0.3 and sent["stop"] == ["\n\n", "END"] and sent["seed"] == 42
    assert stub.headers[-1]["authorization"] == "Bearer upstream-secret"  # the deployment's key, not the client's


def test_alias_resolves(server, stub, client):
    resp = client.chat.completions.create(model="gpt-stub", messages=[{"role": "user", "content": "hi"}])
    assert resp.model == "stub-gpt"


def test_stream_is_relayed_as_it_arrives(server, stub, client):
    stub.chunk_delay = 0.25
    stub.reply = "one two three four"
    received: list[tuple[float, str]] = []
    stream = client.chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}],
                                            stream=True, stream_options={"include_usage": True})
    usage = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            received.append((time.monotonic(), chunk.choices[0].delta.content))
        if chunk.usage:
            usage = chunk.usage
        assert chunk.model == "stub-gpt"
    assert "".join(t for _, t in received) == "one two three four"
    # the first word reached the client well before the stub sent the last one: nothing is buffered
    assert received[0][0] < stub.chunk_sent_at[-1] - 0.4
    assert usage is not None and usage.completion_tokens == 4


def test_stream_headers(server, stub):
    with httpx.stream("POST", server.v1 + "/chat/completions", headers=server.headers(),
                      json={"model": "stub-gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]}) as r:
        body = r.read().decode()
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        assert r.headers["x-modelyard-model"] == "stub-gpt"
        assert r.headers["x-modelyard-deployment"] == "stub-eu"
    assert body.rstrip().endswith("data: [DONE]")


@pytest.mark.parametrize("mode,status,code", [
    ("error500", 502, "upstream_error"),
    ("overloaded", 503, "overloaded"),
    ("ratelimit", 429, "upstream_rate_limited"),
    ("unauthorized", 502, "upstream_error"),
    ("bad_request", 400, "upstream_rejected_request"),
    ("garbage", 502, "upstream_error"),
])
def test_upstream_failures_are_mapped(server, stub, mode, status, code):
    stub.mode = mode
    r = httpx.post(server.v1 + "/chat/completions", headers=server.headers(),
                   json={"model": "stub-gpt", "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["code"] == code and err["message"]
    if mode == "ratelimit":
        assert r.headers["retry-after"] == "7"
    # the same failure on a stream, before any byte was sent, keeps its status
    r = httpx.post(server.v1 + "/chat/completions", headers=server.headers(),
                   json={"model": "stub-gpt", "stream": True, "messages": [{"role": "user", "content": "x"}]})
    assert r.status_code == status and r.json()["error"]["code"] == code


def test_unreachable_upstream_is_502(server, client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="stub-dead", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502
    assert info.value.body["code"] == "upstream_error"


def test_slow_upstream_times_out_as_502(server, stub, client):
    stub.delay = 1.5  # past the deployment's 0.5 s timeout; waited out, the stub would answer 200
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="stub-slow", messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == 502


def test_error_after_first_byte_is_a_final_sse_event(server, stub, client):
    stub.mode = "midstream_error"
    stub.reply = "a b c"
    got = []
    with pytest.raises(openai.APIError) as info:
        for chunk in client.chat.completions.create(model="stub-gpt", stream=True,
                                                    messages=[{"role": "user", "content": "x"}]):
            if chunk.choices and chunk.choices[0].delta.content:
                got.append(chunk.choices[0].delta.content)
    assert got == ["a"]
    assert "mid-stream" in str(info.value)


async def test_async_client_stream_and_not(server, stub):
    client = openai.AsyncOpenAI(base_url=server.v1, api_key=server.admin_key, max_retries=0)
    resp = await client.chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "hi"}])
    assert resp.choices[0].message.content == stub.reply
    parts = []
    async for chunk in await client.chat.completions.create(model="stub-gpt", stream=True,
                                                            messages=[{"role": "user", "content": "hi"}]):
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
    assert "".join(parts) == stub.reply
    await client.close()


def test_embeddings_pass_through_an_openai_upstream(server, stub, client):
    resp = client.embeddings.create(model="stub-embed", input=["abc", "hello"])
    assert [d.embedding[0] for d in resp.data] == [3.0, 5.0] and resp.model == "stub-embed"
    assert stub.requests[-1]["model"] == "stub-embedder" and stub.requests[-1]["input"] == ["abc", "hello"]


def test_a_task_no_deployment_can_serve_is_a_clear_400(server):
    r = httpx.post(server.v1 + "/score", headers=server.headers(),
                   json={"model": "stub-gpt", "text_1": "a", "text_2": "b"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "model"
    r = httpx.post(server.v1 + "/videos/generations", headers=server.headers(),
                   json={"model": "stub-video", "prompt": "hi"})
    assert r.status_code == 400 and "can serve text-to-video" in r.json()["error"]["message"]


def test_speech_passes_through_an_openai_upstream(server, stub):
    r = httpx.post(server.v1 + "/audio/speech", headers=server.headers(),
                   json={"model": "stub-tts", "input": "hello there", "voice": "alloy", "response_format": "wav"})
    assert r.status_code == 200, r.text
    assert r.content == b"RIFF\x00\x00\x00\x00WAVEhello there" and r.headers["content-type"] == "audio/wav"
    assert stub.requests[-1] == {"model": "stub-tts", "input": "hello there", "voice": "alloy", "response_format": "wav"}
