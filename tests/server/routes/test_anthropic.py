"""Anthropic Messages dialect, driven by the official anthropic SDK against local, OpenAI-upstream and Gemini-upstream
models, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import anthropic
import httpx
import pytest

from modelyard.catalog.builtin import SMOLLM2_ID

from ...conftest import server_fixture
from ...support.dialect_servers import dialect_server, providers, srv  # noqa: F401 (fixtures on env)

LOCAL, OPENAI_UP, GEMINI_UP, CLAUDE_UP = SMOLLM2_ID, "stub-gpt", "gemini-up", "claude-up"
WEATHER = {"name": "get_weather", "description": "Weather for a city",
           "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}
# a small local model needs its arguments bounded, or it may ramble inside the JSON string
LOCAL_WEATHER = {**WEATHER, "input_schema": {"type": "object", "additionalProperties": False, "required": ["city"],
                                             "properties": {"city": {"type": "string", "maxLength": 30}}}}
HI = [{"role": "user", "content": "Say hello."}]


env = server_fixture("env", dialect_server)


@pytest.fixture
def client(srv):
    return anthropic.Anthropic(base_url=srv.url, api_key=srv.admin_key, max_retries=0, timeout=120)


# ---------------------------------------------------------------- create

@pytest.mark.parametrize("model", [LOCAL, OPENAI_UP, GEMINI_UP])
def test_create_answers_a_message_with_usage(client, stub, providers, model):
    msg = client.messages.create(model=model, max_tokens=12, messages=HI, system="Be brief.", extra_body={"temperature": 0},
                                 stop_sequences=["END"])
    assert msg.type == "message" and msg.role == "assistant" and msg.model == model
    assert msg.id.startswith("msg_")
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text.strip()
    assert msg.stop_reason in ("end_turn", "max_tokens")
    assert msg.usage.input_tokens > 0 and 0 < msg.usage.output_tokens <= 12 + 4
    if model == OPENAI_UP:
        assert msg.content[0].text == "Hello from the stub upstream"
        sent = stub.requests[-1]
        assert sent["messages"][0] == {"role": "system", "content": "Be brief."}
        assert sent["max_tokens"] == 12 and sent["stop"] == ["END"] and sent["temperature"] == 0
    if model == GEMINI_UP:
        assert msg.content[0].text == "Echo: Say hello."
        assert providers.requests[-1]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}
        assert providers.requests[-1]["generationConfig"]["maxOutputTokens"] == 12


def test_local_model_stops_at_max_tokens(client):
    msg = client.messages.create(model=LOCAL, max_tokens=3, extra_body={"temperature": 0},
                                 messages=[{"role": "user", "content": "Write a long story about the sea."}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 3


def test_images_reach_the_upstream(client, providers):
    png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    msg = client.messages.create(model=GEMINI_UP, max_tokens=20, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}]}])
    assert msg.content[0].text == "Echo: What is this? [image]"
    assert providers.requests[-1]["contents"][0]["parts"][1] == {"inlineData": {"mimeType": "image/png", "data": png}}


# ---------------------------------------------------------------- streaming

@pytest.mark.parametrize("model", [LOCAL, OPENAI_UP, GEMINI_UP])
def test_stream_text_and_final_message(client, model):
    with client.messages.stream(model=model, max_tokens=10, extra_body={"temperature": 0}, messages=HI) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.strip() and final.content[0].text == text
    assert final.stop_reason in ("end_turn", "max_tokens")
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0
    if model == OPENAI_UP:
        assert text == "Hello from the stub upstream"


def test_stream_event_sequence_is_exact(client):
    events = list(client.messages.create(model=OPENAI_UP, max_tokens=10, messages=HI, stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["message_start", "content_block_start"]  # the SDK swallows pings
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[2:-3]) == {"content_block_delta"} and len(kinds[2:-3]) == 5  # one per word
    assert all(e.delta.type == "text_delta" for e in events[2:-3])
    delta = events[-2]
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens == 5


@pytest.mark.parametrize("model", [LOCAL, OPENAI_UP, CLAUDE_UP])
def test_stream_reports_input_tokens_in_message_start(client, model):
    """message_start carries the prompt's tokens: exact (the tokenizer) for a local model, estimated for an OpenAI
    upstream until its usage arrives; the SDK's final message keeps a count above zero."""
    with client.messages.stream(model=model, max_tokens=6, extra_body={"temperature": 0}, messages=HI,
                                system="Be brief.") as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start"
    started = events[0].message.usage.input_tokens
    assert started > 0 and final.usage.input_tokens > 0
    if model == LOCAL:
        counted = client.messages.count_tokens(model=LOCAL, messages=HI, system="Be brief.").input_tokens
        assert started == counted == final.usage.input_tokens


