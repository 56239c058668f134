"""Helpers for tests that manage accounts through the operator API: orgs, top-ups, tokens."""

from __future__ import annotations

import secrets
from typing import Any

import httpx


def create_org(srv: Any, plan: str = "free", name: str | None = None) -> dict[str, Any]:
    r = httpx.post(srv.url + "/api/organizations", headers=srv.headers(),
                   json={"name": name or f"org-{secrets.token_hex(4)}", "plan": plan})
    assert r.status_code == 201, r.text
    return r.json()


def top_up(srv: Any, org_id: str, cents: int, note: str | None = None) -> dict[str, Any]:
    r = httpx.post(f"{srv.url}/api/organizations/{org_id}/wallet/top-ups", headers=srv.headers(),
                   json={"amount_cents": cents, "note": note})
    assert r.status_code == 201, r.text
    return r.json()


def create_key(srv: Any, org_id: str, scopes: list[str] | None = None, by: str | None = None) -> str:
    r = httpx.post(f"{srv.url}/api/organizations/{org_id}/tokens", headers=srv.headers(by),
                   json={"name": "test", "scopes": scopes or ["user:read", "user:write"]})
    assert r.status_code == 201, r.text
    return r.json()["secret"]


def org_with_key(srv: Any, plan: str = "free", cents: int = 0, scopes: list[str] | None = None) -> tuple[str, str]:
    org = create_org(srv, plan)
    if cents:
        top_up(srv, org["id"], cents)
    return org["id"], create_key(srv, org["id"], scopes)


def wallet(srv: Any, org_id: str) -> dict[str, Any]:
    r = httpx.get(f"{srv.url}/api/organizations/{org_id}/wallet", headers=srv.headers())
    assert r.status_code == 200, r.text
    return r.json()


def chat(srv: Any, key: str, model: str = "stub-gpt", **extra: Any) -> httpx.Response:
    return httpx.post(srv.v1 + "/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=30,
                      json={"model": model, "messages": [{"role": "user", "content": "hi"}], **extra})
