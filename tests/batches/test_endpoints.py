"""Every batch endpoint end to end through the official openai SDK: each line's body in the output file has the shape
(and, where the model is deterministic, the content) of what the sync route answers for the same body."""

from __future__ import annotations

import base64
import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai

from ..conftest import quiet_server, server_fixture, upstream_models
from ..support.accounts import create_key, create_org, top_up
from ..support.jobs import FAST, job_models
from ..support.waiting import wait_until

SETTINGS = {**FAST, "builtin_models": True, "auth_cache_ttl": 0.0, "allow_private_urls": True,
            "batch_concurrency": 8, "job_concurrency": 8}


@contextlib.contextmanager
def _server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Any]:
    only_enterprise = {"id": "echo-enterprise", "type": "text", "plans": ["enterprise"],
                       "deployments": [{"backend": "echo"}]}
    with quiet_server(tmp, database_url, [*job_models(0.5), *upstream_models(stub_url), only_enterprise],
                      **SETTINGS) as srv:
        yield srv


server = server_fixture("server", _server)


def _client(srv: Any) -> openai.OpenAI:
    org = create_org(srv, "pro")
    top_up(srv, org["id"], 1000)
    return openai.OpenAI(api_key=create_key(srv, org["id"]), base_url=srv.v1, max_retries=0, timeout=120)


