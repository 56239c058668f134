"""Browsers for the account tests: an httpx client keeps each person's cookie, and sends their CSRF token."""

from __future__ import annotations

import functools
import secrets
from typing import Any

import httpx

PASSWORD = "correct horse battery staple"


class Browser:
    """One person's browser: a cookie jar and the CSRF token the last sign-in returned."""

    def __init__(self, srv: Any) -> None:
        self.srv = srv
        self.http = httpx.Client(base_url=srv.url, timeout=60)
        self.csrf: str | None = None
        self.body: dict[str, Any] = {}

    def login(self, email: str, password: str = PASSWORD) -> httpx.Response:
        r = self.http.post("/api/auth/login", json={"email": email, "password": password})
        if r.status_code == 200:
            self.body = r.json()
            self.csrf = self.body["csrf_token"]
        return r

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.http.post(path, headers={"X-CSRF-Token": self.csrf or ""}, **kw)

    def close(self) -> None:
        self.http.close()


def invite(owner: Browser, org_id: str, role: str = "member", email: str | None = None) -> dict[str, Any]:
    r = owner.post(f"/api/organizations/{org_id}/invites", json={"role": role, "email": email})
    assert r.status_code == 201, r.text
    return r.json()


def new_person(srv: Any, owner: Browser, org_id: str, role: str = "member") -> tuple[Browser, str]:
    """A new user joined to `org_id` through an invite link, signed in; returns their browser and email."""
    email = f"p-{secrets.token_hex(4)}@example.com"
    token = invite(owner, org_id, role)["token"]
    b = Browser(srv)
    r = b.http.post("/api/auth/accept-invite", json={"token": token, "email": email, "password": PASSWORD,
                                                     "username": email.split("@")[0]})
    assert r.status_code == 201, r.text
    b.csrf = r.json()["csrf_token"]
    return b, email


# argon2 takes real CPU by design; on a busy machine a sign-in can take longer than httpx's 5 s default
post = functools.partial(httpx.post, timeout=60)
get = functools.partial(httpx.get, timeout=60)
delete = functools.partial(httpx.delete, timeout=60)
