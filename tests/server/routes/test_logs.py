"""The request log and the audit log through a real server on SQLite and PostgreSQL: rows after SDK calls carrying
the response's X-Request-Id, bodies only when the org keeps them (redacted by the built-in PII model when asked),
audit rows for each admin action, and org isolation."""

from __future__ import annotations

import httpx
import openai
import pytest

from ...conftest import make_settings, quiet_server, running, server_fixture, upstream_models
from ...support.accounts import create_key, create_org, top_up

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
HI = [{"role": "user", "content": "hi"}]


def _build(tmp, database_url, stub_url):
    return quiet_server(tmp, database_url, upstream_models(stub_url), auth_cache_ttl=0.0, builtin_models=False)


logs_server = server_fixture("logs_server", _build)


def _get(srv, path: str, key: str | None = None, **params) -> httpx.Response:
    return httpx.get(srv.url + path, headers=srv.headers(key), params=params, timeout=30)


def _client(srv, key: str) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=srv.v1, max_retries=0)


def test_each_call_is_logged_under_the_request_id_it_was_answered_with(logs_server, stub):
    srv = logs_server
    org = create_org(srv, "pro")
    admin = create_key(srv, org["id"], ["admin:write"])
    client = _client(srv, admin)
    raw = client.chat.completions.with_raw_response.create(
        model="stub-gpt", messages=HI, extra_headers={"x-request-id": "req-mine-1",
                                                      "traceparent": f"00-{TRACE}-00f067aa0ba902b7-01"})
    assert raw.headers["x-request-id"] == "req-mine-1"
    minted = client.chat.completions.with_raw_response.create(model="stub-gpt", messages=HI).headers["x-request-id"]
    streamed = client.chat.completions.with_raw_response.create(model="stub-gpt", messages=HI, stream=True)
    streamed_id = streamed.headers["x-request-id"]
    assert "".join(c.choices[0].delta.content or "" for c in streamed.parse() if c.choices)
    with pytest.raises(openai.APIError):
        client.chat.completions.create(model="stub-dead", messages=HI, extra_headers={"x-request-id": "req-dead"})

    base = f"/api/organizations/{org['id']}/request-log"
    rows = _get(srv, base, admin).json()["data"]
    assert [r["request_id"] for r in rows] == ["req-dead", streamed_id, minted, "req-mine-1"]  # newest first
    dead, stream, plain, first = rows
    assert first["trace_id"] == TRACE and plain["trace_id"] is None
    assert first["deployment"] == "stub-eu" and first["route"] == "/v1/chat/completions"
    assert first["status"] == "ok" and first["http_status"] == 200 and first["output_tokens"] > 0
    assert first["model_id"] == "stub-gpt" and first["token_id"] and first["ttft_ms"] is None
    assert stream["ttft_ms"] is not None and stream["ttft_ms"] <= stream["latency_ms"]
    assert dead["status"] == "failed" and dead["http_status"] >= 500 and dead["error_code"]
    # the usage row of the same call has the same id
    assert all(r["id"].startswith("use_") for r in rows)

    assert [r["request_id"] for r in _get(srv, base, admin, status="failed").json()["data"]] == ["req-dead"]
    assert _get(srv, base, admin, model="stub-dead").json()["data"] == [dead]
    page = _get(srv, base, admin, limit=3).json()
    assert page["has_more"] and len(page["data"]) == 3
    rest = _get(srv, base, admin, limit=3, after=page["next_after"]).json()
    assert rest["data"] == [first] and not rest["has_more"]
    assert _get(srv, base, admin, status="teapot").status_code == 400
    assert _get(srv, base, admin, **{"from": "not-a-date"}).status_code == 400
    for bad in ({"limit": "²"}, {"limit": "0"}, {"status": "²²²"}, {"after": "!!"}, {"after": "bm90IGEgY3Vyc29y"}):
        assert _get(srv, base, admin, **bad).status_code == 400, bad  # never a 500

    one = _get(srv, f"{base}/req-mine-1", admin).json()
    assert one["calls"][0]["id"] == first["id"] and one["calls"][0]["body"] is None  # bodies are off by default
    # the operator sees every org's
    assert first["id"] in [r["id"] for r in _get(srv, "/api/request-log", limit=500).json()["data"]]
    assert _get(srv, "/api/request-log/req-mine-1").json()["calls"][0]["id"] == first["id"]


