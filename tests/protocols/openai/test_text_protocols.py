"""Golden wire fixtures for the Completions and Responses converters (tests/fixtures/openai/), round-tripped.

Each fixture holds a client's request as it arrives and what the converters must make of it: the chat requests a
backend gets, and the completion, response or event stream the client gets back from chat results.
"""

from __future__ import annotations

import json
from typing import Any, Callable

import pytest
from openai.types import Completion
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from modelyard.errors import InvalidRequest
from modelyard.protocols.openai import completions as oc
from modelyard.protocols.openai import responses_events as orp
from modelyard.protocols.openai.completions import CompletionRequest
from modelyard.protocols.openai.responses import InputItem, ResponsesRequest
from ...support.paths import FIXTURES

FIXTURES = FIXTURES / "openai"
WEATHER = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


def counter() -> Callable[[str], str]:
    """Deterministic item ids (msg_1, fc_1, ...) in place of random ones."""
    seen: dict[str, int] = {}

    def next_id(prefix: str) -> str:
        seen[prefix] = seen.get(prefix, 0) + 1
        return f"{prefix}_{seen[prefix]}"
    return next_id


# ---------------------------------------------------------------- completions

def test_completion_request_round_trips_and_maps_onto_chat():
    g = load("completions_via_chat.json")
    req = CompletionRequest.model_validate(g["request"])
    assert req.model_dump(mode="json", exclude_unset=True) == g["request"]  # wire -> model -> wire, unchanged
    prompts = oc.refuse_unsupported(req, through_chat=True)
    chats = [oc.chat_request_for(req, p).model_dump(mode="json", exclude_unset=True) for p in prompts]
    assert chats == g["chat_requests"]
    out = oc.completion_from_chats(req, prompts, g["chat_responses"], id="cmpl-golden", model="m", created=1700000001)
    assert out == g["completion"]
    # what we send is what the official SDK reads
    assert Completion.model_validate(out).model_dump(mode="json", exclude_unset=True) == out


def test_completion_stream_chunks_from_chat_chunks():
    g = load("completions_stream_via_chat.json")
    req = CompletionRequest.model_validate(g["request"])
    assert oc.chat_request_for(req, "Hi").model_dump(mode="json", exclude_unset=True) == g["chat_request"]
    got = []
    for chunk in g["chat_chunks"]:
        out, usage = oc.chunk_from_chat(chunk, prompt_index=0, n=2, id="cmpl-golden", model="m", created=1700000002)
        got.append({"chunk": out, "usage": usage})
    assert got == g["expected"]


@pytest.mark.parametrize("extra, param", [({"suffix": "x"}, "suffix"), ({"logprobs": 1}, "logprobs"),
                                          ({"prompt": [[1, 2]]}, "prompt"), ({"best_of": 2}, "best_of")])
def test_chat_mapping_refuses_what_chat_cannot_express(extra, param):
    req = CompletionRequest.model_validate({"model": "m", "prompt": "p", **extra})
    with pytest.raises(InvalidRequest) as info:
        oc.refuse_unsupported(req, through_chat=True)
    assert info.value.param == param


# ---------------------------------------------------------------- responses

def test_response_items_become_chat_messages():
    g = load("responses_items_to_chat.json")
    req = ResponsesRequest.model_validate(g["request"])
    orp.validate(req)
    messages = orp.messages_from_items(req.input_items, set())
    search = orp.search_context(orp.search_query(req), g["search_hits"])
    assert orp.chat_request(req, messages, search=search).model_dump(mode="json", exclude_unset=True) == g["chat_request"]


def test_chat_completion_becomes_a_response_and_its_output_round_trips_as_input():
    g = load("responses_from_chat.json")
    req = ResponsesRequest.model_validate(g["request"])
    builder = orp.ResponseBuilder(orp.skeleton(req, id="resp_golden", model="m", created=1700000003), ids=counter())
    builder.web_search(orp.web_search_item(req.input, g["search_hits"], id="ws_1"))  # type: ignore[arg-type]
    builder.feed(orp.chunk_from_chat(g["chat_response"]))
    _, response = builder.finish()
    assert response == g["response"]
    assert Response.model_validate(response).output_text == "Checking."  # the official SDK reads it
    history = orp.history_from_output(response["output"])
    assert history == g["history"]
    # a client that sends the output back as input (input += response.output) gets the same conversation
    items = [InputItem.model_validate(item) for item in response["output"]]
    assert orp.messages_from_items(items, set()) == history


def test_chat_chunks_become_the_event_sequence():
    g = load("responses_stream_events.json")
    req = ResponsesRequest.model_validate(g["request"])
    builder = orp.ResponseBuilder(orp.skeleton(req, id="resp_stream", model="m", created=1700000004), ids=counter())
    events = builder.start()
    for chunk in g["chat_chunks"]:
        events += builder.feed(chunk)
    final, _ = builder.finish()
    assert events + final == g["events"]
    assert [e["sequence_number"] for e in g["events"]] == list(range(len(g["events"])))
    assert Response.model_validate(g["events"][-1]["response"]).status == "incomplete"
    # every event is one the official SDK's types accept, strictly
    adapter = TypeAdapter(ResponseStreamEvent)
    assert [adapter.validate_python(e).type for e in g["events"]] == [e["type"] for e in g["events"]]


@pytest.mark.parametrize("body, param", [
    ({"input": "x", "async": True, "tools": [{"type": "web_search"}]}, "async"),
    ({"input": "x", "tool_choice": {"type": "web_search"}}, "tool_choice"),
    ({"input": "x", "tool_choice": {"type": "mcp"}}, "tool_choice.type"),
    ({}, "input"),
    # malformed tool_choice objects were AttributeError / TypeError (500s), not 400s
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "function": "x"}}, "tool_choice.function"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": ["a"]}}, "tool_choice.type"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": {"a": 1}}}, "tool_choice.type"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "name": ["f"]}}, "tool_choice"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": {"a": 1}}}},
     "tool_choice"),
    ({"input": "x", "tools": [WEATHER], "tool_choice": {"type": "function"}}, "tool_choice"),
])
def test_cross_field_rules_name_the_field(body, param):
    req = ResponsesRequest.model_validate({"model": "m", **body})
    with pytest.raises(InvalidRequest) as info:
        orp.validate(req)
    assert info.value.param == param
