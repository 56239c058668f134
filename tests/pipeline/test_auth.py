"""Keys and scopes on SQLite and PostgreSQL: every header clients use, revocation, expiry, scope checks."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

import httpx
import openai
import pytest
from sqlalchemy import select

from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo, TokenRepo, hash_secret
from modelyard.store.tables import api_tokens

from ..conftest import make_settings, running


def _call(srv, path: str = "/v1/models", **kw) -> httpx.Response:
    return httpx.get(srv.url + path, **kw)


def _store_do(srv, fn):
    async def go():
        store = Store(srv.settings.resolved_database_url)
        try:
            return await fn(OrgRepo(store), TokenRepo(store), store)
        finally:
            await store.aclose()
    return asyncio.run(go())


@pytest.fixture
def srv(tmp_path, database_url):
    with running(make_settings(tmp_path, database_url=database_url, auth_cache_ttl=0.0)) as s:
        yield s


def test_every_key_carrier_is_accepted(srv):
    key = srv.admin_key
    assert _call(srv, headers={"Authorization": f"Bearer {key}"}).status_code == 200
    assert _call(srv, headers={"x-api-key": key}).status_code == 200
    assert _call(srv, headers={"x-goog-api-key": key}).status_code == 200
    assert _call(srv, params={"key": key}).status_code == 200
    assert _call(srv, headers={"Authorization": f"Key {key}"}).status_code == 200


def test_missing_and_wrong_keys_are_401_in_openai_envelope(srv):
    r = _call(srv)
    assert r.status_code == 401
    assert r.json()["error"]["type"] == "authentication_error"
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = _call(srv, headers={"Authorization": "Bearer myd_not-a-real-key"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=srv.v1, api_key="nope", max_retries=0).models.list()


def test_secrets_are_stored_only_as_hashes(srv):
    async def fn(orgs, tokens, store):
        org = await orgs.create("acme")
        token, secret = await tokens.create(org.id, "ci", ["user:read"])
        async with store.engine.connect() as conn:
            rows = (await conn.execute(select(api_tokens))).mappings().all()
        return token, secret, rows
    token, secret, rows = _store_do(srv, fn)
    assert secret.startswith("myd_") and len(secret) >= 4 + 43  # 32 random bytes, urlsafe base64
    flat = repr([dict(r) for r in rows])
    assert secret not in flat and secret[4:] not in flat
    assert hash_secret(secret) in flat
    assert token.display.startswith(secret[:8]) and token.display.endswith(secret[-4:])


def test_scopes_are_enforced(srv):
    async def fn(orgs, tokens, _store):
        org = await orgs.create("readers")
        _, reader = await tokens.create(org.id, "reader", ["user:read"])
        _, worker = await tokens.create(org.id, "worker", ["worker"])
        return reader, worker
    reader, worker = _store_do(srv, fn)
    assert _call(srv, headers={"Authorization": f"Bearer {reader}"}).status_code == 200
    r = httpx.post(srv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {reader}"},
                   json={"model": "smollm2-135m-instruct", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 403
    assert r.json()["error"]["type"] == "permission_error" and "user:write" in r.json()["error"]["message"]
    # a worker token can do nothing but worker things
    assert _call(srv, headers={"Authorization": f"Bearer {worker}"}).status_code == 403


def test_revoked_and_expired_keys_stop_working(srv):
    async def fn(orgs, tokens, _store):
        org = await orgs.create("temps")
        t1, s1 = await tokens.create(org.id, "soon-revoked", ["user:read"])
        _, s2 = await tokens.create(org.id, "expired", ["user:read"],
                                    expires_at=datetime.now(timezone.utc) - timedelta(seconds=1))
        return t1, s1, s2
    t1, s1, s2 = _store_do(srv, fn)
    assert _call(srv, headers={"Authorization": f"Bearer {s1}"}).status_code == 200
    _store_do(srv, lambda o, t, s: t.revoke(t1.id))
    r = _call(srv, headers={"Authorization": f"Bearer {s1}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    r = _call(srv, headers={"Authorization": f"Bearer {s2}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "expired_api_key"


def test_usage_counters_are_flushed_in_batches(srv):
    for _ in range(3):
        assert _call(srv, headers=srv.headers()).status_code == 200
    # nothing is written per request; the flush writes the counts
    srv.on_server_loop(srv.app.state.ctx.auth.flush_usage())

    async def fn(_o, tokens, _s):
        return await tokens.by_secret(srv.admin_key)
    token = _store_do(srv, fn)
    assert token.last_used_at is not None



def test_rotating_the_configured_admin_key_retires_the_old_one(tmp_path, database_url):
    old, new = "myd_old-admin-key-0123456789ab", "myd_new-admin-key-0123456789ab"
    with running(make_settings(tmp_path, database_url=database_url).model_copy(update={"admin_key": old})) as srv:
        assert _call(srv, headers={"Authorization": f"Bearer {old}"}).status_code == 200
    with running(make_settings(tmp_path, database_url=database_url).model_copy(update={"admin_key": new})) as srv:
        assert _call(srv, headers={"Authorization": f"Bearer {new}"}).status_code == 200
        assert _call(srv, headers={"Authorization": f"Bearer {old}"}).status_code == 401
