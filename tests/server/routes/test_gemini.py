"""Gemini dialect, driven by the official google-genai SDK against local, OpenAI-upstream and Anthropic-upstream
models, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

import httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from modelyard.catalog.builtin import MINILM_ID, SMOLLM2_ID

from ...conftest import server_fixture
from ...support.dialect_servers import dialect_server, providers, srv  # noqa: F401 (fixtures on env)

LOCAL, OPENAI_UP, GEMINI_UP, CLAUDE_UP = SMOLLM2_ID, "stub-gpt", "gemini-up", "claude-up"
WEATHER = types.FunctionDeclaration(
    name="get_weather", description="Weather for a city",
    parameters=types.Schema(type=types.Type.OBJECT, required=["city"],
                            properties={"city": types.Schema(type=types.Type.STRING, max_length=30)}))


env = server_fixture("env", dialect_server)


def make_client(base_url: str, key: str) -> genai.Client:
    return genai.Client(api_key=key, http_options=types.HttpOptions(base_url=base_url, api_version="v1beta",
                                                                    timeout=120_000))


@pytest.fixture
def client(srv):
    return make_client(srv.url, srv.admin_key)


def config(**kw) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(temperature=0, **kw)


# ---------------------------------------------------------------- generate

@pytest.mark.parametrize("model", [LOCAL, OPENAI_UP, CLAUDE_UP])
def test_generate_content_with_usage(client, stub, providers, model):
    resp = client.models.generate_content(model=model, contents="Say hello.", config=config(
        system_instruction="Be brief.", max_output_tokens=12, stop_sequences=["END"], top_p=0.9))
    assert resp.text and resp.text.strip()
    cand = resp.candidates[0]
    assert cand.content.role == "model" and cand.finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS)
    usage = resp.usage_metadata
    assert usage.prompt_token_count > 0 and 0 < usage.candidates_token_count <= 16
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count
    assert resp.model_version == model and resp.response_id
    if model == OPENAI_UP:
        assert resp.text == "Hello from the stub upstream"
        sent = stub.requests[-1]
        assert sent["messages"] == [{"role": "system", "content": "Be brief."},
                                    {"role": "user", "content": [{"type": "text", "text": "Say hello."}]}]
        assert sent["max_tokens"] == 12 and sent["stop"] == ["END"] and sent["top_p"] == 0.9
    if model == CLAUDE_UP:
        assert resp.text == "Echo: Say hello."
        assert providers.requests[-1]["system"] == "Be brief." and providers.requests[-1]["max_tokens"] == 12


def test_local_model_reports_max_tokens(client):
    resp = client.models.generate_content(model=LOCAL, contents="Write a long story about the sea.",
                                          config=config(max_output_tokens=3))
    assert resp.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert resp.usage_metadata.candidates_token_count == 3


def test_multi_turn_and_inline_image_reach_the_upstream(client, providers):
    png = b"\x89PNG\r\n\x1a\nfake"
    resp = client.models.generate_content(model=CLAUDE_UP, contents=[
        types.Content(role="user", parts=[types.Part(text="hi")]),
        types.Content(role="model", parts=[types.Part(text="hello")]),
        types.Content(role="user", parts=[types.Part(text="What is this?"),
                                          types.Part.from_bytes(data=png, mime_type="image/png")])])
    assert resp.text == "Echo: What is this? [image]"
    sent = providers.requests[-1]["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"][1]["source"]["media_type"] == "image/png"


def test_candidate_count_gives_several_candidates(client):
    resp = client.models.generate_content(model=LOCAL, contents="Name a color.",
                                          config=types.GenerateContentConfig(candidate_count=2, max_output_tokens=4,
                                                                             temperature=1.0, seed=3))
    assert [c.index for c in resp.candidates] == [0, 1]


def test_json_mode_on_the_local_model(client):
    resp = client.models.generate_content(model=LOCAL, contents="Give a color as JSON.", config=config(
        max_output_tokens=40, response_mime_type="application/json",
        response_json_schema={"type": "object", "properties": {"color": {"type": "string", "maxLength": 12}},
                              "required": ["color"], "additionalProperties": False}))
    assert isinstance(json.loads(resp.text)["color"], str)


# ---------------------------------------------------------------- streaming

@pytest.mark.parametrize("model", [LOCAL, OPENAI_UP, CLAUDE_UP])
def test_stream_generate_content(client, model):
    chunks = list(client.models.generate_content_stream(model=model, contents="Say hello.",
                                                        config=config(max_output_tokens=10)))
    text = "".join(c.text or "" for c in chunks)
    assert text.strip() and len(chunks) >= 2
    last = chunks[-1]
    assert last.candidates[0].finish_reason in (types.FinishReason.STOP, types.FinishReason.MAX_TOKENS)
    assert last.usage_metadata.candidates_token_count > 0 and last.usage_metadata.prompt_token_count > 0
    if model == OPENAI_UP:
        assert text == "Hello from the stub upstream"


def test_stream_without_alt_sse_is_one_json_array(srv):
    with httpx.stream("POST", f"{srv.url}/v1beta/models/{OPENAI_UP}:streamGenerateContent", timeout=30,
                      headers={"x-goog-api-key": srv.admin_key},
                      json={"contents": [{"parts": [{"text": "hi"}]}]}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("application/json")
        items = json.loads(resp.read())
    assert isinstance(items, list) and len(items) >= 2
    assert "".join(p.get("text", "") for i in items for p in i["candidates"][0]["content"]["parts"]) == \
        "Hello from the stub upstream"
    assert items[-1]["usageMetadata"]["totalTokenCount"] > 0


@pytest.mark.parametrize("alt", ["sse", "json"])
def test_error_after_the_stream_began_ends_in_an_error(srv, stub, alt):
    stub.mode = "midstream_error"
    with httpx.stream("POST", f"{srv.url}/v1beta/models/{OPENAI_UP}:streamGenerateContent?alt={alt}", timeout=30,
                      headers={"x-goog-api-key": srv.admin_key},
                      json={"contents": [{"parts": [{"text": "hi"}]}]}) as resp:
        raw = resp.read().decode()
    if alt == "sse":
        last = json.loads(raw.strip().split("\n\n")[-1].removeprefix("data: "))
    else:
        last = json.loads(raw)[-1]
    assert last["error"]["status"] == "UNAVAILABLE" and "mid-stream" in last["error"]["message"]


# ---------------------------------------------------------------- function calling

def test_forced_function_call_on_the_local_model(client):
    resp = client.models.generate_content(model=LOCAL, contents="What is the weather in Paris?", config=config(
        max_output_tokens=100, tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=["get_weather"]))))
    (call,) = resp.function_calls
    assert call.name == "get_weather" and isinstance(call.args.get("city"), str)


@pytest.mark.parametrize("model", [CLAUDE_UP, GEMINI_UP])
def test_function_call_round_trip_through_provider_upstreams(client, providers, model):
    cfg = config(tools=[types.Tool(function_declarations=[WEATHER])])
    ask = types.Content(role="user", parts=[types.Part(text="What is the weather in Paris?")])
    first = client.models.generate_content(model=model, contents=[ask], config=cfg)
    (call,) = first.function_calls
    assert call.name == "get_weather" and call.args == {"city": "Paris"}
    answer = types.Part.from_function_response(name="get_weather", response={"output": "18C and sunny"})
    second = client.models.generate_content(model=model, config=cfg, contents=[
        ask, first.candidates[0].content, types.Content(role="user", parts=[answer])])
    assert "18C and sunny" in second.text
    if model == CLAUDE_UP:  # the Anthropic upstream saw a tool_use answered by its tool_result
        sent = providers.requests[-1]["messages"]
        assert sent[1]["content"][0]["type"] == "tool_use"
        assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": sent[1]["content"][0]["id"],
                                         "content": "18C and sunny"}


def test_streamed_function_call(client):
    chunks = list(client.models.generate_content_stream(
        model=CLAUDE_UP, contents="weather in Paris?", config=config(tools=[types.Tool(function_declarations=[WEATHER])])))
    calls = [c for chunk in chunks for c in (chunk.function_calls or [])]
    assert [(c.name, c.args) for c in calls] == [("get_weather", {"city": "Paris"})]


def test_function_declarations_reach_an_openai_upstream(client, stub):
    client.models.generate_content(model=OPENAI_UP, contents="Weather?", config=config(
        tools=[types.Tool(function_declarations=[WEATHER])],
        tool_config=types.ToolConfig(function_calling_config=types.FunctionCallingConfig(mode="NONE"))))
    sent = stub.requests[-1]
    assert sent["tools"][0]["function"]["parameters"] == {
        "type": "object", "required": ["city"], "properties": {"city": {"type": "string", "maxLength": 30}}}
    assert sent["tool_choice"] == "none"


# ---------------------------------------------------------------- count tokens, embeddings, models

def test_count_tokens_is_exact_on_the_local_model(client):
    counted = client.models.count_tokens(model=LOCAL, contents="Count these words, please.")
    actual = client.models.generate_content(model=LOCAL, contents="Count these words, please.",
                                            config=config(max_output_tokens=1))
    assert counted.total_tokens == actual.usage_metadata.prompt_token_count > 3


def test_count_tokens_estimates_for_upstreams(client):
    short = client.models.count_tokens(model=OPENAI_UP, contents="hi")
    longer = client.models.count_tokens(model=OPENAI_UP, contents="word " * 400)
    assert 0 < short.total_tokens < longer.total_tokens and longer.total_tokens >= 400


def test_embed_content(client):
    resp = client.models.embed_content(model=MINILM_ID, contents=["The cat sat.", "A dog ran.", "The cat sat."])
    vectors = [e.values for e in resp.embeddings]
    assert len(vectors) == 3 and all(len(v) == 384 for v in vectors)
    assert vectors[0] == pytest.approx(vectors[2]) and vectors[0] != pytest.approx(vectors[1])
    small = client.models.embed_content(model=MINILM_ID, contents="hi",
                                        config=types.EmbedContentConfig(output_dimensionality=64))
    assert len(small.embeddings[0].values) == 64


def test_embed_content_single_route_and_upstream(srv):
    headers = {"x-goog-api-key": srv.admin_key}
    one = httpx.post(f"{srv.url}/v1beta/models/{MINILM_ID}:embedContent", headers=headers,
                     json={"content": {"parts": [{"text": "hello"}]}})
    assert one.status_code == 200 and len(one.json()["embedding"]["values"]) == 384
    up = httpx.post(f"{srv.url}/v1beta/models/stub-embed:batchEmbedContents", headers=headers,
                    json={"requests": [{"model": "models/stub-embed", "content": {"parts": [{"text": "abc"}]}}]})
    assert up.status_code == 200 and up.json()["embeddings"][0]["values"] == [3.0, 1.0, 0.0]


def test_models_list_and_get(client):
    names = {m.name: m for m in client.models.list(config={"page_size": 100})}
    assert f"models/{LOCAL}" in names and f"models/{MINILM_ID}" in names
    assert "generateContent" in names[f"models/{LOCAL}"].supported_actions
    assert "batchEmbedContents" in names[f"models/{MINILM_ID}"].supported_actions
    model = client.models.get(model=LOCAL)
    assert model.name == f"models/{LOCAL}" and model.input_token_limit == 2048


def test_models_list_pages(srv):
    headers = {"x-goog-api-key": srv.admin_key}
    first = httpx.get(f"{srv.url}/v1beta/models?pageSize=2", headers=headers).json()
    second = httpx.get(f"{srv.url}/v1beta/models?pageSize=2&pageToken={first['nextPageToken']}", headers=headers).json()
    assert len(first["models"]) == 2 and second["models"][0]["name"] not in {m["name"] for m in first["models"]}


# ---------------------------------------------------------------- auth, prefixes, errors

def test_key_in_the_query_and_the_api_prefix(srv):
    resp = httpx.post(f"{srv.url}/api/v1beta/models/{OPENAI_UP}:generateContent?key={srv.admin_key}",
                      json={"contents": [{"parts": [{"text": "hi"}]}]})
    assert resp.status_code == 200 and resp.headers["x-modelyard-deployment"] == "stub-eu"
    assert resp.json()["candidates"][0]["content"]["parts"][0]["text"] == "Hello from the stub upstream"


def test_bad_key_is_401_unauthenticated(srv):
    bad = make_client(srv.url, "nope")  # held: a dropped client closes its connection pool
    with pytest.raises(genai_errors.ClientError) as info:
        bad.models.generate_content(model=OPENAI_UP, contents="hi")
    assert info.value.code == 401 and info.value.status == "UNAUTHENTICATED"


def test_unknown_model_is_404_not_found(client):
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model="no-such-model", contents="hi")
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"


@pytest.mark.parametrize("body, field", [
    ({"contents": []}, "contents"),
    ({"contents": [{"parts": [{"text": "a"}]}], "generationConfig": {"temperature": 5}}, "generationConfig.temperature"),
    ({"contents": [{"parts": [{"executableCode": {"code": "1"}}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{"text": "a"}]}], "tools": [{"googleSearch": {}}]}, "tools[0]"),
    ({"contents": [{"parts": [{"functionResponse": {"name": "f", "response": {}}}]}]}, "contents[0].parts[0]"),
    ({"contents": [{"parts": [{"text": "a"}]}], "generationConfig": {"responseMimeType": "text/x-enum"}},
     "generationConfig.responseMimeType"),
])
def test_bad_bodies_are_400_invalid_argument_naming_the_field(srv, body, field):
    resp = httpx.post(f"{srv.url}/v1beta/models/{OPENAI_UP}:generateContent", json=body,
                      headers={"x-goog-api-key": srv.admin_key})
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["code"] == 400 and err["status"] == "INVALID_ARGUMENT"
    assert err["details"][0]["fieldViolations"][0]["field"] == field


def test_sdk_surfaces_invalid_argument(client):
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model=OPENAI_UP, contents="hi", config=types.GenerateContentConfig(temperature=9))
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"


def test_unknown_methods_and_routes_answer_in_geminis_envelope(srv):
    headers = {"x-goog-api-key": srv.admin_key}
    for resp in (httpx.post(f"{srv.url}/v1beta/models/{OPENAI_UP}:predict", headers=headers, json={}),
                 httpx.get(f"{srv.url}/v1beta/nothing-here", headers=headers)):
        assert resp.status_code == 404 and resp.json()["error"]["status"] == "NOT_FOUND"
    wrong = httpx.delete(f"{srv.url}/v1beta/models", headers=headers)
    assert wrong.status_code == 405 and set(wrong.json()["error"]) >= {"code", "message", "status"}
    embed_on_chat = httpx.post(f"{srv.url}/v1beta/models/{OPENAI_UP}:embedContent", headers=headers,
                               json={"content": {"parts": [{"text": "x"}]}})
    assert embed_on_chat.status_code == 400 and embed_on_chat.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_upstream_rate_limit_is_resource_exhausted(client, providers):
    providers.mode = "ratelimit"
    with pytest.raises(genai_errors.ClientError) as info:
        client.models.generate_content(model=CLAUDE_UP, contents="hi")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"


def test_count_tokens_asks_provider_upstreams(client, providers):
    assert client.models.count_tokens(model=CLAUDE_UP, contents="hi").total_tokens == 30 + 1
    assert client.models.count_tokens(model=GEMINI_UP, contents=["a", "b"]).total_tokens == 40 + 1  # one user turn, two parts
    assert providers.paths[-1] == "/v1beta/models/gemini-x:countTokens"
