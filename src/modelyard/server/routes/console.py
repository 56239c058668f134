"""The console's pages: page shells rendered from templates; each page reads and writes through the JSON API.

A page is served to a signed-in person whose role allows it; without a session it redirects to `/login` (or to
`/setup` while no user exists). The shell carries who is signed in, their organization, role, scopes and the
session's CSRF token; everything else comes from the API (console/static/console.js).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles

from ...accounts.sessions import COOKIE
from ...console import pages as console
from ...errors import ModelyardError
from ..render import app_context
from .orgs import is_operator

router = APIRouter(include_in_schema=False)

# What a page may load: its own scripts and styles only. Alpine evaluates its attribute expressions with
# `new Function` (hence 'unsafe-eval'); there are no inline scripts. Media may come from the storage's signed URLs.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob: http: https:; media-src 'self' blob: http: https:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")
HEADERS = {"content-security-policy": CSP, "x-frame-options": "DENY", "x-content-type-options": "nosniff",
           "referrer-policy": "same-origin", "cache-control": "no-store"}


def static_mount() -> Mount:
    return Mount(console.STATIC_PREFIX, app=StaticFiles(directory=str(console.PACKAGE.joinpath("static"))),
                 name="console-static")


async def signed_in(request: Request) -> dict[str, Any] | None:
    """Who is signed in (the same body as GET /api/auth/session), or None."""
    acc = app_context(request).accounts
    token = request.cookies.get(COOKIE)
    if acc is None or not token:
        return None
    state = await acc.sessions.lookup(token)
    if state is None:
        return None
    try:
        principal = await acc.sessions.principal(state)
    except ModelyardError:  # the org went away or the key behind the session was revoked
        return None
    me = await acc.describe(state, principal)
    me["operator"] = is_operator(principal)
    return me


def _html(body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(body, status_code=status, headers=HEADERS)


def _local(target: str | None) -> str:
    """Where to go after signing in: a path on this server only (never another host)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return "/" if parts.scheme or parts.netloc else target


def _page_route(page: console.Page) -> Any:
    async def show(request: Request) -> Response:
        ctx = app_context(request)
        if ctx.accounts is None:
            return _html("Not found", 404)
        me = await signed_in(request)
        if me is None:
            if await ctx.accounts.repo.count_users() == 0:
                return RedirectResponse("/setup", status_code=303)
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse("/login?next=" + quote(target, safe=""), status_code=303)
        scopes = set(me["scopes"])
        nav = [p for p in console.PAGES if p.nav and console.allowed(p, scopes, me["operator"])]
        status = 200 if console.allowed(page, scopes, me["operator"]) else 403
        return _html(console.render("page.html", page=page, me=me, nav=nav, params=dict(request.path_params),
                                    script=console.has_script(page.name), forbidden=status == 403), status)
    show.__name__ = f"console_{page.name}"
    return show


def _public_route(page: console.Page) -> Any:
    async def show(request: Request) -> Response:
        ctx = app_context(request)
        if ctx.accounts is None:
            return _html("Not found", 404)
        users = await ctx.accounts.repo.count_users()
        if page.name == "setup" and users:
            return RedirectResponse("/login", status_code=303)
        if page.name == "login" and not users:
            return RedirectResponse("/setup", status_code=303)
        following = _local(request.query_params.get("next"))
        if page.name != "invite" and await signed_in(request) is not None:
            return RedirectResponse(following, status_code=303)
        return _html(console.render("public.html", page=page, params=dict(request.path_params), next=following,
                                    script=console.has_script(page.name)))
    show.__name__ = f"console_{page.name}"
    return show


for _page in console.PAGES:
    router.add_api_route(_page.path, _page_route(_page), methods=["GET"])
for _page in console.PUBLIC:
    router.add_api_route(_page.path, _public_route(_page), methods=["GET"])
