"""POST /v1/responses with the official openai SDK on the local model and the OpenAI stub: text, instructions,
function tools and their outputs, streaming (the SDK's own stream accumulator), hosted web_search against a
SearXNG-compatible stub, stored responses (org-scoped GET, previous_response_id), on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from modelyard.catalog.builtin import SMOLLM2_ID

from ..conftest import make_settings, running, server_fixture
from ..support.jobs import wait_status
from ..support.text_server import new_org_key, text_server

WEATHER = {"type": "function", "name": "get_weather", "description": "Current weather for a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


setup = server_fixture("setup", text_server)


@pytest.fixture
def client(setup):
    setup.search.__init__()  # type: ignore[misc]
    return openai.OpenAI(base_url=setup.srv.v1, api_key=setup.srv.admin_key, max_retries=0, timeout=120)


def _retrieve(client: openai.OpenAI, response_id: str):
    return client.responses.retrieve(response_id)


def _flush_responses(setup) -> None:
    """Write the stored responses the server has queued (its batched write, done now)."""
    setup.srv.on_server_loop(setup.srv.app.state.ctx.responses.flush())


# ---------------------------------------------------------------- text

@pytest.mark.parametrize("model", [SMOLLM2_ID, "stub-gpt"])
def test_text_input_with_instructions_is_answered_and_stored(setup, stub, client, model):
    resp = client.responses.create(model=model, input="Name one color.", instructions="Answer in one word.",
                                   max_output_tokens=8, temperature=0)
    assert resp.id.startswith("resp_") and resp.object == "response" and resp.model == model
    assert resp.status in ("completed", "incomplete") and resp.output_text.strip()
    assert resp.output[-1].type == "message" and resp.output[-1].content[0].type == "output_text"
    assert resp.usage.input_tokens > 0 and 0 < resp.usage.output_tokens <= 8
    assert resp.usage.total_tokens == resp.usage.input_tokens + resp.usage.output_tokens
    assert resp.instructions == "Answer in one word." and resp.max_output_tokens == 8
    if model == "stub-gpt":
        sent = stub.requests[-1]
        assert sent["messages"] == [{"role": "system", "content": "Answer in one word."},
                                    {"role": "user", "content": "Name one color."}]
        assert sent["max_tokens"] == 8 and sent["temperature"] == 0
        assert resp.output_text == stub.reply and resp.status == "completed"
    # stored: the same object comes back
    assert _retrieve(client, resp.id).model_dump() == resp.model_dump()


def test_items_and_previous_response_id_continue_the_conversation(setup, stub, client):
    first = client.responses.create(model="stub-gpt", input=[
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "My name is Ada."}]}])
    second = client.responses.create(model="stub-gpt", previous_response_id=first.id, input="What is my name?",
                                     instructions="Only this turn's instructions.")
    sent = stub.requests[-1]["messages"]
    assert sent == [{"role": "system", "content": "Only this turn's instructions."},
                    {"role": "developer", "content": "Be brief."}, {"role": "user", "content": "My name is Ada."},
                    {"role": "assistant", "content": stub.reply}, {"role": "user", "content": "What is my name?"}]
    assert second.previous_response_id == first.id


def test_local_model_streams_the_event_sequence(setup, client):
    events = list(client.responses.create(model=SMOLLM2_ID, input="Say hello.", max_output_tokens=6, stream=True))
    types = [e.type for e in events]
    assert types[:5] == ["response.created", "response.in_progress", "response.output_item.added",
                         "response.content_part.added", "response.output_text.delta"]
    assert types[-4:-1] == ["response.output_text.done", "response.content_part.done", "response.output_item.done"]
    assert types[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    final = events[-1].response
    assert final.output_text == text and final.usage.output_tokens <= 6
    assert _retrieve(client, final.id).output_text == text


def test_sdk_stream_helper_accumulates_text(setup, stub, client):
    with client.responses.stream(model="stub-gpt", input="Hi") as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(deltas) == stub.reply == final.output_text and final.status == "completed"
    assert final.usage.input_tokens == 7


# ---------------------------------------------------------------- function tools

def test_function_call_then_output_continues_the_turn(setup, stub, client):
    stub.tool_call = {"name": "get_weather", "arguments": '{"city": "Paris"}'}
    resp = client.responses.create(model="stub-gpt", input="Weather in Paris?", tools=[WEATHER])
    call = resp.output[0]
    assert call.type == "function_call" and call.name == "get_weather" and call.arguments == '{"city": "Paris"}'
    assert call.call_id == "call_stub1" and call.id.startswith("fc_") and resp.status == "completed"
    assert stub.requests[-1]["tools"][0]["function"]["name"] == "get_weather"
    # by previous_response_id: only the output travels
    follow = client.responses.create(model="stub-gpt", previous_response_id=resp.id, tools=[WEATHER], input=[
        {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"}])
    assert follow.output_text == "The tool said: 18 C, sunny"
    sent = stub.requests[-1]["messages"]
    assert sent[-2]["tool_calls"][0]["id"] == "call_stub1" and sent[-1] == {
        "role": "tool", "tool_call_id": "call_stub1", "content": "18 C, sunny"}
    # statelessly: the client sends the call item back itself
    again = client.responses.create(model="stub-gpt", tools=[WEATHER], store=False, input=[
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": "rain"}])
    assert again.output_text == "The tool said: rain"
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(again.id)  # store=false keeps nothing


def test_streamed_function_call_through_the_sdk_helper(setup, stub, client):
    stub.tool_call = {"name": "get_weather", "arguments": '{"city": "Oslo"}'}
    with client.responses.stream(model="stub-gpt", input="Weather?", tools=[WEATHER]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert "response.function_call_arguments.delta" in types and "response.function_call_arguments.done" in types
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    assert done.arguments == '{"city": "Oslo"}'
    assert final.output[0].type == "function_call" and final.output[0].arguments == '{"city": "Oslo"}'


def test_local_model_calls_a_forced_function(setup, client):
    resp = client.responses.create(model=SMOLLM2_ID, input="What is the weather in Rome?", tools=[WEATHER],
                                   tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=60,
                                   temperature=0)
    calls = [o for o in resp.output if o.type == "function_call"]
    assert calls and calls[0].name == "get_weather" and '"city"' in calls[0].arguments
    events = list(client.responses.create(model=SMOLLM2_ID, input="Weather in Rome?", tools=[WEATHER],
                                          tool_choice="required", max_output_tokens=60, temperature=0, stream=True))
    added = [e.item for e in events if e.type == "response.output_item.added"]
    assert added and added[0].type == "function_call" and added[0].name == "get_weather"
    assert events[-1].type == "response.completed"


def test_unknown_call_id_is_a_400_naming_the_item(setup, stub, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="stub-gpt", input=[{"type": "function_call_output", "call_id": "call_x",
                                                          "output": "?"}])
    assert info.value.body["param"] == "input[0].call_id"
    assert stub.requests == []


# ---------------------------------------------------------------- hosted web_search

@pytest.mark.parametrize("model", ["stub-gpt", SMOLLM2_ID])
def test_web_search_runs_before_the_model_answers(setup, stub, client, model):
    resp = client.responses.create(model=model, input="llama facts", tools=[{"type": "web_search"}],
                                   max_output_tokens=8)
    assert setup.search.queries == ["llama facts"] and setup.search.formats == ["json"]
    ws = resp.output[0]
    assert ws.type == "web_search_call" and ws.status == "completed" and ws.action.query == "llama facts"
    assert [s.url for s in ws.action.sources] == [f"https://example.org/llama-facts/{k}" for k in range(1, 6)]
    assert resp.output[1].type == "message" and resp.output_text
    if model == "stub-gpt":
        system = stub.requests[-1]["messages"][0]
        assert system["role"] == "system" and "https://example.org/llama-facts/1" in system["content"]
        assert "Snippet 5: facts about llama facts." in system["content"] and "/6" not in system["content"]


def test_web_search_streams_its_events_and_mixes_with_functions(setup, stub, client):
    stub.tool_call = {"name": "get_weather", "arguments": '{"city": "Lima"}'}
    with client.responses.stream(model="stub-gpt", input="weather in lima", tools=[{"type": "web_search"}, WEATHER]
                                 ) as stream:
        types = [e.type for e in stream]
        final = stream.get_final_response()
    assert types[2:7] == ["response.output_item.added", "response.web_search_call.in_progress",
                          "response.web_search_call.searching", "response.web_search_call.completed",
                          "response.output_item.done"]
    assert [o.type for o in final.output] == ["web_search_call", "function_call"]
    assert setup.search.queries == ["weather in lima"]


def test_web_search_failure_is_a_502_and_nothing_is_asked_of_the_model(setup, stub, client):
    setup.search.mode = "error500"
    with pytest.raises(openai.APIStatusError) as info:
        client.responses.create(model="stub-gpt", input="x", tools=[{"type": "web_search"}])
    assert info.value.status_code == 502 and info.value.body["code"] == "web_search_failed"
    assert stub.requests == []


def test_tool_choice_none_skips_the_search(setup, stub, client):
    resp = client.responses.create(model="stub-gpt", input="x", tools=[{"type": "web_search_preview"}],
                                   tool_choice="none")
    assert setup.search.queries == [] and [o.type for o in resp.output] == ["message"]


def test_malformed_tool_choice_is_a_400_naming_it(setup, stub, client):
    for choice, param in (({"type": "function", "function": "get_weather"}, "tool_choice.function"),
                          ({"type": ["function"]}, "tool_choice.type"),
                          ({"type": "function", "name": ["get_weather"]}, "tool_choice")):
        with pytest.raises(openai.BadRequestError) as info:  # these were AttributeError / TypeError: 500s
            client.responses.create(model="stub-gpt", input="x", tools=[WEATHER], tool_choice=choice)
        assert info.value.body["param"] == param, info.value.body
    assert stub.requests == []


def test_async_with_hosted_tools_is_refused(setup, stub, client):
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model="stub-gpt", input="x", tools=[{"type": "web_search"}],
                                extra_body={"async": True})
    assert info.value.body["param"] == "async" and "hosted tools" in info.value.body["message"]
    assert setup.search.queries == [] and stub.requests == []


def test_async_without_hosted_tools_runs_as_a_job(setup, stub, client):
    import httpx

    srv = setup.srv
    r = httpx.post(srv.v1 + "/responses", headers=srv.headers(), timeout=30,
                   json={"model": "stub-gpt", "input": "hello", "instructions": "Be brief.", "async": True})
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["object"] == "response.async" and job["status"] == "pending"
    with httpx.Client() as http:
        polled = wait_status(http, f"{srv.url}/api/jobs/{job['id']}", srv.headers(),
                             {"completed", "failed", "dead_letter"}, timeout=60)
    assert polled["status"] == "completed", polled
    assert polled["result"]["choices"][0]["message"]["content"]  # the chat completion the turn ran
    sent = stub.requests[-1]
    assert sent["messages"][0] == {"role": "system", "content": "Be brief."} and "async" not in sent


def test_without_a_search_url_web_search_is_a_clear_400(tmp_path, stub_server):
    from ..conftest import upstream_models

    settings = make_settings(tmp_path, models=upstream_models(stub_server[0].url), builtin_models=False)
    with running(settings) as srv:
        client = openai.OpenAI(base_url=srv.v1, api_key=srv.admin_key, max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model="stub-gpt", input="x", tools=[{"type": "web_search"}])
        assert info.value.body["code"] == "web_search_not_configured" and info.value.body["param"] == "tools"
        assert "not configured" in info.value.body["message"]
        # without the hosted tool the same server answers
        assert client.responses.create(model="stub-gpt", input="x").output_text


# ---------------------------------------------------------------- storage is per organization

def test_another_orgs_response_is_404(setup, stub, client):
    mine = client.responses.create(model="stub-gpt", input="secret plans")
    other_key = new_org_key(setup.srv, f"rival-{time.monotonic_ns()}")
    rival = openai.OpenAI(base_url=setup.srv.v1, api_key=other_key, max_retries=0)
    with pytest.raises(openai.NotFoundError) as info:
        rival.responses.retrieve(mine.id)
    assert mine.id in info.value.body["message"]
    with pytest.raises(openai.NotFoundError) as info:
        rival.responses.create(model="stub-gpt", input="continue", previous_response_id=mine.id)
    assert info.value.body["param"] == "previous_response_id"
    # once written to the database (batched, off the request path) the answer is the same
    _flush_responses(setup)
    with pytest.raises(openai.NotFoundError):
        rival.responses.retrieve(mine.id)
    assert client.responses.retrieve(mine.id).output_text == stub.reply


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("body, param", [
    ({"model": "stub-gpt"}, "input"),
    ({"model": "stub-gpt", "input": []}, "input"),
    ({"model": "stub-gpt", "input": "x", "tools": [{"type": "file_search"}]}, "tools[0].type"),
    ({"model": "stub-gpt", "input": "x", "tools": [{"type": "function"}]}, "tools[0]"),
    ({"model": "stub-gpt", "input": "x", "tools": [{"type": "function", "function": {"name": "a b"}}]}, "tools[0]"),
    ({"model": "stub-gpt", "input": [{"role": "user"}]}, "input[0]"),
    ({"model": "stub-gpt", "input": [{"type": "function_call", "call_id": "c"}]}, "input[0]"),
    ({"model": "stub-gpt", "input": [{"role": "user", "content": [{"type": "input_file"}]}]}, "input[0].content[0]"),
    ({"model": "stub-gpt", "input": "x", "max_output_tokens": 0}, "max_output_tokens"),
    ({"model": "stub-gpt", "input": "x", "tool_choice": {"type": "function", "name": "nope"}}, "tool_choice"),
    ({"model": "stub-gpt", "input": "x", "background": True}, "background"),
    ({"model": "stub-gpt", "input": "x", "previous_response_id": "resp_missing"}, "previous_response_id"),
])
def test_bad_input_is_4xx_naming_the_field(setup, stub, body, param):
    srv = setup.srv
    r = httpx.post(srv.v1 + "/responses", headers=srv.headers(), json=body)
    assert 400 <= r.status_code < 500 and r.status_code != 401, r.text
    assert r.json()["error"]["param"] == param, r.text
    assert stub.requests == []


def test_unknown_response_id_is_404(setup):
    r = httpx.get(setup.srv.url + "/api/v1/responses/resp_nope", headers=setup.srv.headers())
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


def test_an_upstream_failure_mid_stream_ends_with_an_error_event_and_stores_nothing(setup, stub, client):
    stub.mode = "midstream_error"
    events = list(client.responses.create(model="stub-gpt", input="x", stream=True))
    assert [e.type for e in events[:2]] == ["response.created", "response.in_progress"]
    assert events[-1].type == "error" and "mid-stream" in events[-1].message
    assert events[-1].sequence_number == events[-2].sequence_number + 1
    _flush_responses(setup)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(events[0].response.id)


def test_failure_before_the_stream_starts_keeps_its_status(setup, stub, client):
    stub.mode = "ratelimit"
    with pytest.raises(openai.RateLimitError):
        client.responses.create(model="stub-gpt", input="x", stream=True)


def test_input_items_are_listed_and_a_response_can_be_deleted(setup, stub, client):
    first = client.responses.create(model="stub-gpt", input="one")
    resp = client.responses.create(model="stub-gpt", previous_response_id=first.id, input=[
        {"role": "user", "content": "two"}, {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "input_text", "text": "three"}]}])
    items = client.responses.input_items.list(resp.id)
    assert [i.content[0].text for i in items.data] == ["three", "ok", "two"]  # newest first, this turn only
    assert all(i.id.startswith("msg_") and i.type == "message" for i in items.data)
    page = client.responses.input_items.list(resp.id, order="asc", limit=2)
    assert [i.content[0].text for i in page.data] == ["two", "ok"] and page.has_more
    rest = client.responses.input_items.list(resp.id, order="asc", after=page.last_id)
    assert [i.content[0].text for i in rest.data] == ["three"] and not rest.has_more
    # another org can neither list nor delete it
    rival = openai.OpenAI(base_url=setup.srv.v1, api_key=new_org_key(setup.srv, f"r-{time.monotonic_ns()}"),
                          max_retries=0)
    with pytest.raises(openai.NotFoundError):
        rival.responses.input_items.list(resp.id)
    with pytest.raises(openai.NotFoundError):
        rival.responses.delete(resp.id)
    # deleted before and after its batched write lands
    client.responses.delete(resp.id)
    _flush_responses(setup)
    client.responses.delete(first.id)
    for gone in (resp.id, first.id):
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(gone)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(first.id)


def test_an_answer_citing_search_results_carries_url_citations(setup, stub, client):
    stub.reply = "Llamas hum [1], see https://example.org/llamas/2 too."
    resp = client.responses.create(model="stub-gpt", input="llamas", tools=[{"type": "web_search"}])
    notes = resp.output[1].content[0].annotations
    assert [(a.type, a.url, resp.output_text[a.start_index:a.end_index]) for a in notes] == [
        ("url_citation", "https://example.org/llamas/1", "[1]"),
        ("url_citation", "https://example.org/llamas/2", "https://example.org/llamas/2")]
    assert notes[0].title == "Result 1 for llamas"
    with client.responses.stream(model="stub-gpt", input="llamas", tools=[{"type": "web_search"}]) as stream:
        added = [e.annotation for e in stream if e.type == "response.output_text.annotation.added"]
        final = stream.get_final_response()
    assert [a.url for a in added] == [a.url for a in notes]
    assert [a.url for a in final.output[1].content[0].annotations] == [a.url for a in notes]