def _stop_word(client) -> tuple[str, str]:
    """A greedy answer of the local model, and a word from its middle to stop at."""
    text = client.messages.create(model=LOCAL, max_tokens=30, extra_body={"temperature": 0},
                                  messages=[{"role": "user", "content": "Name three colors."}]).content[0].text
    words = [w.strip(".,!?:;") for w in text.split() if len(w.strip(".,!?:;")) > 3]
    assert words, text
    return text, words[len(words) // 2]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_stop_sequence_is_named_on_the_local_model(client, stream):
    text, cut = _stop_word(client)
    kw = dict(model=LOCAL, max_tokens=30, extra_body={"temperature": 0}, stop_sequences=["never-said-xyz", cut],
              messages=[{"role": "user", "content": "Name three colors."}])
    if stream:
        with client.messages.stream(**kw) as s:
            streamed = "".join(s.text_stream)
            msg = s.get_final_message()
        assert msg.content[0].text == streamed
    else:
        msg = client.messages.create(**kw)
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == cut
    answer = msg.content[0].text if msg.content else ""
    assert cut not in answer and text.startswith(answer)
    plain = client.messages.create(model=LOCAL, max_tokens=30, extra_body={"temperature": 0},
                                   stop_sequences=["never-said-xyz"],
                                   messages=[{"role": "user", "content": "Name three colors."}])
    assert plain.stop_reason in ("end_turn", "max_tokens") and plain.stop_sequence is None


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
def test_stop_sequence_of_a_claude_upstream_passes_through(client, providers, stream):
    kw = dict(model=CLAUDE_UP, max_tokens=20, stop_sequences=["hello"],
              messages=[{"role": "user", "content": "Say hello twice."}])
    if stream:
        with client.messages.stream(**kw) as s:
            msg = s.get_final_message()
    else:
        msg = client.messages.create(**kw)
    assert msg.content[0].text == "Echo: Say "
    assert msg.stop_reason == "stop_sequence" and msg.stop_sequence == "hello"
    assert providers.requests[-1]["stop_sequences"] == ["hello"]


def test_stream_headers_and_sse_framing(srv):
    with httpx.stream("POST", srv.url + "/v1/messages", timeout=30,
                      headers={"x-api-key": srv.admin_key, "anthropic-version": "2023-06-01"},
                      json={"model": OPENAI_UP, "max_tokens": 10, "messages": HI, "stream": True}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["x-modelyard-model"] == OPENAI_UP
        frames = resp.read().decode().strip().split("\n\n")
    assert frames[1] == 'event: ping\ndata: {"type":"ping"}'
    for frame in frames:
        name, data = frame.split("\n")
        assert name.startswith("event: ") and json.loads(data.removeprefix("data: "))["type"] == name[7:]


def test_error_after_the_stream_began_is_a_final_error_event(srv, stub):
    stub.mode = "midstream_error"
    with httpx.stream("POST", srv.url + "/v1/messages", timeout=30,
                      headers={"x-api-key": srv.admin_key, "anthropic-version": "2023-06-01"},
                      json={"model": OPENAI_UP, "max_tokens": 10, "messages": HI, "stream": True}) as resp:
        frames = resp.read().decode().strip().split("\n\n")
    assert frames[0].startswith("event: message_start")
    last = frames[-1].split("\n")
    assert last[0] == "event: error"
    body = json.loads(last[1].removeprefix("data: "))
    assert body["type"] == "error" and body["error"]["type"] == "api_error" and "mid-stream" in body["error"]["message"]


def test_sdk_raises_on_a_midstream_error(client, stub):
    stub.mode = "midstream_error"
    with pytest.raises(anthropic.APIStatusError):
        with client.messages.stream(model=OPENAI_UP, max_tokens=10, messages=HI) as stream:
            for _ in stream.text_stream:
                pass


# ---------------------------------------------------------------- tools

def test_forced_tool_use_on_the_local_model(client):
    msg = client.messages.create(model=LOCAL, max_tokens=100, extra_body={"temperature": 0}, tools=[LOCAL_WEATHER],
                                 tool_choice={"type": "tool", "name": "get_weather"},
                                 messages=[{"role": "user", "content": "Weather in Paris?"}])
    assert msg.stop_reason == "tool_use"
    (use,) = [b for b in msg.content if b.type == "tool_use"]
    assert use.name == "get_weather" and isinstance(use.input, dict) and "city" in use.input


@pytest.mark.parametrize("model", [GEMINI_UP, CLAUDE_UP])
def test_tool_round_trip_through_provider_upstreams(client, providers, model):
    first = client.messages.create(model=model, max_tokens=50, tools=[WEATHER],
                                   messages=[{"role": "user", "content": "What is the weather in Paris?"}])
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "get_weather" and use.input == {"city": "Paris"}
    second = client.messages.create(model=model, max_tokens=50, tools=[WEATHER], messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18C and sunny"}]}])
    assert second.stop_reason == "end_turn"
    assert "18C and sunny" in second.content[0].text


def test_tool_results_reach_an_openai_upstream_as_tool_messages(client, stub):
    client.messages.create(model=OPENAI_UP, max_tokens=20, tools=[WEATHER], tool_choice={"type": "auto"}, messages=[
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_9", "name": "get_weather",
                                           "input": {"city": "Paris"}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_9", "content": "sunny"},
                                     {"type": "text", "text": "Thanks"}]}])
    sent = stub.requests[-1]
    assert sent["tools"][0]["function"]["name"] == "get_weather" and sent["tool_choice"] == "auto"
    assert sent["messages"][1]["tool_calls"][0]["function"] == {"name": "get_weather", "arguments": '{"city":"Paris"}'}
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": "toolu_9", "content": "sunny"}
    assert sent["messages"][3]["role"] == "user"


def test_streamed_tool_use_accumulates_input(client):
    with client.messages.stream(model=GEMINI_UP, max_tokens=50, tools=[WEATHER],
                                messages=[{"role": "user", "content": "weather in Paris?"}]) as stream:
        events = [e.type for e in stream]
        final = stream.get_final_message()
    assert "content_block_start" in events and "input_json" in events
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.input == {"city": "Paris"} and final.stop_reason == "tool_use"


# ---------------------------------------------------------------- count tokens

def test_count_tokens_is_exact_on_the_local_model(client, srv):
    messages = [{"role": "user", "content": "Count these words, please."}]
    counted = client.messages.count_tokens(model=LOCAL, messages=messages, system="Be brief.")
    actual = client.messages.create(model=LOCAL, max_tokens=1, messages=messages, system="Be brief.")
    assert counted.input_tokens == actual.usage.input_tokens > 5
    raw = httpx.post(srv.url + "/v1/messages/count_tokens", headers={"x-api-key": srv.admin_key},
                     json={"model": LOCAL, "messages": messages})
    assert raw.headers["x-modelyard-token-count"] == "tokenizer"


def test_count_tokens_estimates_for_upstreams(client, srv):
    short = client.messages.count_tokens(model=OPENAI_UP, messages=HI)
    longer = client.messages.count_tokens(model=OPENAI_UP, messages=[{"role": "user", "content": "word " * 400}],
                                          tools=[WEATHER])
    assert 0 < short.input_tokens < longer.input_tokens and longer.input_tokens >= 400
    raw = httpx.post(srv.url + "/v1/messages/count_tokens", headers={"x-api-key": srv.admin_key},
                     json={"model": OPENAI_UP, "messages": HI})
    assert raw.headers["x-modelyard-token-count"] == "estimate"


# ---------------------------------------------------------------- errors

def test_missing_max_tokens_is_a_400_naming_it(client):
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.create(model=OPENAI_UP, messages=HI, max_tokens=anthropic.omit)  # type: ignore[arg-type]
    body = info.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]


