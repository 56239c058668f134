"""GET /api/organizations/{org}/usage/series (the console's usage explorer) through a real server on SQLite and
PostgreSQL: SDK calls grouped by day, model, key, task and status, filtered, summed from the rollups the usage API
reads, scoped to the caller's org, and bad parameters refused with a 400 that names them."""

from __future__ import annotations

import httpx
import openai
import pytest

from ...conftest import quiet_server, server_fixture, upstream_models
from ...support.accounts import create_key, create_org, top_up

HI = [{"role": "user", "content": "hi"}]
PRICE_MICROS = 2000  # stub-priced: $0.002 a request


def _build(tmp, database_url, stub_url):
    models = upstream_models(stub_url)
    priced = {**models[0], "id": "stub-priced", "aliases": [], "price": {"per_request": PRICE_MICROS / 1e6}}
    return quiet_server(tmp, database_url, [*models, priced], auth_cache_ttl=0.0, builtin_models=False)


series_server = server_fixture("series_server", _build)


def _get(srv, path: str, key: str | None = None, **params) -> httpx.Response:
    return httpx.get(srv.url + path, headers=srv.headers(key), params=params, timeout=30)


def _key(srv, org_id: str, name: str) -> tuple[str, str]:
    r = httpx.post(f"{srv.url}/api/organizations/{org_id}/tokens", headers=srv.headers(),
                   json={"name": name, "scopes": ["user:read", "user:write"]})
    assert r.status_code == 201, r.text
    return r.json()["secret"], r.json()["token"]["id"]


def test_the_series_groups_and_filters_the_orgs_calls(series_server, stub):
    srv = series_server
    org = create_org(srv, "pro")
    top_up(srv, org["id"], 1000)
    ci, ci_id = _key(srv, org["id"], "ci")
    batch, batch_id = _key(srv, org["id"], "batch")
    for secret, model, n in ((ci, "stub-gpt", 3), (batch, "stub-priced", 2)):
        client = openai.OpenAI(api_key=secret, base_url=srv.v1, max_retries=0)
        for _ in range(n):
            assert client.chat.completions.create(model=model, messages=HI).choices[0].message.content
    with pytest.raises(openai.APIError):
        openai.OpenAI(api_key=ci, base_url=srv.v1, max_retries=0).chat.completions.create(model="stub-dead",
                                                                                           messages=HI)
    admin = create_key(srv, org["id"], ["admin:read"])
    base = f"/api/organizations/{org['id']}/usage/series"

    by_day = _get(srv, base, admin).json()  # the default: by day over the last 30 days
    assert by_day["object"] == "usage.series" and by_day["group_by"] == ["day"] and len(by_day["data"]) == 1
    today = by_day["data"][0]
    assert today["day"] == by_day["end"] and today["requests"] == 6 and today["failed"] == 1
    assert today["price_micros"] == 2 * PRICE_MICROS and today["cost_usd"] == "0.004"
    assert today["input_tokens"] > 0 and today["output_tokens"] > 0
    assert today["latency_ms_mean"] == round(today["latency_ms_total"] / 6, 1)
    assert by_day["totals"]["requests"] == 6 and by_day["totals"]["price_micros"] == 2 * PRICE_MICROS

    by_model = {r["model_id"]: r for r in _get(srv, base, admin, group_by="model").json()["data"]}
    assert {m: r["requests"] for m, r in by_model.items()} == {"stub-gpt": 3, "stub-priced": 2, "stub-dead": 1}
    assert by_model["stub-dead"]["failed"] == 1 and by_model["stub-gpt"]["failed"] == 0
    # the same numbers the usage API gives: both read the day rollups
    usage = {r["model_id"]: r for r in _get(srv, f"/api/organizations/{org['id']}/usage", admin).json()["data"]}
    for model, row in by_model.items():
        for k in ("requests", "succeeded", "price_micros", "input_tokens", "output_tokens"):
            assert row[k] == usage[model][k], (model, k)

    by_key = {r["token_name"]: r for r in _get(srv, base, admin, group_by="token").json()["data"]}
    assert by_key["ci"]["token_id"] == ci_id and by_key["ci"]["requests"] == 4
    assert by_key["batch"]["token_id"] == batch_id and by_key["batch"]["price_micros"] == 2 * PRICE_MICROS

    rows = _get(srv, base, admin, group_by="day,model,status").json()["data"]
    assert {(r["model_id"], r["status"], r["requests"]) for r in rows} == {
        ("stub-gpt", "ok", 3), ("stub-priced", "ok", 2), ("stub-dead", "failed", 1)}
    assert all(r["day"] == by_day["end"] for r in rows)

    only = _get(srv, base, admin, group_by="model", status="failed").json()
    assert [(r["model_id"], r["requests"]) for r in only["data"]] == [("stub-dead", 1)]
    assert only["filters"] == {"status": "failed"}
    assert [r["task"] for r in _get(srv, base, admin, group_by="task", token=batch_id).json()["data"]] == ["chat"]
    assert _get(srv, base, admin, model="stub-gpt", token=batch_id).json()["data"] == []
    assert _get(srv, base, admin, token="none").json()["data"] == []  # every call here had a key
    assert _get(srv, base, admin, start="2000-01-01", end="2000-01-31").json()["data"] == []


def test_another_orgs_series_is_a_404_and_bad_parameters_a_400_naming_them(series_server):
    srv = series_server
    mine, theirs = create_org(srv), create_org(srv)
    admin = create_key(srv, mine["id"], ["admin:read"])
    user = create_key(srv, mine["id"], ["user:read"])
    assert _get(srv, f"/api/organizations/{mine['id']}/usage/series", admin).status_code == 200
    r = _get(srv, f"/api/organizations/{theirs['id']}/usage/series", admin)
    assert r.status_code == 404 and r.json()["error"]["code"] == "organization_not_found"
    assert _get(srv, f"/api/organizations/{mine['id']}/usage/series", user).status_code == 403
    # the operator reads any org's
    assert _get(srv, f"/api/organizations/{theirs['id']}/usage/series").json()["organization_id"] == theirs["id"]

    base = f"/api/organizations/{mine['id']}/usage/series"
    for params, param in (({"group_by": "week"}, "group_by"), ({"group_by": "day,day"}, "group_by"),
                          ({"group_by": ","}, "group_by"), ({"group_by": "model;drop"}, "group_by"),
                          ({"status": "teapot"}, "status"), ({"model": "m" * 201}, "model"),
                          ({"task": "chat\x00"}, "task"), ({"token": "\x00"}, "token"),
                          ({"start": "yesterday"}, "start"), ({"end": "2026-13-01"}, "end"),
                          ({"start": "2026-02-01", "end": "2026-01-01"}, "start"),
                          ({"start": "2020-01-01", "end": "2026-01-01"}, "start")):
        r = _get(srv, base, admin, **params)
        assert r.status_code == 400, (params, r.text)
        assert r.json()["error"]["param"] == param, (params, r.json())
