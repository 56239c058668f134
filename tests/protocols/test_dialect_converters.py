"""Golden wire fixtures of the Anthropic and Gemini dialects, round-tripped through both converter directions.

The client-side converters (`*_dialect`) must be the inverse of the upstream-side ones (`anthropic`, `gemini`):
a client's request, turned into our chat request and sent on to that provider, is the request the client sent.
"""

from __future__ import annotations

import json

import pytest

from modelyard.errors import InvalidRequest
from modelyard.protocols.anthropic import inbound as ad
from modelyard.protocols.anthropic import outbound as up_anthropic
from modelyard.protocols.anthropic import schema as an
from modelyard.protocols.gemini import inbound as gd
from modelyard.protocols.gemini import outbound as up_gemini
from modelyard.protocols.gemini import schema as gs
from modelyard.protocols.openai.schema import ChatRequest
from ..support.paths import FIXTURES

FIXTURES = FIXTURES / "dialects"


def load(name: str):
    return json.loads((FIXTURES / name).read_text())


# ---------------------------------------------------------------- Anthropic

def test_anthropic_request_matches_golden_chat_request():
    req = an.MessagesRequest.model_validate(load("anthropic_request.json"))
    assert ad.messages_to_chat(req) == load("anthropic_request.chat.json")


def test_anthropic_request_round_trips_through_the_upstream_converter():
    original = load("anthropic_request.json")
    chat = ad.to_chat_request(an.MessagesRequest.model_validate(original))
    back = up_anthropic.to_messages_request(chat, "claude-x", default_max_tokens=1)
    # the upstream converter always writes tool descriptions and sends results as plain strings
    assert back == original


def test_anthropic_response_round_trips():
    original = load("anthropic_response.json")
    chat = up_anthropic.from_messages_response(original, "claude-x")
    back = ad.from_chat_response(chat, "claude-x")
    assert back["id"].startswith("msg_")
    assert {**back, "id": original["id"]} == original


def test_anthropic_stream_round_trips():
    original = [tuple(e) for e in load("anthropic_stream.json")]
    upstream = up_anthropic.StreamState(model="claude-x", include_usage=True)
    encoder = ad.StreamEncoder(model="claude-x")
    events = encoder.start()
    for _name, data in original:
        for chunk in upstream.feed(data):
            events += encoder.feed(json.dumps(chunk).encode())  # upstream chunks also arrive as raw bytes
    events += encoder.finish()
    assert [n for n, _ in events] == [n for n, _ in original]
    for (name, mine), (_, theirs) in zip(events, original):
        if name == "message_start":
            assert mine["message"]["content"] == [] and mine["message"]["id"].startswith("msg_")
        elif name == "message_delta":
            assert mine["delta"] == theirs["delta"]
            assert mine["usage"] == {"input_tokens": 120, "output_tokens": 31}
        else:
            assert mine == theirs


def test_anthropic_text_only_stream_has_one_block_and_stop_reason():
    encoder = ad.StreamEncoder(model="m")
    events = encoder.start()
    for piece in ("Hel", "lo"):
        events += encoder.feed({"choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    events += encoder.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]})
    events += encoder.finish()
    assert [n for n, _ in events] == ["message_start", "ping", "content_block_start", "content_block_delta",
                                      "content_block_delta", "content_block_stop", "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "max_tokens"


@pytest.mark.parametrize("body, param", [
    ({"model": "m", "messages": [{"role": "user", "content": "hi"}]}, "max_tokens"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "video"}]}]},
     "messages[0].content[0]"),
    ({"model": "m", "max_tokens": 5, "temperature": 1.5, "messages": [{"role": "user", "content": "hi"}]},
     "temperature"),
    ({"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "hi"}]}, "messages[0].role"),
])
def test_anthropic_invalid_requests_name_the_field(body, param):
    from pydantic import ValidationError

    from modelyard.protocols.openai.wire import describe_validation_error

    with pytest.raises(ValidationError) as info:
        an.MessagesRequest.model_validate(body)
    assert describe_validation_error(info.value)[1] == param


def test_anthropic_tool_choice_must_name_a_tool():
    req = an.MessagesRequest.model_validate({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}],
                                             "tool_choice": {"type": "tool", "name": "nope"}})
    with pytest.raises(InvalidRequest) as info:
        ad.to_chat_request(req)
    assert info.value.param == "tool_choice.name"