@pytest.mark.parametrize("body, field", [
    ({"model": OPENAI_UP, "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "audio"}]}]},
     "messages[0].content[0]"),
    ({"model": OPENAI_UP, "max_tokens": 5, "messages": []}, "messages"),
    ({"model": OPENAI_UP, "max_tokens": 0, "messages": HI}, "max_tokens"),
    ({"model": OPENAI_UP, "max_tokens": 5, "messages": HI, "tools": [{"name": "bad name!", "input_schema": {}}]},
     "tools[0].name"),
    ({"model": OPENAI_UP, "max_tokens": 5, "messages": HI, "tool_choice": {"type": "tool", "name": "x"}},
     "tool_choice.name"),
    ({"model": OPENAI_UP, "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64"}}]}]}, "messages[0].content[0]"),
])
def test_bad_bodies_are_400s_in_anthropics_envelope(srv, body, field):
    resp = httpx.post(srv.url + "/v1/messages", json=body,
                      headers={"x-api-key": srv.admin_key, "anthropic-version": "2023-06-01"})
    assert resp.status_code == 400, resp.text
    err = resp.json()
    assert err["type"] == "error" and err["error"]["type"] == "invalid_request_error"
    assert field in err["error"]["message"]


def test_unknown_model_is_a_404_not_found_error(client):
    with pytest.raises(anthropic.NotFoundError) as info:
        client.messages.create(model="no-such-model", max_tokens=5, messages=HI)
    assert info.value.body["error"]["type"] == "not_found_error"


