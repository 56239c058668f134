"""Sessions and CSRF at the HTTP level: setup, sign-in, cookies, CSRF, sign-out, expiry, orgs kept apart."""

from __future__ import annotations

import time
from typing import Any, Iterator

import httpx
import pytest

from ..conftest import quiet_server, server_fixture
from ..support.accounts import create_org
from ..support.clock import Clock
from .helpers import PASSWORD, Browser, delete, get, invite, new_person, post

OWNER = "owner@example.com"


def _build(tmp: Any, url: str | None, _stub: str) -> Any:
    return quiet_server(tmp, url, [], login_attempts_per_account=5, login_attempts_per_address=10_000)


srv = server_fixture("srv", _build)


@pytest.fixture(scope="module")
def owner(srv: Any) -> Iterator[Browser]:
    """The first user, made by the first visit's setup."""
    b = Browser(srv)
    assert b.http.get("/api/auth/setup").json() == {"needed": True}
    r = b.http.post("/api/auth/setup", json={"email": OWNER, "password": PASSWORD, "username": "operator"})
    assert r.status_code == 201, r.text
    b.body, b.csrf = r.json(), r.json()["csrf_token"]
    yield b
    b.close()


def _default_org(owner: Browser) -> str:
    return owner.body["organization"]["id"]


def _cookie_header(r: httpx.Response) -> str:
    return next(v for k, v in r.headers.multi_items() if k.lower() == "set-cookie")


def test_setup_happens_once_then_409(srv: Any, owner: Browser) -> None:
    assert owner.body["organization"]["name"] == "default" and owner.body["organization"]["role"] == "owner"
    again = post(srv.url + "/api/auth/setup", json={"email": "x@example.com", "password": PASSWORD})
    assert again.status_code == 409
    assert get(srv.url + "/api/auth/setup").json() == {"needed": False}


def test_login_sets_an_httponly_samesite_lax_cookie(srv: Any, owner: Browser) -> None:
    b = Browser(srv)
    r = b.login(OWNER)
    assert r.status_code == 200, r.text
    cookie = _cookie_header(r).lower()
    assert cookie.startswith("modelyard_session=") and "httponly" in cookie and "samesite=lax" in cookie
    assert "path=/" in cookie and "secure" not in cookie  # plain http here; https or the setting adds Secure
    body = r.json()
    assert body["user"]["email"] == OWNER and body["csrf_token"]
    assert [o["name"] for o in body["organizations"]] == ["default"]
    assert "password" not in r.text and "argon2" not in r.text


