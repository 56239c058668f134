"""What the console's tokens, settings and admin pages rely on, at the HTTP level on SQLite and PostgreSQL: a signed-in
member makes and revokes their own tokens with the scopes they hold (never more, never in another org, never
without the CSRF token), their tokens leave with them, member changes are audited as the person who made them, the
operator reads the plans in force, and an org shortens its request-log retention."""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from ..conftest import quiet_server, server_fixture
from ..support.accounts import create_key, create_org
from .helpers import PASSWORD, Browser, get, invite, new_person, post

OWNER = "owner@example.com"


def _build(tmp: Any, url: str | None, _stub: str) -> Any:
    return quiet_server(tmp, url, [], auth_cache_ttl=0.0)


srv = server_fixture("srv", _build)


@pytest.fixture(scope="module")
def owner(srv: Any) -> Iterator[Browser]:
    b = Browser(srv)
    r = b.http.post("/api/auth/setup", json={"email": OWNER, "password": PASSWORD, "username": "operator"})
    assert r.status_code == 201, r.text
    b.body, b.csrf = r.json(), r.json()["csrf_token"]
    yield b
    b.close()


def _tokens(org_id: str) -> str:
    return f"/api/organizations/{org_id}/tokens"


def test_a_member_makes_and_revokes_their_own_tokens_with_the_scopes_they_hold(srv: Any, owner: Browser) -> None:
    org = create_org(srv)["id"]
    member, _ = new_person(srv, owner, org, "member")
    admin_made = create_key(srv, org, ["user:write"])  # made with the operator's key: not the member's
    made = member.post(_tokens(org), json={"name": "mine", "scopes": ["user:read", "user:write"]})
    assert made.status_code == 201, made.text
    token, secret = made.json()["token"], made.json()["secret"]
    assert token["created_by"] == "user:" + member.http.get("/api/v1/me").json()["user_id"]
    assert get(srv.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    for scopes in (["admin:read"], ["admin:write"], ["user:write", "admin:read"], ["worker"]):
        refused = member.post(_tokens(org), json={"name": "more", "scopes": scopes})
        assert refused.status_code == 403 and refused.json()["error"]["param"] == "scopes", scopes
    listed = member.http.get(_tokens(org)).json()["data"]
    assert [t["id"] for t in listed] == [token["id"]]  # only the ones they made
    everyone = get(srv.url + _tokens(org), headers=srv.headers()).json()["data"]
    others = [t["id"] for t in everyone if t["id"] != token["id"]]
    assert len(everyone) == 2 and secret not in str(everyone) and admin_made not in str(everyone)
    other_revoke = member.http.delete(f"{_tokens(org)}/{others[0]}", headers={"X-CSRF-Token": member.csrf or ""})
    assert other_revoke.status_code == 404  # someone else's token is not theirs to see
    bare = member.http.delete(f"{_tokens(org)}/{token['id']}")
    assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_token_invalid"
    form = member.http.post(_tokens(org), data={"name": "form", "scopes": "user:read"})
    assert form.status_code == 403  # a form post without the CSRF field is refused before anything else
    gone = member.http.delete(f"{_tokens(org)}/{token['id']}", headers={"X-CSRF-Token": member.csrf or ""})
    assert gone.status_code == 200 and gone.json()["token"]["status"] == "revoked"
    assert get(srv.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401


def test_another_orgs_tokens_are_404_and_keys_still_need_the_admin_scope(srv: Any, owner: Browser) -> None:
    org, other = create_org(srv)["id"], create_org(srv)["id"]
    member, _ = new_person(srv, owner, org, "member")
    assert member.http.get(_tokens(other)).status_code == 404
    assert member.post(_tokens(other), json={"scopes": ["user:read"]}).status_code == 404
    # a member of the operator's own org is no operator: their org only, their scopes only
    default = owner.body["organization"]["id"]
    insider, _ = new_person(srv, owner, default, "member")
    assert insider.post(_tokens(org), json={"scopes": ["user:read"]}).status_code == 404
    assert insider.http.get(_tokens(org)).status_code == 404
    assert insider.post(_tokens(default), json={"scopes": ["admin:write"]}).status_code == 403
    assert insider.http.get("/api/plans").status_code == 403
    # programs: a user key cannot mint keys (a leaked key must not outlive its revocation through children)
    user_key = create_key(srv, org, ["user:write"])
    r = post(srv.url + _tokens(org), headers=srv.headers(user_key), json={"scopes": ["user:read"]})
    assert r.status_code == 403
    assert get(srv.url + _tokens(org), headers=srv.headers(user_key)).status_code == 403


def test_a_removed_member_loses_their_tokens_and_member_changes_are_audited(srv: Any, owner: Browser) -> None:
    org = create_org(srv)["id"]
    org_owner, owner_email = new_person(srv, owner, org, "owner")
    member, _ = new_person(srv, owner, org, "member")
    secret = member.post(_tokens(org), json={"name": "laptop", "scopes": ["user:write"]}).json()["secret"]
    user_id = member.http.get("/api/v1/me").json()["user_id"]
    link = invite(org_owner, org, "admin", email="later@example.com")
    promoted = org_owner.http.patch(f"/api/organizations/{org}/members/{user_id}", json={"role": "admin"},
                                    headers={"X-CSRF-Token": org_owner.csrf or ""})
    assert promoted.status_code == 200
    removed = org_owner.http.delete(f"/api/organizations/{org}/members/{user_id}",
                                    headers={"X-CSRF-Token": org_owner.csrf or ""})
    assert removed.status_code == 200 and len(removed.json()["tokens_revoked"]) == 1
    assert get(srv.url + "/api/v1/me", headers={"Authorization": f"Bearer {secret}"}).status_code == 401

    entries = get(srv.url + "/api/audit-log", headers=srv.headers(), params={"organization": org}).json()["data"]
    assert entries and {e["org_id"] for e in entries} == {org}  # the operator's view of one org
    by_owner = "user:" + org_owner.http.get("/api/v1/me").json()["user_id"]
    mine = {e["action"]: e for e in entries if e["org_id"] == org and e["actor_id"] == by_owner}
    assert set(mine) == {"invite.create", "member.update", "member.remove"}
    assert all(e["actor_kind"] == "user" and e["actor_email"] == owner_email for e in mine.values())
    assert mine["invite.create"]["target"] == link["id"] and mine["invite.create"]["after"]["role"] == "admin"
    assert link["token"] not in str(entries)  # the link's secret is never kept
    assert (mine["member.update"]["before"], mine["member.update"]["after"]) == ({"role": "member"}, {"role": "admin"})
    assert mine["member.remove"]["after"]["tokens_revoked"] == removed.json()["tokens_revoked"]
    # an org's own view of its audit log does not name the people (it has the members list for that)
    own = org_owner.http.get(f"/api/organizations/{org}/audit-log").json()["data"]
    assert own and all("actor_email" not in e for e in own)


def test_the_operator_reads_the_plans_in_force(srv: Any, owner: Browser) -> None:
    create_org(srv, "pro")
    r = owner.http.get("/api/plans")
    assert r.status_code == 200, r.text
    plans = {p["name"]: p for p in r.json()["data"]}
    assert {"free", "pro", "enterprise", "unlimited"} <= set(plans)
    assert plans["pro"]["organizations"] >= 1 and plans["unlimited"]["unlimited"]
    chat = next(rule for rule in plans["free"]["limits"] if rule["kind"] == "chat")
    assert chat["count"] == 10 and chat["describe"] == "10 requests per minute per API key"
    assert r.json()["request_log_retention_days"] == srv.settings.request_log_retention_days
    admin = create_key(srv, create_org(srv)["id"], ["admin:write"])
    assert get(srv.url + "/api/plans", headers=srv.headers(admin)).status_code == 403


def test_an_org_shortens_its_request_log_retention_and_changes_keep_the_other_settings(srv: Any,
                                                                                      owner: Browser) -> None:
    org = create_org(srv)["id"]
    org_owner, _ = new_person(srv, owner, org, "owner")
    path = f"/api/organizations/{org}"

    def patch(body: dict[str, Any]) -> Any:
        return org_owner.http.patch(path, json=body, headers={"X-CSRF-Token": org_owner.csrf or ""})

    assert org_owner.http.get(path).json()["request_logging"] == {"bodies": False, "redact": False,
                                                                  "retention_days": None}
    assert patch({"request_logging": {"bodies": True, "redact": True}}).status_code == 200
    r = patch({"request_logging": {"retention_days": 7}})
    assert r.status_code == 200, r.text
    assert r.json()["request_logging"] == {"bodies": True, "redact": True, "retention_days": 7}
    most = srv.settings.request_log_retention_days
    assert r.json()["request_log_retention_days"] == most
    too_long = patch({"request_logging": {"retention_days": most + 1}})
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "request_logging.retention_days"
    assert patch({"request_logging": {"retention_days": 0}}).status_code == 400
    back = patch({"request_logging": {"retention_days": None, "bodies": False}})
    assert back.json()["request_logging"] == {"bodies": False, "redact": True, "retention_days": None}
    assert srv.on_server_loop(_org_days(srv)).get(org) is None


async def _org_days(srv: Any) -> dict[str, int]:
    from modelyard.store.repo import OrgRepo
    return await OrgRepo(srv.app.state.ctx.store).retention_days()


def test_a_cookie_without_the_csrf_token_changes_no_setting(srv: Any, owner: Browser) -> None:
    org = owner.body["organization"]["id"]
    for method, path, body in (("PATCH", "/api/v1/me/profile", {"bio": "x"}),
                               ("PATCH", f"/api/organizations/{org}", {"request_logging": {"bodies": True}}),
                               ("POST", f"/api/organizations/{org}/content-filter-policy", {"action": "flag"}),
                               ("POST", "/api/auth/logout-all", None)):
        r = owner.http.request(method, path, json=body)
        assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_token_invalid", path
    assert owner.http.get(f"/api/organizations/{org}").json()["request_logging"]["bodies"] is False
    assert owner.http.get("/api/v1/me/profile").json()["bio"] is None


def test_odd_filters_of_the_audit_log_are_never_a_500(srv: Any, owner: Browser) -> None:
    for params in ({"organization": "a\x00b"}, {"action": "a\x00b"}, {"organization": "x" * 5000}):
        r = owner.http.get("/api/audit-log", params=params)
        assert r.status_code in (200, 400), (params, r.status_code, r.text)
