"""Bad input gets a clear 4xx in OpenAI's envelope naming the field; nothing a client sends produces a 500."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MSG = [{"role": "user", "content": "hi"}]


def post(server, body, path="/v1/chat/completions", **kw):
    content = body if isinstance(body, (bytes, str)) else None
    return httpx.post(server.url + path, headers=server.headers(), content=content,
                      json=None if content is not None else body, **kw)


def assert_envelope(r: httpx.Response, status: int, param: str | None = None, code: str | None = None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"}
    assert err["message"]
    if param is not None:
        assert err["param"] == param, err
    if code is not None:
        assert err["code"] == code, err
    return err


@pytest.mark.parametrize("body,param", [
    ({"messages": MSG}, "model"),
    ({"model": "stub-gpt"}, "messages"),
    ({"model": "stub-gpt", "messages": []}, "messages"),
    ({"model": "stub-gpt", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
    ({"model": "stub-gpt", "messages": [{"role": "user"}]}, "messages[0]"),
    ({"model": "stub-gpt", "messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),
    ({"model": "stub-gpt", "messages": MSG, "temperature": 3}, "temperature"),
    ({"model": "stub-gpt", "messages": MSG, "top_p": -0.1}, "top_p"),
    ({"model": "stub-gpt", "messages": MSG, "max_tokens": 0}, "max_tokens"),
    ({"model": "stub-gpt", "messages": MSG, "n": 0}, "n"),
    ({"model": "stub-gpt", "messages": MSG, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"model": "stub-gpt", "messages": MSG, "response_format": {"type": "yaml"}}, "response_format.type"),
    ({"model": "stub-gpt", "messages": MSG, "response_format": {"type": "json_schema"}}, "response_format"),
    ({"model": "stub-gpt", "messages": MSG, "stream": "yes please"}, "stream"),
    ({"model": "stub-gpt", "messages": MSG, "stream_options": {"include_usage": True}}, None),
    ({"model": "stub-gpt", "messages": MSG, "tools": [{"type": "function", "function": {"name": "bad name!"}}]},
     "tools[0].function.name"),
    ({"model": "stub-gpt", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0]"),
])
def test_validation_errors_name_the_field(server, body, param):
    err = assert_envelope(post(server, body), 400)
    assert err["type"] == "invalid_request_error"
    if param:
        assert err["param"] == param
        assert param.split(".")[-1].split("[")[0] in err["message"]


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b"", b"null", b'"a string"', "{\"model\": \"\u00e9".encode()])
def test_unparseable_bodies_are_400(server, raw):
    assert_envelope(post(server, raw), 400)


def test_unknown_model_is_404(server):
    assert_envelope(post(server, {"model": "nope", "messages": MSG}), 404, param="model", code="model_not_found")
    r = httpx.get(server.v1 + "/models/nope", headers=server.headers())
    assert_envelope(r, 404, code="model_not_found")


def test_unknown_route_and_wrong_method(server):
    assert_envelope(httpx.get(server.url + "/v1/nothing-here", headers=server.headers()), 404)
    assert_envelope(httpx.get(server.v1 + "/chat/completions", headers=server.headers()), 405)
    assert_envelope(httpx.delete(server.v1 + "/models", headers=server.headers()), 405)


def test_body_size_limit(server):
    big = b'{"model": "stub-gpt", "messages": [{"role": "user", "content": "' + b"a" * (33 * 1024 * 1024) + b'"}]}'
    assert_envelope(post(server, big), 413)


def test_routes_answer_under_every_prefix(server, stub):
    for prefix in ("/v1", "/openai/v1", "/api/v1"):
        r = httpx.get(server.url + prefix + "/models", headers=server.headers())
        assert r.status_code == 200 and r.json()["object"] == "list"
        r = httpx.post(server.url + prefix + "/chat/completions", headers=server.headers(),
                       json={"model": "stub-gpt", "messages": MSG})
        assert r.status_code == 200 and r.json()["object"] == "chat.completion"
        assert_envelope(httpx.get(server.url + prefix + "/models/nope", headers=server.headers()), 404)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)
chat_like = st.fixed_dictionaries(
    {"model": st.sampled_from(["stub-gpt", "missing", ""]) | json_values},
    optional={"messages": st.lists(st.fixed_dictionaries({}, optional={"role": st.sampled_from(
        ["user", "system", "assistant", "tool", "x"]) | json_values, "content": json_values}), max_size=3) | json_values,
        "temperature": json_values, "stop": json_values, "tools": json_values, "tool_choice": json_values,
        "response_format": json_values, "n": json_values, "stream": st.just(False) | json_values,
        "stream_options": json_values},
)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=chat_like)
def test_fuzzed_chat_bodies_never_500(server, body):
    r = httpx.post(server.v1 + "/chat/completions", headers=server.headers(), json=body, timeout=30)
    assert r.status_code < 500 or r.status_code in (502, 503), r.text
    if r.status_code >= 400:
        assert "error" in r.json()