def test_wrong_password_and_unknown_email_get_identical_401s(srv: Any, owner: Browser) -> None:
    wrong = post(srv.url + "/api/auth/login", json={"email": OWNER, "password": "not the password"})
    unknown = post(srv.url + "/api/auth/login", json={"email": "nobody@example.com", "password": "whatever1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.content == unknown.content
    assert "set-cookie" not in wrong.headers


def test_login_attempts_are_rate_limited_per_account(srv: Any, owner: Browser) -> None:
    acc = srv.app.state.ctx.accounts
    old, acc.sessions.clock = acc.sessions.clock, Clock(now=time.time())  # one window for the whole test
    try:
        _, email = new_person(srv, owner, _default_org(owner))
        for _ in range(5):
            assert post(srv.url + "/api/auth/login", json={"email": email, "password": "wrong-pass"}
                              ).status_code == 401
        refused = post(srv.url + "/api/auth/login", json={"email": email, "password": PASSWORD})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert Browser(srv).login(OWNER).status_code == 200  # another account is not held back
        acc.sessions.clock.advance(61)
        assert Browser(srv).login(email).status_code == 200
    finally:
        acc.sessions.clock = old


def test_login_attempts_are_rate_limited_per_address(srv: Any, owner: Browser) -> None:
    from modelyard.accounts.service import LoginGuard

    acc = srv.app.state.ctx.accounts
    old_guard, old_clock = acc.guard, acc.sessions.clock
    clock = Clock(now=time.time())
    acc.sessions.clock = clock
    acc.guard = LoginGuard(100, 3, None, "test:", clock=clock)
    try:
        codes = [post(srv.url + "/api/auth/login", json={"email": f"a{i}@example.com", "password": "x" * 9}
                            ).status_code for i in range(4)]
        assert codes == [401, 401, 401, 429]
    finally:
        acc.guard, acc.sessions.clock = old_guard, old_clock


def test_a_cookie_post_without_the_csrf_token_is_refused(srv: Any, owner: Browser) -> None:
    path = f"/api/organizations/{_default_org(owner)}/invites"
    bare = owner.http.post(path, json={"role": "member"})
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_token_invalid"
    forged = owner.http.post(path, json={"role": "member"}, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403
    assert owner.post(path, json={"role": "member"}).status_code == 201
    # a form post carries it as a field; without it, refused
    form = owner.http.post("/api/auth/logout", data={"other": "1"})
    assert form.status_code == 403
    assert owner.http.get("/api/auth/session").status_code == 200  # reads need no token


def test_a_form_post_with_the_csrf_field_is_accepted(srv: Any, owner: Browser) -> None:
    b = Browser(srv)
    assert b.login(OWNER).status_code == 200
    r = b.http.post("/api/auth/logout", data={"csrf_token": b.csrf})
    assert r.status_code == 200, r.text


def test_an_api_key_post_needs_no_csrf_token(srv: Any, owner: Browser) -> None:
    r = post(f"{srv.url}/api/organizations/{_default_org(owner)}/invites", headers=srv.headers(),
                   json={"role": "member"})
    assert r.status_code == 201, r.text


def test_logout_invalidates_the_cookie(srv: Any, owner: Browser) -> None:
    b = Browser(srv)
    b.login(OWNER)
    cookie = b.http.cookies.get("modelyard_session")
    assert b.post("/api/auth/logout").status_code == 200
    replay = get(srv.url + "/api/v1/me", cookies={"modelyard_session": cookie})
    assert replay.status_code == 401


def test_logout_all_invalidates_the_other_sessions(srv: Any, owner: Browser) -> None:
    person, email = new_person(srv, owner, _default_org(owner))
    laptop, phone = Browser(srv), Browser(srv)
    assert laptop.login(email).status_code == phone.login(email).status_code == 200
    assert phone.http.get("/api/v1/me").status_code == 200
    r = laptop.post("/api/auth/logout-all")
    assert r.status_code == 200 and r.json()["signed_out"] == 3
    for b in (person, laptop, phone):
        assert b.http.get("/api/auth/session").status_code == 401
    assert owner.http.get("/api/auth/session").status_code == 200  # someone else's sessions are untouched


def test_sessions_expire_when_idle_and_when_old(srv: Any, owner: Browser) -> None:
    acc = srv.app.state.ctx.accounts
    clock = Clock(now=time.time())
    old, acc.sessions.clock = acc.sessions.clock, clock
    try:
        b = Browser(srv)
        assert b.login(OWNER).status_code == 200
        clock.advance(srv.settings.session_idle_seconds - 60)
        assert b.http.get("/api/auth/session").status_code == 200  # in use: the idle clock restarts
        clock.advance(srv.settings.session_idle_seconds - 60)
        assert b.http.get("/api/auth/session").status_code == 200
        clock.advance(srv.settings.session_idle_seconds + 1)
        r = b.http.get("/api/v1/me")
        assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
        kept = Browser(srv)
        assert kept.login(OWNER).status_code == 200
        started = clock.now
        while clock.now < started + srv.settings.session_max_seconds + 2 * 86_400:  # used daily, still ends
            clock.advance(86_400)
            if kept.http.get("/api/auth/session").status_code != 200:
                break
        assert kept.http.get("/api/auth/session").status_code == 401
        assert clock.now - kept.body["session"]["created_at"] >= srv.settings.session_max_seconds
    finally:
        acc.sessions.clock = old


def test_an_invite_link_works_once(srv: Any, owner: Browser) -> None:
    link = invite(owner, _default_org(owner), "admin")
    assert link["url"].endswith("/invite/" + link["token"]) and link["expires_at"] > time.time()
    first = post(srv.url + "/api/auth/accept-invite", json={
        "token": link["token"], "email": "inv1@example.com", "password": PASSWORD, "username": "inv1"})
    assert first.status_code == 201, first.text
    assert first.json()["membership"]["role"] == "admin"
    second = post(srv.url + "/api/auth/accept-invite", json={
        "token": link["token"], "email": "inv2@example.com", "password": PASSWORD, "username": "inv2"})
    assert second.status_code == 404
    assert post(srv.url + "/api/auth/login", json={"email": "inv2@example.com", "password": PASSWORD}
                      ).status_code == 401


def test_a_cookie_from_one_org_never_reads_another_orgs_pages(srv: Any, owner: Browser) -> None:
    org_a, org_b = create_org(srv)["id"], create_org(srv)["id"]
    owner_b, _ = new_person(srv, owner, org_b, "owner")
    assert owner_b.http.get(f"/api/organizations/{org_b}/members").status_code == 200
    for path in (f"/api/organizations/{org_a}", f"/api/organizations/{org_a}/members",
                 f"/api/organizations/{org_a}/wallet", f"/api/organizations/{org_a}/tokens"):
        assert owner_b.http.get(path).status_code == 404, path
    assert owner_b.post(f"/api/organizations/{org_a}/invites", json={"role": "owner"}).status_code == 404
    assert owner_b.http.get("/api/v1/me", headers={"X-Modelyard-Org": org_a}).status_code == 404
    assert owner_b.http.get("/api/organizations").json()["data"][0]["id"] == org_b  # only its own
    member_b, _ = new_person(srv, owner, org_b, "member")
    assert member_b.http.get(f"/api/organizations/{org_b}/members").status_code == 403  # a member is no admin


def test_me_answers_a_cookie_as_it_answers_a_key(srv: Any, owner: Browser) -> None:
    person, email = new_person(srv, owner, _default_org(owner))
    r = person.http.get("/api/v1/me")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["email"] == email and body["organization"] == "default" and body["role"] == "member"
    assert body["token_id"] == "user:" + body["user_id"]
    patched = person.http.patch("/api/v1/me/profile", json={"bio": "hi", "location": "Lyon"},
                                headers={"X-CSRF-Token": person.csrf})
    assert patched.status_code == 200 and patched.json()["location"] == "Lyon"
    assert person.http.get("/api/v1/me").json()["bio"] == "hi"


def test_an_admin_key_signs_in_to_the_console(srv: Any, owner: Browser) -> None:
    b = Browser(srv)
    r = b.http.post("/api/auth/login-key", json={"key": srv.admin_key})
    assert r.status_code == 200, r.text
    assert r.json()["user"] is None and "admin:write" in r.json()["scopes"]
    b.csrf = r.json()["csrf_token"]
    assert b.http.get("/api/organizations").status_code == 200
    assert b.post(f"/api/organizations/{_default_org(owner)}/invites", json={"role": "member"}).status_code == 201
    user_key = post(f"{srv.url}/api/organizations/{_default_org(owner)}/tokens", headers=srv.headers(),
                          json={"name": "u", "scopes": ["user:write"]}).json()["secret"]
    assert post(srv.url + "/api/auth/login-key", json={"key": user_key}).status_code == 403


def test_passwords_are_stored_as_argon2id_hashes(srv: Any, owner: Browser) -> None:
    user = srv.on_server_loop(srv.app.state.ctx.accounts.repo.user_by_email(OWNER))
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash


def test_a_key_session_ends_when_its_key_is_revoked(srv: Any, owner: Browser) -> None:
    org = _default_org(owner)
    made = post(f"{srv.url}/api/organizations/{org}/tokens", headers=srv.headers(),
                      json={"name": "console", "scopes": ["admin:read"]}).json()
    b = Browser(srv)
    assert b.http.post("/api/auth/login-key", json={"key": made["secret"]}).status_code == 200
    assert b.http.get(f"/api/organizations/{org}/members").status_code == 200
    assert delete(f"{srv.url}/api/organizations/{org}/tokens/{made['token']['id']}", headers=srv.headers()
                        ).status_code == 200
    assert b.http.get(f"/api/organizations/{org}/members").status_code == 401


def test_a_signed_in_user_joins_another_org_and_roles_apply_at_once(srv: Any, owner: Browser) -> None:
    org_b = create_org(srv)["id"]
    person, _ = new_person(srv, owner, _default_org(owner))
    token = invite(owner, org_b, "member")["token"]
    bare = person.http.post("/api/auth/accept-invite", json={"token": token})
    assert bare.status_code == 403  # signed in: the CSRF token is needed
    joined = person.post("/api/auth/accept-invite", json={"token": token})
    assert joined.status_code == 201, joined.text
    assert {o["id"] for o in person.http.get("/api/auth/session").json()["organizations"]} >= {org_b}
    assert person.http.get("/api/v1/me", headers={"X-Modelyard-Org": org_b}).json()["organization_id"] == org_b
    assert person.post("/api/auth/session/organization", json={"organization": org_b}).status_code == 200
    assert person.http.get(f"/api/organizations/{org_b}/members").status_code == 403  # a member
    user_id = person.http.get("/api/v1/me").json()["user_id"]
    promoted = owner.http.patch(f"/api/organizations/{org_b}/members/{user_id}", json={"role": "admin"},
                                headers={"X-CSRF-Token": owner.csrf})
    assert promoted.status_code == 200, promoted.text
    assert person.http.get(f"/api/organizations/{org_b}/members").status_code == 200
    removed = owner.http.delete(f"/api/organizations/{org_b}/members/{user_id}", headers={"X-CSRF-Token": owner.csrf})
    assert removed.status_code == 200
    assert person.http.get(f"/api/organizations/{org_b}/members").status_code == 403


def test_odd_input_is_a_400_or_401_never_a_500(srv: Any, owner: Browser) -> None:
    assert post(srv.url + "/api/auth/login", json={"email": "a\x00@b.com", "password": "x" * 9}).status_code == 401
    assert post(srv.url + "/api/auth/setup", json={"email": "a\x00@b.com", "password": "x" * 9}).status_code == 409
    person, _ = new_person(srv, owner, _default_org(owner))
    assert person.http.patch("/api/v1/me/profile", json={"bio": "a\x00b"},
                             headers={"X-CSRF-Token": person.csrf}).status_code == 400
    assert person.http.patch("/api/v1/me/profile", json={"username": None},
                             headers={"X-CSRF-Token": person.csrf}).status_code == 200
    assert person.post("/api/auth/session/organization", json={"organization": "x\x00"}).status_code == 400
    assert person.post("/api/auth/accept-invite", json={"token": "\x00"}).status_code == 404


def test_sign_in_posted_from_another_site_is_refused(srv: Any, owner: Browser) -> None:
    host = srv.url.split("//", 1)[1]
    body = {"email": OWNER, "password": PASSWORD}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example"}, {"Origin": "null"}):
        r = post(srv.url + "/api/auth/login", json=body, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "cross_site_request", (headers, r.text)
        r = post(srv.url + "/api/auth/accept-invite", json={"token": "x", "email": "a@example.com",
                                                            "password": PASSWORD}, headers=headers)
        assert r.status_code == 403, headers
    # the console's own page posts same-origin; programs send no such header
    for headers in ({"Sec-Fetch-Site": "same-origin", "Origin": srv.url}, {"Origin": f"http://{host}"}, {}):
        assert post(srv.url + "/api/auth/login", json=body, headers=headers).status_code == 200, headers


def test_two_first_visits_at_once_make_one_owner(tmp_path: Any, database_url: str) -> None:
    import concurrent.futures

    with quiet_server(tmp_path, None if database_url.startswith("sqlite") else database_url, []) as fresh:
        def attempt(i: int) -> int:
            return post(fresh.url + "/api/auth/setup", json={"email": f"first{i}@example.com",
                                                             "password": PASSWORD}).status_code
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            codes = sorted(pool.map(attempt, range(6)))
        assert codes == [201, 409, 409, 409, 409, 409]
        members = get(f"{fresh.url}/api/organizations/default/members", headers=fresh.headers()).json()
        assert [m["role"] for m in members["data"]] == ["owner"]
