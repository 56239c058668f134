"""POST /v1/completions with the official openai SDK: native on llama.cpp and OpenAI-compatible upstreams, through
chat elsewhere; stream and non-stream; echo, suffix, n, prompt lists; bad input as 400s naming the field."""

from __future__ import annotations

import httpx
import openai
import pytest

from modelyard.catalog.builtin import SMOLLM2_ID

from ...conftest import server_fixture
from ...support.text_server import text_server

PROMPT = "The capital of France is"


setup = server_fixture("setup", text_server)


@pytest.fixture
def client(setup):
    return openai.OpenAI(base_url=setup.srv.v1, api_key=setup.srv.admin_key, max_retries=0, timeout=120)


# ---------------------------------------------------------------- local llama.cpp (native, raw prompt)

def test_local_completion_continues_the_raw_prompt(client):
    resp = client.completions.create(model=SMOLLM2_ID, prompt=PROMPT, max_tokens=6, temperature=0)
    assert resp.object == "text_completion" and resp.id.startswith("cmpl-") and resp.model == SMOLLM2_ID
    choice = resp.choices[0]
    assert choice.index == 0 and choice.text.strip() and choice.finish_reason in ("stop", "length")
    assert resp.usage.prompt_tokens >= 5 and 0 < resp.usage.completion_tokens <= 6
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    # streamed, greedy: the same text, piece by piece, then usage when asked for
    chunks = list(client.completions.create(model=SMOLLM2_ID, prompt=PROMPT, max_tokens=6, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert all(c.object == "text_completion" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == choice.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [choice.finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == resp.usage.completion_tokens


def test_local_prompt_list_with_n_and_echo(client):
    prompts = ["Once upon a time", "Water boils at"]
    resp = client.completions.create(model=SMOLLM2_ID, prompt=prompts, n=2, echo=True, max_tokens=3, seed=3)
    assert [c.index for c in resp.choices] == [0, 1, 2, 3]
    for c in resp.choices:
        prompt = prompts[c.index // 2]
        assert c.text.startswith(prompt) and len(c.text) > len(prompt)
    assert resp.usage.completion_tokens <= 12
    streamed = list(client.completions.create(model=SMOLLM2_ID, prompt=prompts, echo=True, max_tokens=2, stream=True))
    by_index: dict[int, str] = {}
    for c in streamed:
        for ch in c.choices:
            by_index[ch.index] = by_index.get(ch.index, "") + ch.text
    assert sorted(by_index) == [0, 1] and all(by_index[i].startswith(prompts[i]) for i in (0, 1))


@pytest.mark.parametrize("extra, param", [({"suffix": " and that is all."}, "suffix"), ({"logprobs": 2}, "logprobs"),
                                          ({"best_of": 3}, "best_of")])
def test_local_refuses_what_it_cannot_do_naming_the_field(client, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=SMOLLM2_ID, prompt=PROMPT, max_tokens=2, **extra)
    assert info.value.body["param"] == param and info.value.body["code"] == "unsupported_parameter"


# ---------------------------------------------------------------- OpenAI-compatible upstream (native pass-through)

def test_async_is_refused_on_completions_and_never_forwarded(setup, stub, client):
    seen = len(stub.requests)
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="stub-gpt", prompt="x", max_tokens=4, extra_body={"async": True})
    assert info.value.body["param"] == "async"
    assert len(stub.requests) == seen


def test_upstream_native_completion_passes_through(setup, stub, client):
    resp = client.completions.create(model="stub-gpt", prompt=["a", "b"], n=2, echo=True, suffix="!", max_tokens=5,
                                     extra_body={"vendor_knob": 1})
    assert stub.paths == ["/v1/completions"]
    sent = stub.requests[-1]
    assert sent["model"] == "stub-model" and sent["suffix"] == "!" and sent["vendor_knob"] == 1 and sent["echo"]
    assert resp.model == "stub-gpt" and len(resp.choices) == 4
    assert resp.choices[3].text == "b" + stub.reply
    chunks = list(client.completions.create(model="stub-gpt", prompt="x", stream=True,
                                            stream_options={"include_usage": True}))
    assert all(c.model == "stub-gpt" for c in chunks)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == stub.reply
    assert chunks[-1].usage.total_tokens > 0


def test_upstream_without_completions_falls_back_to_chat_and_remembers(setup, stub, client):
    stub.no_completions = True
    resp = client.completions.create(model="stub-legacy", prompt="Say hi", max_tokens=7, temperature=0.5)
    assert stub.paths == ["/v1/completions", "/v1/chat/completions"]
    assert resp.choices[0].text == stub.reply and resp.object == "text_completion"
    chat = stub.requests[-1]
    assert chat["messages"] == [{"role": "user", "content": "Say hi"}]
    assert chat["max_tokens"] == 7 and chat["temperature"] == 0.5
    stub.paths.clear()
    chunks = list(client.completions.create(model="stub-legacy", prompt="Say hi", stream=True))
    assert stub.paths == ["/v1/chat/completions"]  # no second try at /completions
    assert "".join(c.choices[0].text for c in chunks if c.choices) == stub.reply


def test_operator_can_route_completions_through_chat(setup, stub, client):
    resp = client.completions.create(model="stub-viachat", prompt=["one", "two"], echo=True)
    assert stub.paths == ["/v1/chat/completions"] * 2
    assert stub.requests[0]["max_tokens"] == 16  # OpenAI's default for completions
    assert [c.text for c in resp.choices] == ["one" + stub.reply, "two" + stub.reply]
    assert resp.usage.prompt_tokens == 14  # both chats' usage, summed
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="stub-viachat", prompt="x", suffix="y")
    assert info.value.body["param"] == "suffix" and "through chat" in info.value.body["message"]


# ---------------------------------------------------------------- a backend with no completions at all (Anthropic)

def test_anthropic_backed_model_serves_completions_through_chat(setup, client):
    setup.provider.__init__()  # type: ignore[misc]
    resp = client.completions.create(model="claude", prompt="Tell me", max_tokens=9)
    sent = setup.provider.requests[-1]
    assert setup.provider.paths[-1].startswith("/v1/messages")
    assert sent["messages"][0]["content"] in ("Tell me", [{"type": "text", "text": "Tell me"}]) and sent["max_tokens"] == 9
    assert resp.choices[0].text and resp.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.completions.create(model="claude", prompt="Tell me", max_tokens=9, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == resp.choices[0].text
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, param", [
    ({"model": "stub-gpt"}, "prompt"),
    ({"model": "stub-gpt", "prompt": "x", "n": 0}, "n"),
    ({"model": "stub-gpt", "prompt": "x", "max_tokens": 0}, "max_tokens"),
    ({"model": "stub-gpt", "prompt": "x", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "stub-gpt", "prompt": "x", "temperature": 3}, "temperature"),
    ({"model": "stub-gpt", "prompt": {"text": "x"}}, "prompt"),
    ({"model": SMOLLM2_ID, "prompt": [[1, 2, 3]]}, "prompt"),
])
def test_bad_input_is_400_naming_the_field(setup, stub, body, param):
    srv = setup.srv
    r = httpx.post(srv.v1 + "/completions", headers=srv.headers(), json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == param and r.json()["error"]["type"] == "invalid_request_error"
    assert stub.requests == []


def test_unknown_model_and_missing_key(setup):
    srv = setup.srv
    r = httpx.post(srv.url + "/openai/v1/completions", headers=srv.headers(), json={"model": "nope", "prompt": "x"})
    assert r.status_code == 404 and r.json()["error"]["param"] == "model"
    r = httpx.post(srv.url + "/api/v1/completions", json={"model": "stub-gpt", "prompt": "x"})
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"


# ---------------------------------------------------------------- a remote worker (its own llama.cpp, over HTTP)

@pytest.mark.slow
def test_a_worker_serves_completions_and_responses(tmp_path):
    from ...conftest import make_settings, running
    from ...support.waiting import wait_until
    from ...support.workers import Worker, deployments, token_for

    settings = make_settings(tmp_path / "cp", builtin_models=False, worker_heartbeat_seconds=0.5,
                             worker_timeout_seconds=2.0)
    with running(settings) as plane:
        w = Worker(tmp_path, plane, token_for(plane, "default", ["worker"]), "wc").start()
        try:
            assert wait_until(lambda: deployments(plane).get("worker:wc") is not None)
            client = openai.OpenAI(base_url=plane.v1, api_key=plane.admin_key, max_retries=0, timeout=60)
            resp = client.completions.with_raw_response.create(model="tiny", prompt="a b", max_tokens=3, echo=True)
            assert resp.headers["x-modelyard-deployment"] == "worker:wc"
            body = resp.parse()
            assert body.object == "text_completion" and body.choices[0].text.startswith("a b")
            assert body.usage.completion_tokens <= 3
            chunks = list(client.completions.create(model="tiny", prompt="a b", max_tokens=3, stream=True))
            assert chunks and chunks[-1].choices[0].finish_reason in ("stop", "length")
            r = client.responses.create(model="tiny", input="hi", max_output_tokens=3)
            assert r.output[0].type == "message" and r.status in ("completed", "incomplete")
            assert r.usage.output_tokens > 0 and client.responses.retrieve(r.id).id == r.id
        finally:
            w.kill()
