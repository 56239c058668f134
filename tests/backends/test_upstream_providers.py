"""Anthropic and Gemini deployments behind the OpenAI chat surface, driven by the official openai SDK."""

from __future__ import annotations

import base64
import json

import openai
import pytest

from ..conftest import make_settings, running
from ..support.provider_stubs import ProviderControl, create_provider_stub
from ..support.servers import ServerThread

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode()
WEATHER = [{"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                             "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                            "required": ["city"]}}}]


@pytest.fixture(scope="module")
def providers(tmp_path_factory):
    control = ProviderControl()
    with ServerThread(create_provider_stub(control)) as stub:
        models = [
            {"id": "claude", "deployments": [{"backend": "anthropic", "base_url": stub.url + "/v1",
                                              "api_key": "sk-ant-test", "model": "claude-x"}]},
            {"id": "gemini", "deployments": [{"backend": "gemini", "base_url": stub.url + "/v1beta",
                                              "api_key": "goog-test", "model": "gemini-x"}]},
        ]
        settings = make_settings(tmp_path_factory.mktemp("providers"), models=models, cooldown_failures=1_000_000)
        with running(settings) as srv:
            yield srv, control


@pytest.fixture(params=["claude", "gemini"])
def setup(request, providers):
    srv, control = providers
    control.__init__()  # type: ignore[misc]
    client = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, max_retries=0)
    return request.param, client, control


def test_text_with_system_prompt_and_sampling(setup):
    model, client, control = setup
    resp = client.chat.completions.create(
        model=model, temperature=1.5, top_p=0.9, max_tokens=50, stop=["END"],
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hello"}])
    assert resp.choices[0].message.content == "Echo: hello" and resp.model == model
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens > 0
    sent, headers = control.requests[-1], control.headers[-1]
    if model == "claude":
        assert sent["model"] == "claude-x" and sent["system"] == "Be brief."
        assert sent["temperature"] == 1.0 and sent["top_p"] == 0.9  # Anthropic's range tops out at 1
        assert sent["max_tokens"] == 50 and sent["stop_sequences"] == ["END"]
        assert headers["x-api-key"] == "sk-ant-test" and headers["anthropic-version"] == "2023-06-01"
    else:
        assert control.paths[-1] == "/v1beta/models/gemini-x:generateContent"
        assert sent["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert sent["generationConfig"] == {"temperature": 1.5, "topP": 0.9, "maxOutputTokens": 50,
                                            "stopSequences": ["END"]}
        assert headers["x-goog-api-key"] == "goog-test"


def test_images_reach_the_provider(setup):
    model, client, control = setup
    resp = client.chat.completions.create(model=model, messages=[{"role": "user", "content": [
        {"type": "text", "text": "what is this"}, {"type": "image_url", "image_url": {"url": PNG}}]}])
    assert resp.choices[0].message.content.endswith("[image]")
    sent = json.dumps(control.requests[-1])
    assert base64.b64encode(b"\x89PNG\r\n\x1a\nfake").decode() in sent and "image/png" in sent


def test_tool_call_round_trip(setup):
    model, client, control = setup
    resp = client.chat.completions.create(model=model, tools=WEATHER, messages=[
        {"role": "user", "content": "What's the weather in Paris?"}],
        tool_choice={"type": "function", "function": {"name": "get_weather"}})
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    follow = client.chat.completions.create(model=model, tools=WEATHER, messages=[
        {"role": "user", "content": "What's the weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id, "content": "sunny"}])
    assert "sunny" in follow.choices[0].message.content
    sent = json.dumps(control.requests[-1])
    assert ("tool_result" in sent) if model == "claude" else ("functionResponse" in sent)


def test_streaming_text_with_usage(setup):
    model, client, control = setup
    chunks = list(client.chat.completions.create(model=model, stream=True, stream_options={"include_usage": True},
                                                 messages=[{"role": "user", "content": "one two three"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Echo: one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    assert control.requests[-1].get("stream") is True if model == "claude" else "alt=sse" in control.paths[-1]


def test_streaming_tool_call(setup):
    model, client, _ = setup
    chunks = list(client.chat.completions.create(model=model, stream=True, tools=WEATHER, tool_choice="required",
                                                 messages=[{"role": "user", "content": "weather in Paris?"}]))
    calls: dict[int, dict] = {}
    for c in chunks:
        for tc in (c.choices[0].delta.tool_calls or []) if c.choices else []:
            entry = calls.setdefault(tc.index, {"name": None, "args": ""})
            entry["name"] = entry["name"] or (tc.function.name if tc.function else None)
            entry["args"] += (tc.function.arguments or "") if tc.function else ""
    assert calls[0]["name"] == "get_weather" and json.loads(calls[0]["args"]) == {"city": "Paris"}
    assert any(c.choices and c.choices[0].finish_reason == "tool_calls" for c in chunks)


@pytest.mark.parametrize("mode,status", [("ratelimit", 429), ("overloaded", 503), ("error500", 502)])
def test_provider_errors_are_mapped(setup, mode, status):
    model, client, control = setup
    control.mode = mode
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "x"}])
    assert info.value.status_code == status
    assert "stub" in info.value.message
    with pytest.raises(openai.APIStatusError) as info:
        list(client.chat.completions.create(model=model, stream=True, messages=[{"role": "user", "content": "x"}]))
    assert info.value.status_code == status


def test_n_above_one_is_refused_for_anthropic(providers):
    srv, _ = providers
    client = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, max_retries=0)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", n=2, messages=[{"role": "user", "content": "x"}])
    assert info.value.body["param"] == "n"
