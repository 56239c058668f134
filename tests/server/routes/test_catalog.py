"""GET /api/catalog and POST /api/prompt-rewrite over HTTP, on SQLite and PostgreSQL: the catalog's parameters are
what the routes accept, plans hide models, latency is what was measured; rewrites run on the built-in SmolLM2
through the call path (billed, content-filtered)."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from modelyard.catalog.builtin import SMOLLM2_ID

from ...conftest import Running, quiet_server, server_fixture
from ...support.accounts import create_key, create_org, org_with_key, wallet
from ...support.waiting import wait_until

REWRITE_PRICE = 0.01  # $ per rewrite on SmolLM2: 10_000 micro-dollars
PII = "A portrait of john.smith@example.com, phone +1 212 555 0199."


def catalog_models(stub_url: str) -> list[dict[str, Any]]:
    up = {"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-model", "timeout": 10}
    return [
        {"id": "stub-gpt", "type": "text", "aliases": ["gpt-stub"], "description": "A stub upstream chat model",
         "price": {"per_request": 0.001}, "deployments": [{**up, "name": "stub-eu", "region": "eu"}]},
        {"id": "stub-image", "type": "image", "description": "Stub pictures", "deployments": [
            {**up, "model": "stub-images"}]},
        {"id": "pro-only", "type": "text", "plans": ["pro"], "deployments": [up]},
        {"id": "echo-lat", "type": "text", "deployments": [{"backend": "echo"}]},  # only the latency test calls it
    ]


@contextlib.contextmanager
def catalog_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Running]:
    with quiet_server(tmp, database_url, catalog_models(stub_url), auth_cache_ttl=0.0,
                      prices={SMOLLM2_ID: {"per_request": REWRITE_PRICE}},
                      fal_slugs={"fal-ai/stub-image": "stub-image"}, prompt_rewrite_max_tokens=48) as srv:
        yield srv


srv = server_fixture("srv", catalog_server)


def _get(srv: Running, path: str, key: str | None = None, **params: str) -> httpx.Response:
    return httpx.get(srv.url + path, headers=srv.headers(key), params=params, timeout=30)


def _post(srv: Running, path: str, body: Any, key: str | None = None) -> httpx.Response:
    return httpx.post(srv.url + path, headers=srv.headers(key), json=body, timeout=300)


def _entries(srv: Running, key: str | None = None, **params: str) -> dict[str, dict[str, Any]]:
    r = _get(srv, "/api/catalog", key, **params)
    assert r.status_code == 200, r.text
    return {m["id"]: m for m in r.json()["data"]}


def _refused(r: httpx.Response, status: int, param: str | None) -> dict[str, Any]:
    """The platform envelope: code, message, type, and the field at fault."""
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == param and err["message"] and err["code"], err
    return err


# ---------------------------------------------------------------- the catalog

def test_an_entry_says_how_to_call_the_model(srv: Running) -> None:
    got = _entries(srv)
    gpt = got["stub-gpt"]
    assert gpt["type"] == "text" and gpt["tasks"] == ["chat", "completion"] and gpt["aliases"] == ["gpt-stub"]
    assert gpt["fal_slugs"] == ["modelyard/stub-gpt"] and got["stub-image"]["fal_slugs"] == [
        "modelyard/stub-image", "fal-ai/stub-image"]
    assert gpt["description"] == "A stub upstream chat model" and gpt["owned_by"] == "upstream"
    assert gpt["regions"] == ["eu"] and got["echo-lat"]["regions"] == []
    assert gpt["price"] == {"per_request": 0.001} and gpt["free"] is False
    assert got["stub-image"]["price"] is None and got["stub-image"]["free"] is True
    chat = {p["name"]: p for p in gpt["parameters"]["chat"]}
    assert chat["temperature"]["minimum"] == 0 and chat["temperature"]["maximum"] == 2
    assert chat["messages"]["required"] is True and "model" not in chat
    assert gpt["extra_parameters"]["chat"] is True
    image = {p["name"]: p for p in got["stub-image"]["parameters"]["text-to-image"]}
    assert image["response_format"]["enum"] == ["url", "b64_json"] and image["n"]["default"] == 1
    assert got["stub-image"]["parameters"]["image-to-image"] is None  # a multipart form: see /openapi.json
    assert got["stub-image"]["limits"]["max_upload_bytes"] == srv.settings.max_upload_bytes
    assert got[SMOLLM2_ID]["limits"]["context_length"] == 2048 and gpt["limits"]["context_length"] is None


def test_status_is_the_one_model_status_reports(srv: Running) -> None:
    reported = {m["model_id"]: m for m in _get(srv, "/api/model-status").json()["models"]}
    where = ("name", "backend", "region", "status")
    for model_id, entry in _entries(srv).items():
        assert (entry["status"], entry["enabled"]) == (reported[model_id]["status"], reported[model_id]["enabled"])
        assert [{k: d[k] for k in where} for d in entry["deployments"]] == [
            {k: d[k] for k in where} for d in reported[model_id]["deployments"]]
    gpt = _entries(srv)["stub-gpt"]["deployments"]
    assert [(d["name"], d["backend"], d["region"]) for d in gpt] == [("stub-eu", "openai", "eu")]
    assert {"in_flight", "successes", "failures"} <= gpt[0].keys() and "api_key" not in gpt[0]


def test_a_request_built_from_the_listed_parameters_is_accepted(srv: Running) -> None:
    """Every parameter with listed values or a range, set to a listed value (the range's top where it has one),
    plus the required ones: the route takes it."""
    for model, task, path in (("stub-gpt", "chat", "/v1/chat/completions"),
                              ("stub-image", "text-to-image", "/v1/images/generations")):
        listed = _get(srv, f"/api/catalog/{model}").json()["parameters"][task]
        body = {"model": model, **{p["name"]: _value(p) for p in listed if p["required"] or _bounded(p)}}
        r = _post(srv, path, body)
        assert r.status_code == 200, (body, r.text)


def test_a_value_outside_a_listed_range_gets_the_400_naming_its_field(srv: Running) -> None:
    checked = 0
    for model, task, path, base in (
            ("stub-gpt", "chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
            ("stub-image", "text-to-image", "/v1/images/generations", {"prompt": "a fox"})):
        for p in _get(srv, f"/api/catalog/{model}").json()["parameters"][task]:
            for bad in _outside(p):
                r = _post(srv, path, {"model": model, **base, p["name"]: bad})
                assert r.status_code == 400, (p, bad, r.text)
                assert r.json()["error"]["param"] == p["name"], (p, bad, r.text)
                checked += 1
    assert checked >= 12


def test_filters(srv: Running) -> None:
    assert "stub-image" in _entries(srv, type="image") and "stub-gpt" not in _entries(srv, type="image")
    by_alias = _entries(srv, task="fal/text-to-image")
    assert "stub-image" in by_alias and by_alias.keys() == _entries(srv, task="text-to-image").keys()
    assert "stub-gpt" in _entries(srv, task="openai/chat-completion") and "stub-image" not in _entries(srv, task="chat")
    assert list(_entries(srv, q="GPT-STUB")) == ["stub-gpt"]  # an alias, any case
    assert list(_entries(srv, q="stub pict")) == ["stub-image"]  # the description
    assert _entries(srv, q="no such model anywhere") == {}
    err = _refused(_get(srv, "/api/catalog", task="painting"), 400, "task")
    assert err["type"] == "invalid_request_error"


def test_plans_hide_the_models_they_may_not_call(srv: Running) -> None:
    _, free = org_with_key(srv, plan="free")
    _, pro = org_with_key(srv, plan="pro")
    assert "pro-only" not in _entries(srv, free) and "stub-gpt" in _entries(srv, free)
    assert "pro-only" in _entries(srv, pro)
    err = _refused(_get(srv, "/api/catalog/pro-only", free), 404, None)
    assert err == {**err, "code": "model_not_found", "type": "not_found_error"}
    assert _get(srv, "/api/catalog/pro-only", pro).json()["id"] == "pro-only"


def test_one_model_by_id_or_alias_and_unknown_is_404(srv: Running) -> None:
    assert _get(srv, "/api/catalog/gpt-stub").json()["id"] == "stub-gpt"
    err = _refused(_get(srv, "/api/catalog/nope/not-a-model"), 404, None)
    assert err["type"] == "not_found_error" and "nope/not-a-model" in err["message"]
    assert _get(srv, "/api/catalog", "myd_not-a-key").status_code == 401
    _, read_only = org_with_key(srv, plan="pro", scopes=["user:read"])
    assert _get(srv, "/api/catalog", read_only).status_code == 200
    assert _post(srv, "/api/prompt-rewrite", {"prompt": "a fox"}, read_only).status_code == 403  # needs user:write


def test_latency_is_null_until_calls_are_measured(srv: Running) -> None:
    entry = _get(srv, "/api/catalog/echo-lat").json()
    assert entry["latency"] == {"chat": None, "completion": None}
    for i in range(3):
        assert _post(srv, "/v1/chat/completions", _chat("echo-lat", f"whole {i}")).status_code == 200
    for i in range(2):
        r = _post(srv, "/v1/chat/completions", {**_chat("echo-lat", f"stream {i}"), "stream": True})
        assert r.status_code == 200 and r.text.rstrip().endswith("[DONE]")

    def measured() -> dict[str, Any] | None:  # a stream is recorded as its relay closes, on the server's thread
        chat = _get(srv, "/api/catalog/echo-lat").json()["latency"]["chat"]
        return chat if chat and chat["samples"] == 5 else None
    chat = wait_until(measured, 10, "five measured calls")
    for kind in ("ttfb_ms", "total_ms"):
        assert 0 < chat[kind]["p50"] <= chat[kind]["p95"], chat
    assert _get(srv, "/api/catalog/echo-lat").json()["latency"]["completion"] is None


# ---------------------------------------------------------------- prompt rewrite

def test_rewrite_returns_n_prompts_and_is_billed_as_a_chat_call(srv: Running) -> None:
    org_id, key = org_with_key(srv, plan="pro", cents=100)
    r = _post(srv, "/api/prompt-rewrite", {"prompt": "a cat on a roof at night", "n": 2, "style": "oil painting"}, key)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["original"] == "a cat on a roof at night" and body["model"] == SMOLLM2_ID
    assert body["task"] == "text-to-image" and body["usage"]["completion_tokens"] > 0
    assert len(body["prompts"]) == 2 and all(p.strip() for p in body["prompts"]), body
    assert r.headers["x-modelyard-model"] == SMOLLM2_ID

    srv.on_server_loop(srv.app.state.ctx.gate.flush())
    assert wallet(srv, org_id)["balance_micros"] == 1_000_000 - 10_000
    usage = _get(srv, f"/api/organizations/{org_id}/usage").json()
    assert usage["totals"]["requests"] == 1 and usage["totals"]["price_micros"] == 10_000


def test_rewrite_for_video_through_a_task_alias(srv: Running) -> None:
    r = _post(srv, "/api/prompt-rewrite", {"prompt": "waves on a beach", "task": "fal/text-to-video"})
    assert r.status_code == 200, r.text
    assert r.json()["task"] == "text-to-video" and len(r.json()["prompts"]) == 1


def test_the_content_filter_reads_the_prompt(srv: Running) -> None:
    org = create_org(srv, "pro")
    key = create_key(srv, org["id"], ["user:read", "user:write", "admin:write"])
    r = _post(srv, f"/api/organizations/{org['id']}/content-filter-policy", {"action": "block", "categories": ["pii"]},
              key)
    assert r.status_code == 201, r.text
    err = _refused(_post(srv, "/api/prompt-rewrite", {"prompt": PII}, key), 400, "prompt")
    assert err["code"] == "content_filter" and "pii" in err["message"]
    # the wallet is empty: a prompt the filter lets through is refused for money, not words
    assert _post(srv, "/api/prompt-rewrite", {"prompt": "a red barn"}, key).status_code == 402


@pytest.mark.parametrize("body, param", [
    ({"prompt": ""}, "prompt"),
    ({"prompt": "   \n"}, "prompt"),
    ({"prompt": "x" * 2001}, "prompt"),  # prompt_rewrite_max_chars
    ({}, "prompt"),
    ({"prompt": 7}, "prompt"),
    ({"prompt": "a fox", "n": 5}, "n"),
    ({"prompt": "a fox", "n": 0}, "n"),
    ({"prompt": "a fox", "task": "painting"}, "task"),
    ({"prompt": "a fox", "task": "embedding"}, "task"),
    ({"prompt": "a fox", "model_id": "stub-image"}, "model_id"),
    ({"prompt": "a fox", "style": "s" * 201}, "style"),
    ({"prompt": "a fox", "colour": "red"}, "colour"),
])
def test_rewrite_refuses_what_it_cannot_do(srv: Running, body: dict[str, Any], param: str) -> None:
    _refused(_post(srv, "/api/prompt-rewrite", body), 400, param)


def test_rewrite_of_an_unknown_model_is_404_naming_model_id(srv: Running) -> None:
    err = _refused(_post(srv, "/api/prompt-rewrite", {"prompt": "a fox", "model_id": "no-such"}), 404, "model_id")
    assert err["code"] == "model_not_found"


# ---------------------------------------------------------------- requests from parameter lists

def _chat(model: str, text: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _bounded(p: dict[str, Any]) -> bool:
    return bool(p.get("enum")) or any(k in p for k in ("minimum", "maximum", "exclusive_minimum", "exclusive_maximum"))


def _value(p: dict[str, Any]) -> Any:
    """A value the listing says is allowed: a listed value, the top of a range, else one of the listed type."""
    types = p["type"] if isinstance(p["type"], list) else [p["type"]]
    if p.get("enum") and "string" in types:
        return p["enum"][0]
    if "maximum" in p:
        return p["maximum"]
    if "minimum" in p:
        return p["minimum"]
    if "string" in types:
        return "a lighthouse at dusk"[:p.get("max_length", 100)]
    if "array" in types:
        item = p["items"]
        fields = item.get("fields", [])
        return [{f["name"]: _value(f) for f in fields if f["required"]} | (
            {"content": "hello"} if any(f["name"] == "content" for f in fields) else {})]
    raise AssertionError(f"no value for {p}")


def _outside(p: dict[str, Any]) -> list[Any]:
    """Values the listing says are refused."""
    bad: list[Any] = []
    step = 1 if p["type"] == "integer" else 0.5
    if "maximum" in p:
        bad.append(p["maximum"] + step)
    if "minimum" in p:
        bad.append(p["minimum"] - step)
    if "exclusive_maximum" in p:
        bad.append(p["exclusive_maximum"])
    if "exclusive_minimum" in p:
        bad.append(p["exclusive_minimum"])
    if "max_length" in p and p["type"] == "string":
        bad.append("x" * (p["max_length"] + 1))
    if p.get("enum") and p["type"] == "string":
        bad.append("not-a-listed-value")
    return bad


def test_the_routes_are_in_the_openapi_document(srv: Running) -> None:
    doc = _get(srv, "/openapi.json").json()
    assert {"/api/catalog", "/api/catalog/{model}", "/api/prompt-rewrite"} <= set(doc["paths"])
    body = doc["paths"]["/api/prompt-rewrite"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("/RewriteRequest") and "RewriteRequest" in doc["components"]["schemas"]
