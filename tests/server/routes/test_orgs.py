"""The operator and org APIs on SQLite and PostgreSQL: accounts, top-ups, tokens, usage aggregates, org isolation,
pricing, the content filter, and the CLI mirror."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import httpx
import pytest

from ...conftest import make_settings, running
from ...support.accounts import chat, create_key, create_org, org_with_key, top_up
from ...support.servers import ServerThread
from ...support.paths import REPO
from ...support.provider_stubs import moderation_stub

SRC = str(REPO / "src")


@pytest.fixture(scope="module")
def moderation_url():
    with ServerThread(moderation_stub()) as s:
        yield s.url


@pytest.fixture
def srv(tmp_path, database_url, stub_server, stub, moderation_url):
    up = {"backend": "openai", "base_url": stub_server[0].url + "/v1", "model": "stub-model", "timeout": 10}
    models = [{"id": "stub-gpt", "type": "text", "deployments": [up]},
              {"id": "stub-gpt-2", "type": "text", "price": {"per_request": 0.002}, "deployments": [up]},
              {"id": "stub-mod", "type": "moderation",
               "deployments": [{"backend": "openai", "base_url": moderation_url + "/v1"}]}]
    settings = make_settings(tmp_path, database_url=database_url, models=models, auth_cache_ttl=0.0,
                             content_filter_model="stub-mod", key_min_balance_cents=999)
    with running(settings) as s:
        yield s


def _get(srv, path: str, key: str | None = None, **params) -> httpx.Response:
    return httpx.get(srv.url + path, headers=srv.headers(key), params=params)


def test_operator_manages_accounts(srv):
    org = create_org(srv, "free", name="acme")
    assert org["plan"] == "free" and org["balance_cents"] == 0
    assert httpx.post(srv.url + "/api/organizations", headers=srv.headers(),
                      json={"name": "acme"}).status_code == 409
    r = httpx.post(srv.url + "/api/organizations", headers=srv.headers(), json={"name": "x", "plan": "platinum"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "plan"
    r = httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(),
                    json={"plan": "pro", "profile": {"email": "ops@acme.test"}})
    assert r.status_code == 200 and r.json()["plan"] == "pro" and r.json()["profile"]["email"] == "ops@acme.test"
    r = httpx.patch(f"{srv.url}/api/organizations/{org['id']}", headers=srv.headers(), json={"status": "gone"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "status"
    paid = top_up(srv, org["id"], 1250, note="invoice 7")
    assert paid["balance_cents"] == 1250 and paid["balance_dollars"] == "12.50" and paid["entry"]["note"] == "invoice 7"
    for bad in ({"amount_cents": -5}, {"amount_cents": "lots"}, {}):
        r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/wallet/top-ups", headers=srv.headers(), json=bad)
        assert r.status_code == 400 and r.json()["error"]["param"] == "amount_cents", bad
    assert _get(srv, f"/api/organizations/{org['id']}").json()["balance_cents"] == 1250
    names = [o["name"] for o in _get(srv, "/api/organizations").json()["data"]]
    assert "acme" in names and "default" in names
    ledger = _get(srv, f"/api/organizations/{org['id']}/wallet").json()["ledger"]
    assert [(e["kind"], e["amount_micros"]) for e in ledger] == [("top_up", 12_500_000)]


def test_an_org_admin_sees_only_its_own_org(srv):
    mine, other = create_org(srv, "pro"), create_org(srv, "pro")
    top_up(srv, mine["id"], 1000)
    top_up(srv, other["id"], 1000)
    admin = create_key(srv, mine["id"], ["admin:write"])
    assert [o["id"] for o in _get(srv, "/api/organizations", admin).json()["data"]] == [mine["id"]]
    assert _get(srv, f"/api/organizations/{mine['id']}", admin).status_code == 200
    for path in ("", "/usage", "/usage/by-token", "/tokens", "/wallet", "/billing/rates", "/content-filter-policy"):
        r = _get(srv, f"/api/organizations/{other['id']}{path}", admin)
        assert r.status_code == 404, path  # never 403: ids of other orgs do not leak
    r = httpx.post(f"{srv.url}/api/organizations/{other['id']}/tokens", headers=srv.headers(admin), json={})
    assert r.status_code == 404
    # an org admin is not the operator
    assert httpx.post(srv.url + "/api/organizations", headers=srv.headers(admin), json={"name": "mine2"}).status_code == 403
    r = httpx.patch(f"{srv.url}/api/organizations/{mine['id']}", headers=srv.headers(admin), json={"plan": "enterprise"})
    assert r.status_code == 403 and r.json()["error"]["param"] == "plan"
    r = httpx.post(f"{srv.url}/api/organizations/{mine['id']}/wallet/top-ups", headers=srv.headers(admin),
                   json={"amount_cents": 100})
    assert r.status_code == 403
    # a user key has no admin scope at all
    user = create_key(srv, mine["id"])
    assert _get(srv, f"/api/organizations/{mine['id']}/usage", user).status_code == 403


def test_tokens_api_shows_the_secret_once_and_revokes(srv):
    org = create_org(srv, "pro")
    r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(), json={"name": "ci"})
    assert r.status_code == 402 and r.json()["error"]["code"] == "insufficient_balance"  # needs $9.99 first
    top_up(srv, org["id"], 999)
    r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(),
                   json={"name": "ci", "scopes": ["user:read", "user:write"]})
    assert r.status_code == 201
    token, secret = r.json()["token"], r.json()["secret"]
    assert token["scopes"] == ["user:read", "user:write"] and token["status"] == "active"
    listed = _get(srv, f"/api/organizations/{org['id']}/tokens").json()["data"]
    assert [t["id"] for t in listed] == [token["id"]] and secret not in json.dumps(listed)
    assert chat(srv, secret).status_code == 200
    r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(), json={"scopes": ["root"]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "scopes"
    # an org admin cannot mint scopes it lacks
    admin = create_key(srv, org["id"], ["admin:read", "user:write"])
    r = httpx.post(f"{srv.url}/api/organizations/{org['id']}/tokens", headers=srv.headers(admin), json={})
    assert r.status_code == 403  # admin:write is needed to create tokens at all
    r = httpx.delete(f"{srv.url}/api/organizations/{org['id']}/tokens/{token['id']}", headers=srv.headers())
    assert r.status_code == 200 and r.json()["token"]["status"] == "revoked"
    assert chat(srv, secret).status_code == 401
    assert httpx.delete(f"{srv.url}/api/organizations/{org['id']}/tokens/tok_nope", headers=srv.headers()).status_code == 404


def test_usage_aggregates_add_up(srv):
    org_id, key_a = org_with_key(srv, plan="pro", cents=1000)
    key_b = create_key(srv, org_id)
    for key, model, n in ((key_a, "stub-gpt", 3), (key_a, "stub-gpt-2", 2), (key_b, "stub-gpt-2", 4)):
        for _ in range(n):
            assert chat(srv, key, model).status_code == 200
    r = httpx.post(srv.v1 + "/chat/completions", headers=srv.headers(key_b),
                   json={"model": "stub-gpt", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1})
    assert r.status_code == 400  # refused before admission: not a usage row
    usage = _get(srv, f"/api/organizations/{org_id}/usage").json()
    rows = usage["data"]
    by_model = {r["model_id"]: r for r in rows}
    assert by_model["stub-gpt"]["requests"] == 3 and by_model["stub-gpt-2"]["requests"] == 6
    assert by_model["stub-gpt-2"]["price_micros"] == 6 * 2000 and by_model["stub-gpt"]["price_micros"] == 0
    assert all(r["task"] == "chat" and r["day"] == usage["end"] for r in rows)
    totals = usage["totals"]
    for k in ("requests", "price_micros", "input_tokens", "output_tokens"):
        assert totals[k] == sum(r[k] for r in rows), k
    assert totals["requests"] == 9 and totals["cost_usd"] == "0.012"
    by_token = {r["token_id"]: r for r in _get(srv, f"/api/organizations/{org_id}/usage/by-token").json()["data"]}
    assert by_token[_token_id(srv, key_a)]["requests"] == 5 and by_token[_token_id(srv, key_b)]["requests"] == 4
    assert sum(r["price_micros"] for r in by_token.values()) == totals["price_micros"]
    # the wallet paid exactly what usage says
    assert _get(srv, f"/api/organizations/{org_id}").json()["balance_micros"] == 10_000_000 - totals["price_micros"]
    # date ranges
    assert _get(srv, f"/api/organizations/{org_id}/usage", start="2000-01-01", end="2000-01-31").json()["data"] == []
    r = _get(srv, f"/api/organizations/{org_id}/usage", start="yesterday")
    assert r.status_code == 400 and r.json()["error"]["param"] == "start"


def _token_id(srv, key: str) -> str:
    return httpx.get(srv.url + "/api/v1/me", headers=srv.headers(key)).json()["token_id"]


def test_pricing_is_public_and_rates_show_the_plan(srv):
    r = httpx.get(srv.url + "/api/pricing")
    assert r.status_code == 200
    models = {m["model_id"]: m for m in r.json()["models"]}
    assert models["stub-gpt"]["free"] is True and models["stub-gpt-2"]["price"] == {"per_request": 0.002}
    assert r.json()["studio"]["i2i_pro_plus"]["per_tier"] == {"1k": "0.20", "2k": "0.25", "4k": "0.30"}
    assert r.json()["studio"]["t2v_pro"]["per_resolution"]["720p"] == "0.99"
    org = create_org(srv, "free")
    rates = _get(srv, f"/api/organizations/{org['id']}/billing/rates").json()
    assert rates["plan"] == "free"
    assert {"scope": "token", "class": "all", "kind": "chat", "window": "minute", "count": 10,
            "unit": "requests"} in rates["limits"]


def test_content_filter_policies(srv, stub):
    org = create_org(srv, "pro")
    top_up(srv, org["id"], 1000)
    admin = create_key(srv, org["id"], ["admin:write"])
    base = f"{srv.url}/api/organizations/{org['id']}/content-filter-policy"
    assert httpx.get(base, headers=srv.headers(admin)).status_code == 404
    r = httpx.post(base, headers=srv.headers(admin), json={"action": "shout"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "action"
    r = httpx.post(base, headers=srv.headers(admin), json={"action": "off"})
    assert r.status_code == 403  # off is enterprise only
    assert httpx.post(base, headers=srv.headers(admin), json={"action": "block"}).status_code == 201
    assert httpx.post(base, headers=srv.headers(admin), json={"action": "flag"}).status_code == 409

    def say(text: str) -> httpx.Response:
        return httpx.post(srv.v1 + "/chat/completions", headers=srv.headers(admin),
                          json={"model": "stub-gpt", "messages": [{"role": "user", "content": text}]})
    sent = len(stub.requests)
    r = say("something forbidden")
    assert r.status_code == 400
    err = r.json()["error"]
    assert err["param"] == "messages" and err["code"] == "content_filter" and "violence" in err["message"]
    assert len(stub.requests) == sent  # never reached the upstream
    assert say("hello").status_code == 200

    assert httpx.patch(base, headers=srv.headers(admin), json={"action": "flag"}).json()["action"] == "flag"
    assert say("forbidden again").status_code == 200
    usage = _get(srv, f"/api/organizations/{org['id']}/usage", admin).json()
    assert usage["totals"]["flagged"] == 1

    assert httpx.patch(base, headers=srv.headers(admin), json={"action": "log"}).status_code == 200
    assert say("forbidden thrice").status_code == 200
    srv.on_server_loop(srv.app.state.ctx.gate.flush())
    events = httpx.get(base, headers=srv.headers(admin)).json()["recent_events"]
    assert [(e["action"], e["categories"]) for e in events] == [("log", ["violence"])]

    # generation routes beyond chat name their own field; the model is never run
    assert httpx.patch(base, headers=srv.headers(admin), json={"action": "block"}).status_code == 200
    r = httpx.post(srv.v1 + "/images/generations", headers=srv.headers(admin),
                   json={"model": "demo-image", "prompt": "a forbidden picture"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
    r = httpx.post(srv.v1 + "/audio/speech", headers=srv.headers(admin),
                   json={"model": "espeak-ng", "input": "say forbidden things", "voice": "en-us"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input"

    # only some categories
    httpx.patch(base, headers=srv.headers(admin), json={"action": "block", "categories": ["hate"]})
    assert say("forbidden but not hateful").status_code == 200
    assert httpx.delete(base, headers=srv.headers(admin)).status_code == 200
    assert httpx.delete(base, headers=srv.headers(admin)).status_code == 404
    r = httpx.patch(base, headers=srv.headers(admin), json={"action": "block"})
    assert r.status_code == 404


def test_cli_mirrors_the_operator_api(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    data = str(tmp_path / "data")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "modelyard.cli", *args, "--data-dir", data], env=env,
                              capture_output=True, text=True, timeout=120)
    made = cli("orgs", "create", "beta", "--plan", "standard", "--json")
    assert made.returncode == 0, made.stderr
    assert cli("orgs", "create", "gamma", "--plan", "platinum").returncode == 2
    up = cli("orgs", "top-up", "beta", "--amount-cents", "500", "--note", "trial", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)[0]["balance_dollars"] == "5.00"
    assert cli("orgs", "top-up", "beta", "--amount-cents", "-1").returncode == 2
    changed = cli("orgs", "update", "beta", "--plan", "pro", "--status", "banned", "--json")
    assert changed.returncode == 0, changed.stderr
    row = json.loads(changed.stdout)[0]
    assert row["plan"] == "pro" and row["status"] == "banned"
    assert cli("orgs", "update", "nope", "--plan", "pro").returncode == 1
    assert json.loads(cli("orgs", "show", "beta", "--json").stdout)[0]["balance_cents"] == 500


@pytest.mark.slow
def test_content_filter_on_the_built_in_presidio_model(tmp_path):
    """The default classifier is the local moderation/PII runtime: a block policy keeps personal data out."""
    with running(make_settings(tmp_path, auth_cache_ttl=0.0)) as s:
        org = create_org(s, "pro")
        admin = create_key(s, org["id"], ["admin:write"])
        base = f"{s.url}/api/organizations/{org['id']}/content-filter-policy"
        assert httpx.post(base, headers=s.headers(admin), json={"action": "block", "categories": ["pii"]}).status_code == 201
        r = httpx.post(s.v1 + "/images/generations", headers=s.headers(admin), timeout=120,
                       json={"model": "demo-image", "prompt": "a poster saying: mail john.smith@example.com or call "
                                                             "+1 212 555 0199"})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == "prompt" and "pii" in r.json()["error"]["message"]