def test_anthropic_error_envelope():
    body = an.error_body(InvalidRequest("is required", param="max_tokens"))
    assert body == {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: is required"}}


# ---------------------------------------------------------------- Gemini

def test_gemini_request_matches_golden_chat_request():
    req = gs.GenerateContentRequest.model_validate(load("gemini_request.json"))
    assert gd.generate_to_chat(req, "gemini-x") == load("gemini_request.chat.json")


def test_gemini_request_round_trips_through_the_upstream_converter():
    original = load("gemini_request.json")
    chat = gd.to_chat_request(gs.GenerateContentRequest.model_validate(original), "gemini-x")
    assert up_gemini.to_generate_request(chat) == original


def test_gemini_snake_case_and_upper_case_schema_types_are_accepted():
    req = gs.GenerateContentRequest.model_validate({
        "contents": [{"parts": [{"text": "hi"}]}],
        "generation_config": {"max_output_tokens": 9},
        "tools": [{"function_declarations": [{"name": "f", "parameters": {
            "type": "OBJECT", "properties": {"x": {"type": "STRING", "nullable": True}}}}]}]})
    chat = gd.generate_to_chat(req, "m")
    assert chat["max_tokens"] == 9 and chat["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert chat["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {"x": {"type": ["string", "null"]}}}


def test_gemini_response_round_trips():
    original = load("gemini_response.json")
    chat = up_gemini.from_generate_response(original, "gemini-x")
    back = gd.from_chat_response(chat, "gemini-x")
    assert back.pop("responseId")
    for cand in back["candidates"]:
        for part in cand["content"]["parts"]:
            if "functionCall" in part:
                assert part["functionCall"].pop("id").startswith("call_")  # ours carry ids; Gemini's may not
    assert back == original


def test_gemini_stream_round_trips():
    original = load("gemini_stream.json")
    upstream = up_gemini.StreamState(model="gemini-x", include_usage=True)
    encoder = gd.StreamEncoder(model="gemini-x")
    out = []
    for data in original:
        for chunk in upstream.feed(data):
            out += encoder.feed(chunk)
    for chunk in upstream.close():
        out += encoder.feed(chunk)
    out += encoder.finish()
    text = "".join(p.get("text", "") for r in out for c in r["candidates"] for p in c["content"]["parts"])
    calls = [p["functionCall"] for r in out for c in r["candidates"] for p in c["content"]["parts"] if "functionCall" in p]
    assert text == "Checking the forecast."
    assert [(c["name"], c["args"]) for c in calls] == [("get_weather", {"city": "Paris"})]
    assert out[-1]["candidates"][0]["finishReason"] == "STOP"
    assert out[-1]["usageMetadata"] == original[-1]["usageMetadata"]
    assert all("finishReason" not in c for r in out[:-1] for c in r["candidates"])


@pytest.mark.parametrize("body, param", [
    ({"contents": []}, "contents"),
    ({"contents": [{"parts": [{"videoMetadata": {}}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{"text": "a"}]}], "generationConfig": {"temperature": 3}}, "generationConfig.temperature"),
    ({"contents": [{"role": "robot", "parts": [{"text": "a"}]}]}, "contents[0].role"),
    ({"contents": [{"parts": [{"text": "a"}]}], "tools": [{"googleSearch": {}}]}, "tools[0]"),
    ({"contents": [{"parts": [{"text": "a"}]}], "cachedContent": "cachedContents/x"}, "cachedContent"),
])
def test_gemini_invalid_requests_name_the_field(body, param):
    from pydantic import ValidationError

    from modelyard.protocols.openai.wire import describe_validation_error

    with pytest.raises(ValidationError) as info:
        gs.GenerateContentRequest.model_validate(body)
    assert describe_validation_error(info.value)[1] == param


def test_gemini_function_response_must_answer_a_call():
    req = gs.GenerateContentRequest.model_validate(
        {"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {"x": 1}}}]}]})
    with pytest.raises(InvalidRequest) as info:
        gd.to_chat_request(req, "m")
    assert info.value.param == "contents[0].parts[0]"


def test_gemini_error_envelope_names_the_field():
    body = gs.error_body(InvalidRequest("bad", param="contents"))
    assert body["error"]["code"] == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    assert body["error"]["details"][0]["fieldViolations"][0]["field"] == "contents"


def test_chat_requests_from_both_dialects_validate():
    a = ad.to_chat_request(an.MessagesRequest.model_validate(load("anthropic_request.json")))
    g = gd.to_chat_request(gs.GenerateContentRequest.model_validate(load("gemini_request.json")), "gemini-x")
    assert isinstance(a, ChatRequest) and isinstance(g, ChatRequest)
    assert a.messages[3].role == "tool" and g.messages[3].tool_call_id == "call_1"