def test_embedding_model_is_refused_with_400(client):
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model="all-minilm-l6-v2", max_tokens=5, messages=HI)


def test_bad_key_is_a_401_authentication_error(srv):
    bad = anthropic.Anthropic(base_url=srv.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as info:
        bad.messages.create(model=OPENAI_UP, max_tokens=5, messages=HI)
    assert info.value.body["error"]["type"] == "authentication_error"


def test_unknown_anthropic_version_is_refused(srv):
    resp = httpx.post(srv.url + "/v1/messages", headers={"x-api-key": srv.admin_key, "anthropic-version": "latest"},
                      json={"model": OPENAI_UP, "max_tokens": 5, "messages": HI})
    assert resp.status_code == 400 and "anthropic-version" in resp.json()["error"]["message"]


def test_routes_under_messages_answer_404_and_405_in_anthropics_envelope(srv):
    headers = {"x-api-key": srv.admin_key}
    missing = httpx.post(srv.url + "/v1/messages/nope", headers=headers, json={})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    wrong = httpx.get(srv.url + "/v1/messages", headers=headers)
    assert wrong.status_code == 405 and wrong.json()["type"] == "error"
    # the OpenAI surface next door keeps its own envelope
    assert "type" not in httpx.get(srv.url + "/v1/nope", headers=headers).json()


def test_upstream_rate_limit_keeps_status_and_envelope(client, providers):
    providers.mode = "ratelimit"
    with pytest.raises(anthropic.RateLimitError) as info:
        client.messages.create(model=GEMINI_UP, max_tokens=5, messages=HI)
    assert info.value.body["error"]["type"] == "rate_limit_error"


def test_alternate_prefix_works(srv):
    c = anthropic.Anthropic(base_url=srv.url + "/anthropic", api_key=srv.admin_key, max_retries=0)
    assert c.messages.create(model=OPENAI_UP, max_tokens=5, messages=HI).content[0].text


def test_output_format_json_schema_on_the_local_model(client):
    schema = {"type": "object", "properties": {"color": {"type": "string", "maxLength": 12}}, "required": ["color"],
              "additionalProperties": False}
    msg = client.messages.create(model=LOCAL, max_tokens=40, extra_body={"temperature": 0},
                                 output_config={"format": {"type": "json_schema", "schema": schema}},
                                 messages=[{"role": "user", "content": "Give a color as JSON."}])
    assert isinstance(json.loads(msg.content[0].text)["color"], str)


@pytest.mark.parametrize("model, expected", [(CLAUDE_UP, 30 + 1), (GEMINI_UP, 40 + 1)])
def test_count_tokens_asks_provider_upstreams(srv, providers, model, expected):
    resp = httpx.post(srv.url + "/v1/messages/count_tokens", headers={"x-api-key": srv.admin_key},
                      json={"model": model, "messages": HI, "system": "Be brief.", "tools": [WEATHER]})
    assert resp.json() == {"input_tokens": expected} and resp.headers["x-modelyard-token-count"] == "upstream"
    sent = providers.requests[-1]
    if model == CLAUDE_UP:
        assert set(sent) == {"model", "messages", "system", "tools"} and sent["model"] == "claude-x"
    else:
        assert sent["generateContentRequest"]["systemInstruction"] == {"parts": [{"text": "Be brief."}]}


def test_count_tokens_falls_back_to_the_estimate_when_the_provider_fails(client, providers):
    providers.mode = "error500"
    assert client.messages.count_tokens(model=CLAUDE_UP, messages=HI).input_tokens > 0