def test_bodies_are_kept_only_when_the_org_turns_them_on(logs_server, stub):
    srv = logs_server
    org = create_org(srv, "pro")
    admin = create_key(srv, org["id"], ["admin:write"])
    client = _client(srv, admin)
    client.chat.completions.create(model="stub-gpt", messages=HI, extra_headers={"x-request-id": "b-off"})
    r = httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(admin),
                    json={"request_logging": {"bodies": True}})
    assert r.status_code == 200 and r.json()["request_logging"] == {"bodies": True, "redact": False,
                                                            "retention_days": None}
    client.chat.completions.create(model="stub-gpt", messages=HI, extra_headers={"x-request-id": "b-on"})
    list(client.chat.completions.create(model="stub-gpt", messages=HI, stream=True,
                                        extra_headers={"x-request-id": "b-stream"}))
    base = f"/api/organizations/{org['id']}/request-log"
    assert _get(srv, f"{base}/b-off", admin).json()["calls"][0]["body"] is None
    body = _get(srv, f"{base}/b-on", admin).json()["calls"][0]["body"]
    assert body["redacted"] == "no" and body["request"]["messages"] == HI
    assert body["response"]["choices"][0]["message"]["content"] == stub.reply
    chunks = _get(srv, f"{base}/b-stream", admin).json()["calls"][0]["body"]["response"]["stream"]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks
                   if isinstance(c, dict) and c.get("choices")) == stub.reply
    assert _get(srv, f"{base}/nope", admin).status_code == 404


def test_admin_actions_are_audited_and_orgs_see_only_their_own(logs_server):
    srv = logs_server
    org = create_org(srv, "pro")
    other = create_org(srv, "pro")
    top_up(srv, org["id"], 250, "trial")
    r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(),
                   json={"name": "ops", "scopes": ["admin:write"]})
    admin, token_id = r.json()["secret"], r.json()["token"]["id"]
    mine = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(admin),
                      json={"name": "app"}).json()
    assert httpx.delete(f"{srv.url}/api/organizations/{org['id']}/tokens/{mine['token']['id']}",
                        headers=srv.headers(admin)).status_code == 200
    assert httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(),
                       json={"plan": "standard"}).status_code == 200
    fp = f"{srv.url}/api/organizations/{org['id']}/content-filter-policy"
    assert httpx.post(fp, headers=srv.headers(admin), json={"action": "flag"}).status_code == 201
    assert httpx.patch(fp, headers=srv.headers(admin), json={"action": "log"}).status_code == 200
    assert httpx.delete(fp, headers=srv.headers(admin)).status_code == 200
    assert httpx.get(f"{srv.url}/api/webhook-secret", headers=srv.headers(admin)).status_code == 200

    entries = _get(srv, f"/api/organizations/{org['id']}/audit-log", admin).json()["data"]
    actions = [e["action"] for e in reversed(entries)]
    assert actions == ["organization.create", "wallet.top_up", "token.create", "token.create", "token.revoke",
                       "organization.update", "content_filter.create", "content_filter.update",
                       "content_filter.delete", "webhook_secret.read"]
    by = {e["action"]: e for e in entries}
    assert by["organization.update"]["before"] == {"plan": "pro"}
    assert by["organization.update"]["after"] == {"plan": "standard"}
    assert by["wallet.top_up"]["after"]["amount_micros"] == 2_500_000
    assert by["content_filter.update"]["before"]["action"] == "flag"
    assert by["content_filter.update"]["after"]["action"] == "log"
    assert by["token.revoke"]["actor_id"] == token_id and by["token.revoke"]["actor_kind"] == "key"
    assert all(e["client_ip"] == "127.0.0.1" and e["request_id"] for e in entries)
    text = str(entries)
    assert admin not in text and mine["secret"] not in text  # no secret is ever kept

    everyone = _get(srv, "/api/audit-log", limit=500).json()["data"]
    assert {e["org_id"] for e in everyone} >= {org["id"], other["id"]}
    assert _get(srv, "/api/audit-log", admin, action="token.revoke").status_code == 403  # the operator's alone
    assert _get(srv, "/api/request-log", admin).status_code == 403
    for path in ("audit-log", "request-log", "request-log/anything"):
        assert _get(srv, f"/api/organizations/{other['id']}/{path}", admin).status_code == 404
    assert [e["action"] for e in _get(srv, "/api/audit-log", action="wallet.top_up", limit=500).json()["data"]
            if e["org_id"] == org["id"]] == ["wallet.top_up"]


@pytest.mark.slow
def test_kept_bodies_are_redacted_by_the_built_in_pii_model(tmp_path, stub_server, stub):
    models = upstream_models(stub_server[0].url)
    with running(make_settings(tmp_path, models=models, auth_cache_ttl=0.0)) as srv:
        org = create_org(srv, "pro")
        admin = create_key(srv, org["id"], ["admin:write"])
        assert httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(admin),
                           json={"request_logging": {"bodies": True, "redact": True}}).status_code == 200
        said = "Mail john.smith@example.com or call +1 212 555 0199 about it."
        _client(srv, admin).chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": said}],
                                                    extra_headers={"x-request-id": "pii-1"})
        r = httpx.get(f"{srv.url}/api/organizations/{org['id']}/request-log/pii-1", headers=srv.headers(admin),
                      timeout=120)
        body = r.json()["calls"][0]["body"]
        assert body["redacted"] == "yes", body
        kept = body["request"]["messages"][0]["content"]
        assert "john.smith@example.com" not in kept and "about it" in kept
        assert body["request"]["messages"][0]["role"] == "user" and body["request"]["model"] == "stub-gpt"
