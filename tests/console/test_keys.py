"""Tokens, settings and the operator's admin page in Chromium: a token made on /tokens works with the openai SDK
until it is revoked there; a member cannot grant what they do not hold; an owner's invite from /settings brings in
a person who sees only their org; profile edits persist; the operator tops up an org and reads it in the audit log."""

from __future__ import annotations

import re
from typing import Any

import httpx
import openai
import pytest

from ..support.accounts import create_org
from .conftest import OWNER_EMAIL, PASSWORD, Person, shot, unique

HI = [{"role": "user", "content": "hi"}]


def _join(person: Person, url: str, email: str, username: str) -> None:
    """Open an invite link and create the account it asks for; lands on the overview."""
    page = person.page
    page.goto(url)
    page.get_by_label("Email").fill(email)
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and join").click()
    page.wait_for_url(person.base + "/")


def _invite(console: Any, org_id: str, role: str) -> str:
    r = httpx.post(f"{console.url}/api/organizations/{org_id}/invites", headers=console.headers(),
                   json={"role": role}, timeout=60)
    assert r.status_code == 201, r.text
    return r.json()["url"]


def _status(person: Person, method: str, path: str, body: Any = None) -> int:
    """The HTTP status the API answers this person's browser (0: accepted)."""
    return person.page.evaluate(
        "async ([m, p, b]) => { try { await My.api(p, {method: m, body: b === null ? undefined : b}); return 0; }"
        " catch (e) { return e.status; } }", [method, path, body])


def test_a_token_made_on_the_page_works_with_the_sdk_until_revoked_there(person: Person, console: Any) -> None:
    page = person.sign_in(then="/tokens")
    name = unique("sdk")
    page.get_by_label("Name").fill(name)
    assert page.get_by_role("checkbox", name=re.compile("^User Access")).is_checked()  # the usual choice, preset
    page.get_by_role("button", name="Create token").click()
    secret_box = page.get_by_test_id("token-secret")
    secret_box.wait_for()
    secret = secret_box.inner_text().strip()
    assert secret and "only time the secret is shown" in page.get_by_role("region", name="Your new token").inner_text()
    row = page.locator("tbody tr", has_text=name)
    row.wait_for()
    assert "user:read" in row.inner_text() and "active" in row.inner_text()
    shot(page, "tokens")

    client = openai.OpenAI(base_url=console.url + "/v1", api_key=secret, max_retries=0)
    reply = client.chat.completions.create(model="stub-gpt", messages=HI)
    assert reply.choices[0].message.content
    org = person.api("GET", "/api/auth/session")["organization"]["id"]
    made = next(t for t in person.api("GET", f"/api/organizations/{org}/tokens")["data"] if t["name"] == name)
    assert made["scopes"] == ["user:read", "user:write"] and secret not in str(made)

    page.get_by_role("button", name="I have stored it, hide it").click()
    assert not secret_box.is_visible()  # shown once: gone from the page, and no API gives it back
    row.get_by_role("button", name="Revoke " + name).click()
    dialog = page.get_by_role("dialog")
    assert name in dialog.inner_text() and "401" in dialog.inner_text()
    dialog.get_by_role("button", name="Revoke token").click()
    row.locator(".badge.revoked").wait_for()
    assert not dialog.is_visible()
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="stub-gpt", messages=HI)
    assert refused.value.status_code == 401
    assert not person.errors, person.errors


def test_a_member_grants_only_the_scopes_they_hold(person: Person, console: Any) -> None:
    org = create_org(console)
    _join(person, _invite(console, org["id"], "member"), f"{unique('m')}@example.com", unique("member"))
    page = person.page
    assert "Tokens" in page.locator("nav#nav a").all_inner_texts()
    page.goto("/tokens")
    user = page.get_by_role("checkbox", name=re.compile("^User Access"))
    admin = page.get_by_role("checkbox", name=re.compile("^Admin"))
    worker = page.get_by_role("checkbox", name=re.compile("^Worker"))
    user.wait_for()
    assert user.is_enabled() and admin.is_disabled() and worker.is_disabled()
    why = page.locator("#why-admin").inner_text()
    assert "member" in why and "admin:read, admin:write" in why
    page.get_by_label("Name").fill("my-laptop")
    page.get_by_label("Expires after (days)").fill("30")
    page.get_by_role("button", name="Create token").click()
    page.get_by_test_id("token-secret").wait_for()
    page.locator("tbody tr", has_text="my-laptop").locator(".badge.active").wait_for()
    shot(page, "tokens-member")
    # forced past the page, the API refuses too
    path = f"/api/organizations/{org['id']}/tokens"
    assert _status(person, "POST", path, {"name": "sneaky", "scopes": ["admin:write"]}) == 403
    assert _status(person, "POST", path, {"name": "sneaky", "scopes": ["worker"]}) == 403
    mine = person.api("GET", path)["data"]
    assert [(t["name"], t["scopes"]) for t in mine] == [("my-laptop", ["user:read", "user:write"])]
    assert mine[0]["expires_at"]
    assert not person.errors, person.errors


