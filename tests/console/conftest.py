"""Console tests: a real server, Debian's Chromium driven by Playwright, and screenshots of every page.

Chromium is the distribution's (`apt-get install chromium`), started by path: Playwright's own browser download is
not used. Screenshots go to test-artifacts/screenshots/ (not committed), one at desktop and one at phone width.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest

from ..conftest import ServerThread, StubControl, require, running, make_settings, upstream_models
from ..support.paths import REPO

PASSWORD = "correct horse battery staple"
OWNER_EMAIL = "owner@example.com"
SHOTS = Path(os.environ.get("MODELYARD_SCREENSHOTS", REPO / "test-artifacts" / "screenshots"))
DESKTOP = {"width": 1366, "height": 900}
PHONE = {"width": 390, "height": 844}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-dev-shm-usage"]


def chromium_problem() -> str | None:
    if shutil.which("chromium") is None:
        return "Debian's chromium is not installed (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


@contextlib.contextmanager
def console_server(tmp: Path, stub_url: str, database_url: str | None = None) -> Iterator[Any]:
    """A server with the built-in models and the stub upstream's, as `make serve` would run it."""
    with running(make_settings(tmp, database_url=database_url, models=upstream_models(stub_url),
                               cooldown_failures=1_000_000, prompt_rewrite_model="stub-gpt")) as srv:
        yield srv


def set_up_owner(srv: Any, email: str = OWNER_EMAIL) -> dict[str, Any]:
    r = httpx.post(srv.url + "/api/auth/setup", json={"email": email, "password": PASSWORD, "username": "owner"},
                   timeout=60)
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium for one test module. Not for the session: Playwright's sync API keeps an event loop running in the
    main thread while it is open, which the rest of the suite's asyncio tests must not find there."""
    require("the console in Chromium", chromium_problem())
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory,
            stub_server: tuple[ServerThread, StubControl]) -> Iterator[Any]:
    """One server per test module, its owner (the operator) set up already: `console.url`, `console.owner`."""
    with console_server(tmp_path_factory.mktemp("console"), stub_server[0].url) as srv:
        srv.owner = set_up_owner(srv)
        yield srv


class Person:
    """One person at a browser: their own context (cookies), a page, and how to sign in."""

    def __init__(self, browser: Any, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport=DESKTOP, base_url=base)
        self.context.set_default_timeout(30_000)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        self.page.on("console", self._console)

    def _console(self, msg: Any) -> None:
        # script errors count; a refused API call is the page's to show (Chromium logs every 4xx fetch too)
        if msg.type == "error" and not msg.text.startswith("Failed to load resource"):
            self.errors.append(msg.text)

    def sign_in(self, email: str = OWNER_EMAIL, password: str = PASSWORD, then: str = "/") -> Any:
        page = self.page
        page.goto("/login?next=" + then)
        page.get_by_label("Email").fill(email)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Sign in", exact=True).click()
        page.wait_for_url(re.compile(re.escape(self.base + then) + r"(\?.*)?$"))
        return page

    def csrf(self) -> str:
        """The session's CSRF token, as the page has it."""
        return self.page.evaluate("My.csrf")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the API as this person's browser does (cookie + CSRF header), for setting up a scene."""
        return self.page.evaluate("([m, p, b]) => My.api(p, {method: m, body: b === null ? undefined : b})",
                                  [method, path, body])

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def person(browser: Any, console: Any) -> Iterator[Person]:
    p = Person(browser, console.url)
    yield p
    p.close()


def shot(page: Any, name: str) -> None:
    """A screenshot of the page as it is, at desktop and at phone width (the page is reloaded at neither)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}-desktop.png"), full_page=True)
    size = page.viewport_size
    page.set_viewport_size(PHONE)
    # two animation frames: the layout and the charts' resize observers have run before the picture
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    page.screenshot(path=str(SHOTS / f"{name}-phone.png"), full_page=True)
    page.set_viewport_size(size)


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
