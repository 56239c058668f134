"""The console's shell in Chromium: first-run setup, sign-in and sign-out, redirects, who may open which page,
the phone-width menu, and the HTTP-level guarantees of every page (security headers, no open redirect)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from modelyard.console.pages import PAGES

from ..support.accounts import create_org
from .conftest import OWNER_EMAIL, PASSWORD, PHONE, Person, console_server, set_up_owner, shot


def test_first_visit_sets_up_the_owner_and_signs_them_in(browser: Any, tmp_path: Any, stub_server: Any) -> None:
    with console_server(tmp_path, stub_server[0].url) as srv:
        p = Person(browser, srv.url)
        page = p.page
        page.goto("/tokens")
        page.wait_for_url(srv.url + "/setup")  # no user yet: every page leads to setup
        shot(page, "setup")
        page.get_by_label("Email").fill("first@example.com")
        page.get_by_label("Username").fill("first")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create the owner account").click()
        assert page.get_by_label("Password").evaluate("el => el.validity.tooShort")  # the browser refuses first
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Create the owner account").click()
        page.wait_for_url(srv.url + "/")
        assert page.locator("header .user").inner_text().startswith("first")
        # the operator sees every page in the navigation, the admin page included
        nav = page.locator("nav#nav a").all_inner_texts()
        assert nav == [p.nav for p in PAGES if p.nav]
        # setup is closed now
        assert httpx.get(srv.url + "/api/auth/setup").json() == {"needed": False}
        page.goto("/setup")
        page.wait_for_url(srv.url + "/")
        assert not p.errors, p.errors
        p.close()


def test_sign_in_returns_to_the_page_asked_for_and_sign_out_ends_the_session(person: Person, console: Any) -> None:
    page = person.page
    page.goto("/usage?group=model")
    page.wait_for_url(re.compile(r"/login\?next="))
    shot(page, "login")
    page.get_by_label("Email").fill(OWNER_EMAIL)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in", exact=True).click()
    alert = page.get_by_role("alert")
    alert.wait_for()
    assert "Incorrect email or password" in alert.inner_text()
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in", exact=True).click()
    page.wait_for_url(console.url + "/usage?group=model")
    cookie = next(c for c in person.context.cookies() if c["name"] == "modelyard_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto("/usage")
    page.wait_for_url(re.compile(r"/login\?next=%2Fusage$"))
    assert not person.errors, person.errors


def test_an_admin_key_signs_in_for_headless_installs(person: Person, console: Any) -> None:
    page = person.page
    page.goto("/login")
    page.get_by_role("tab", name="Admin key").click()
    page.get_by_label("Admin API key").fill(console.admin_key)
    page.get_by_role("button", name="Sign in with the key").click()
    page.wait_for_url(console.url + "/")
    assert "admin key" in page.locator("header .user").inner_text()


def test_a_member_sees_only_their_pages_and_a_clear_refusal_elsewhere(person: Person, console: Any) -> None:
    org = create_org(console)
    invite = httpx.post(f"{console.url}/api/organizations/{org['id']}/invites",
                        headers=console.headers(), json={"role": "member"}).json()
    page = person.page
    assert invite["url"].startswith(console.url + "/invite/")
    page.goto(invite["url"])
    page.get_by_label("Email").fill("member@example.com")
    page.get_by_label("Username").fill("member")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account and join").click()
    page.wait_for_url(console.url + "/")
    nav = page.locator("nav#nav a").all_inner_texts()
    assert "Usage" not in nav and "Admin" not in nav and "Playground" in nav and "Tokens" in nav
    response = page.goto("/admin")
    assert response is not None and response.status == 403
    assert "cannot open this page" in page.get_by_role("alert").inner_text()


def test_the_menu_folds_at_phone_width(person: Person, console: Any) -> None:
    page = person.sign_in()
    page.set_viewport_size(PHONE)
    nav = page.locator("nav#nav")
    assert not nav.is_visible()
    page.get_by_role("button", name="Menu").click()
    assert nav.is_visible()
    page.keyboard.press("Tab")  # keyboard reaches the first entry, with a visible focus ring
    assert page.evaluate("document.activeElement.getAttribute('href')") == "/"


def test_pages_carry_security_headers_and_never_redirect_off_site(console: Any) -> None:
    r = httpx.get(console.url + "/login")
    assert r.status_code == 200
    assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
    assert r.headers["x-frame-options"] == "DENY" and r.headers["cache-control"] == "no-store"
    jar = httpx.Client(base_url=console.url, timeout=60)
    assert jar.post("/api/auth/login", json={"email": OWNER_EMAIL, "password": PASSWORD}).status_code == 200
    for target in ("//evil.example/x", "https://evil.example/", "/\\evil.example", "javascript:alert(1)"):
        r = jar.get("/login", params={"next": target})
        assert r.status_code == 303 and r.headers["location"] == "/", (target, r.headers.get("location"))
    r = jar.get("/login", params={"next": "/jobs?status=failed"})
    assert r.headers["location"] == "/jobs?status=failed"
    jar.close()


@pytest.mark.parametrize("path", [p.path.replace("{model_id:path}", "x").replace("{request_id}", "x")
                                  .replace("{job_id}", "x").replace("{batch_id}", "x").replace("{agent_id}", "x")
                                  .replace("{run_id}", "x") for p in PAGES])
def test_every_page_asks_for_a_session(console: Any, path: str) -> None:
    r = httpx.get(console.url + path)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


def test_the_setup_api_after_setup_is_refused(console: Any) -> None:
    r = httpx.post(console.url + "/api/auth/setup", json={"email": "x@example.com", "password": PASSWORD})
    assert r.status_code == 409
    with pytest.raises(AssertionError):
        set_up_owner(console, "again@example.com")