def _batch(client: openai.OpenAI, endpoint: str, bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Run `bodies` as one batch on `endpoint`; its output file's lines in input order (every line must succeed)."""
    data = b"".join(json.dumps({"custom_id": f"l{i}", "method": "POST", "url": endpoint, "body": b}).encode() + b"\n"
                    for i, b in enumerate(bodies))
    file_id = client.files.create(file=("in.jsonl", data), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint=endpoint, completion_window="24h")  # type: ignore[arg-type]

    def ended() -> Any:
        b = client.batches.retrieve(batch.id)
        return b if b.status in ("completed", "failed", "expired", "cancelled") else None
    done = wait_until(ended, 180, f"the {endpoint} batch to end", interval=0.1)
    errors = [] if done.error_file_id is None else client.files.content(done.error_file_id).text
    assert done.status == "completed" and done.error_file_id is None, (done, errors)
    assert done.request_counts.total == done.request_counts.completed == len(bodies)
    out = [json.loads(x) for x in client.files.content(done.output_file_id).text.splitlines()]
    assert [x["custom_id"] for x in out] == [f"l{i}" for i in range(len(bodies))]
    for x in out:
        assert x["error"] is None and x["response"]["status_code"] == 200 and x["id"].startswith("batch_req_")
    return [x["response"]["body"] for x in out]


def _sync(srv: Any, client: openai.OpenAI, endpoint: str, body: dict[str, Any]) -> httpx.Response:
    r = httpx.post(srv.url + endpoint, json=body, headers={"Authorization": f"Bearer {client.api_key}"}, timeout=120)
    assert r.status_code == 200, r.text
    return r


def _shape(x: Any) -> Any:
    """A JSON value's structure: object keys (recursively), a list's items' shapes, scalars' types."""
    if isinstance(x, dict):
        return {k: _shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_shape(v) for v in x]
    return "number" if isinstance(x, (int, float)) and not isinstance(x, bool) else type(x).__name__


def _same_shape(batch: Any, sync: Any) -> None:
    assert _shape(batch) == _shape(sync), (batch, sync)


def test_completions(server):
    client = _client(server)
    bodies = [{"model": "echo", "prompt": "say these words", "max_tokens": 16},  # a chat model, via one-message chats
              {"model": "stub-gpt", "prompt": "Hello", "max_tokens": 8}]  # an upstream with /v1/completions
    got = _batch(client, "/v1/completions", bodies)
    for body, answer in zip(bodies, got):
        sync = client.completions.create(**body)
        assert answer["object"] == "text_completion" and answer["model"] == sync.model
        assert answer["choices"][0]["text"] == sync.choices[0].text
        assert answer["usage"]["prompt_tokens"] == sync.usage.prompt_tokens
        assert answer["usage"]["completion_tokens"] == sync.usage.completion_tokens
        _same_shape({k: v for k, v in answer.items() if k != "system_fingerprint"},
                    {k: v for k, v in _sync(server, client, "/v1/completions", body).json().items()
                     if k != "system_fingerprint"})


def test_responses(server):
    client = _client(server)
    bodies = [{"model": "echo", "input": "repeat after me"},
              {"model": "stub-gpt", "input": [{"role": "user", "content": "Hello"}], "instructions": "be brief"}]
    got = _batch(client, "/v1/responses", bodies)
    for body, answer in zip(bodies, got):
        sync = _sync(server, client, "/v1/responses", body).json()
        assert answer["object"] == "response" and answer["status"] == "completed" and answer["id"].startswith("resp_")
        assert answer["output"][0]["content"][0]["text"] == sync["output"][0]["content"][0]["text"]
        assert answer["usage"]["input_tokens"] == sync["usage"]["input_tokens"]
        _same_shape(answer, sync)
    # a batch line's response is stored like any: it can be read back and continued
    stored = client.responses.retrieve(got[0]["id"])
    assert stored.output_text == "repeat after me"


def test_moderations(server):
    client = _client(server)
    bodies = [{"model": "presidio-pii", "input": "mail john.smith@example.com about it"},
              {"model": "omni-moderation-latest", "input": ["a calm sentence", "call 212-555-0187 now"]},
              {"input": "no model named: the sync route's default"}]
    got = _batch(client, "/v1/moderations", bodies)
    for body, answer in zip(bodies, got):
        sync = _sync(server, client, "/v1/moderations", body).json()
        assert answer["results"] == sync["results"] and answer["model"] == sync["model"]
        assert client.moderations.create(**body).results[0].flagged == answer["results"][0]["flagged"]
        _same_shape(answer, sync)
    assert got[0]["results"][0]["flagged"] and not got[1]["results"][0]["flagged"]


def test_images(server):
    client = _client(server)
    bodies = [{"model": "demo-image", "prompt": "a red square", "size": "64x64", "steps": 1,
               "response_format": "b64_json"},
              {"model": "demo-image", "prompt": "a blue circle", "size": "64x64", "steps": 1, "n": 2}]
    got = _batch(client, "/v1/images/generations", bodies)
    png = base64.b64decode(got[0]["data"][0]["b64_json"])
    assert png[:4] == b"\x89PNG"
    assert len(got[1]["data"]) == 2
    for item in got[1]["data"]:  # a signed media link the gateway serves
        r = httpx.get(item["url"], timeout=30)
        assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    for body, answer in zip(bodies, got):
        _same_shape(answer, _sync(server, client, "/v1/images/generations", body).json())


def test_rerank(server):
    client = _client(server)
    docs = ["The weather today is sunny.", "Machine learning is a subset of artificial intelligence.", "I like pizza."]
    bodies = [{"model": "all-minilm-l6-v2", "query": "What is machine learning?", "documents": docs},
              {"model": "minilm", "query": "food", "documents": docs, "top_n": 1, "return_documents": True}]
    got = _batch(client, "/v1/rerank", bodies)
    for body, answer in zip(bodies, got):
        sync = _sync(server, client, "/v1/rerank", body).json()
        assert [r["index"] for r in answer["results"]] == [r["index"] for r in sync["results"]]
        _same_shape({k: v for k, v in answer.items() if k != "id"}, {k: v for k, v in sync.items() if k != "id"})
    assert got[0]["results"][0]["index"] == 1 and len(got[1]["results"]) == 1


def test_score(server):
    client = _client(server)
    bodies = [{"model": "all-minilm-l6-v2", "text_1": "A cat sits on the mat.",
               "text_2": ["A kitten is on the rug.", "Stock markets fell sharply."]}]
    got = _batch(client, "/v1/score", bodies)
    sync = _sync(server, client, "/v1/score", bodies[0]).json()
    assert [round(d["score"], 4) for d in got[0]["data"]] == [round(d["score"], 4) for d in sync["data"]]
    assert got[0]["data"][0]["score"] > got[0]["data"][1]["score"]
    _same_shape({k: v for k, v in got[0].items() if k != "id"}, {k: v for k, v in sync.items() if k != "id"})


def test_speech(server, espeak):
    client = _client(server)
    bodies = [{"model": "espeak-ng", "input": "hello from a batch", "voice": "alloy", "response_format": "wav"},
              {"model": "stub-tts", "input": "hello upstream", "voice": "alloy"}]
    got = _batch(client, "/v1/audio/speech", bodies)
    for body, answer in zip(bodies, got):
        sync = _sync(server, client, "/v1/audio/speech", body)
        assert answer["object"] == "audio.speech"
        assert answer["content_type"] == sync.headers["content-type"].split(";")[0]
        audio = base64.b64decode(answer["data"])
        assert audio[:4] == sync.content[:4] and audio
    assert base64.b64decode(got[0]["data"])[:4] == b"RIFF"


def test_a_line_names_a_model_its_plan_may_call(server):
    """Validation's plan check is admission's (Gate.plan_allows): a pro org's file fails on the enterprise model,
    while the operator's (unlimited) runs it."""
    body = {"model": "echo-enterprise", "messages": [{"role": "user", "content": "only for some"}]}
    line = json.dumps({"custom_id": "l0", "method": "POST", "url": "/v1/chat/completions", "body": body}).encode()
    client = _client(server)
    file_id = client.files.create(file=("in.jsonl", line + b"\n"), purpose="batch").id
    batch = client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")

    def ended() -> Any:
        b = client.batches.retrieve(batch.id)
        return b if b.status in ("completed", "failed") else None
    failed = wait_until(ended, 60, "the batch to fail validation", interval=0.1)
    assert failed.status == "failed", failed
    assert [(e.line, e.code, e.param) for e in failed.errors.data] == [(1, "model_not_in_plan", "body.model")]
    operator = openai.OpenAI(api_key=server.admin_key, base_url=server.v1, max_retries=0, timeout=120)
    got = _batch(operator, "/v1/chat/completions", [body])
    assert got[0]["choices"][0]["message"]["content"] == "only for some"