def test_an_owner_invites_from_settings_and_the_new_member_sees_only_their_org(browser: Any, person: Person,
                                                                             console: Any) -> None:
    org = create_org(console)
    other = create_org(console)
    owner_email = f"{unique('o')}@example.com"
    _join(person, _invite(console, org["id"], "owner"), owner_email, unique("owner"))
    page = person.page
    page.goto("/settings")
    page.get_by_role("tab", name="Organization").click()
    page.get_by_role("combobox", name="Role", exact=True).select_option("member")
    page.get_by_role("button", name="Create invite link").click()
    link_box = page.get_by_test_id("invite-link")
    link_box.wait_for()
    link = link_box.inner_text().strip()
    assert link.startswith(console.url + "/invite/")
    assert "shown once" in page.get_by_role("region", name="Invite link").inner_text()
    shot(page, "settings-organization")

    newcomer = Person(browser, console.url)
    try:
        email = f"{unique('n')}@example.com"
        _join(newcomer, link, email, unique("new"))
        header = newcomer.page.locator("header")
        assert header.locator("select[aria-label='Organization']").count() == 0  # one org: nothing to switch to
        assert header.locator(".org").inner_text() == org["name"]
        session = newcomer.api("GET", "/api/auth/session")
        assert [o["id"] for o in session["organizations"]] == [org["id"]]
        assert session["organization"]["role"] == "member"
        # another org's data is not there for them: 404, not 403
        assert _status(newcomer, "GET", f"/api/organizations/{other['id']}/tokens") == 404
        assert newcomer.page.evaluate(
            "async (o) => (await fetch('/api/v1/me', {headers: {'X-Modelyard-Org': o}})).status", other["id"]) == 404
        # a member's settings: their profile and the webhook secret, not the org's administration
        newcomer.page.goto("/settings")
        tabs = newcomer.page.get_by_role("tab").all_inner_texts()
        assert tabs == ["Profile", "Webhooks"]
        assert not newcomer.errors, newcomer.errors
    finally:
        newcomer.close()
    # the owner sees them in the members list
    page.reload()
    page.get_by_role("tab", name="Organization").click()
    page.locator("tbody tr", has_text=email).wait_for()
    assert not person.errors, person.errors


def test_a_profile_edit_persists(person: Person, console: Any) -> None:
    org = create_org(console)
    _join(person, _invite(console, org["id"], "admin"), f"{unique('p')}@example.com", unique("prof"))
    page = person.page
    page.goto("/settings")
    username = unique("ada")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Location").fill("Lyon, France")
    page.get_by_label("Bio").fill("Builds things with models.")
    page.get_by_role("button", name="Save profile").click()
    page.get_by_text("Profile saved.").wait_for()
    page.reload()
    page.wait_for_function("() => document.querySelector('input[name=username]').value !== ''")
    assert page.get_by_label("Username").input_value() == username
    assert page.get_by_label("Location").input_value() == "Lyon, France"
    assert page.get_by_label("Bio").input_value() == "Builds things with models."
    me = person.api("GET", "/api/v1/me")
    assert (me["username"], me["location"], me["bio"]) == (username, "Lyon, France", "Builds things with models.")
    shot(page, "settings")
    for tab, name in (("Billing", "settings-billing"), ("Request logging", "settings-logging"),
                      ("Content filter", "settings-filter")):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_load_state("networkidle")
        shot(page, name)
    # an admin turns request bodies on, with a shorter retention, from the page
    page.get_by_role("tab", name="Request logging").click()
    page.get_by_label("Keep request and response bodies").check()
    page.get_by_label("Keep the request log for (days)").fill("7")
    page.get_by_role("button", name="Save logging settings").click()
    page.get_by_text("Request logging saved.").wait_for()
    kept = person.api("GET", f"/api/organizations/{org['id']}")["request_logging"]
    assert kept == {"bodies": True, "redact": False, "retention_days": 7}
    assert not person.errors, person.errors


def test_the_operator_tops_up_an_org_and_the_audit_log_shows_it(person: Person, console: Any) -> None:
    org = create_org(console, name=unique("acme"))
    page = person.sign_in(then="/admin")
    page.get_by_role("button", name="Manage " + org["name"]).click()
    panel = page.get_by_role("region", name="Organization " + org["name"])
    panel.get_by_label("Top-up amount (USD)").fill("12.34")
    panel.get_by_label("Note").fill("invoice 2041")
    panel.get_by_role("button", name="Top up").click()
    page.get_by_test_id("org-balance").filter(has_text="$12.34").wait_for()
    panel.get_by_role("button", name="Create invite link").click()  # its first owner, by a one-time link
    page.get_by_test_id("invite-link").wait_for()
    assert page.get_by_test_id("invite-link").inner_text().startswith(console.url + "/invite/")
    shot(page, "admin")
    wallet = httpx.get(f"{console.url}/api/organizations/{org['id']}/wallet", headers=console.headers()).json()
    assert wallet["balance_cents"] == 1234 and wallet["ledger"][0]["note"] == "invoice 2041"

    page.get_by_role("tab", name="Audit log").click()
    page.get_by_role("combobox", name="Action", exact=True).select_option("wallet.top_up")
    page.get_by_role("combobox", name="Organization", exact=True).select_option(org["id"])
    with page.expect_response(lambda r: "/api/audit-log?" in r.url and "organization=" + org["id"] in r.url):
        page.get_by_role("button", name="Apply").click()
    page.wait_for_function("() => document.querySelectorAll('tbody tr[data-action]').length === 1")
    entry = page.locator("tbody tr[data-action='wallet.top_up']")
    text = entry.inner_text()
    assert OWNER_EMAIL in text and org["name"] in text
    assert "balance: $0.00" in text and "amount: $12.34" in text and "balance: $12.34" in text
    assert "127.0.0.1" in text
    assert "action=wallet.top_up" in page.url  # the filters are kept in the URL
    shot(page, "admin-audit")
    for tab, name in (("Plans and limits", "admin-plans"), ("Workers", "admin-workers")):
        page.get_by_role("tab", name=tab).click()
        page.wait_for_load_state("networkidle")
        shot(page, name)
    assert page.locator("tbody tr", has_text="unlimited").count() >= 1
    assert not person.errors, person.errors
