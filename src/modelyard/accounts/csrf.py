"""CSRF: a state-changing request authenticated by the session cookie must carry the session's CSRF token."""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import parse_qs, urlsplit

from starlette.requests import HTTPConnection, Request

from ..errors import PermissionDenied

HEADER = "x-csrf-token"
FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
FORM_MAX_BYTES = 1024 * 1024  # a sign-in or settings form; anything bigger sends the header instead


def new_token() -> str:
    return secrets.token_urlsafe(32)


async def check(conn: HTTPConnection, expected: str) -> None:
    """Refuse (403) an unsafe request whose `X-CSRF-Token` header, or `csrf_token` field of a urlencoded form, is
    not the session's token. Requests authenticated by an API key never get here: a key is not sent by browsers on
    their own, so it cannot be ridden."""
    if conn.scope.get("method", "GET") in SAFE_METHODS:
        return
    given = conn.headers.get(HEADER)
    if not given and isinstance(conn, Request) and _is_small_form(conn):
        body = await conn.body()  # cached on the request: the route reads the same bytes again
        given = (parse_qs(body.decode("latin-1")).get(FIELD) or [None])[0]
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        if isinstance(conn, Request) and _small(conn):
            await conn.body()  # read what was sent, so the refusal keeps the connection usable (keep-alive)
        raise PermissionDenied("This request needs your session's CSRF token: send it as the X-CSRF-Token header "
                               "(or the csrf_token field of a form). GET /api/auth/session returns it.",
                               code="csrf_token_invalid")


def _is_small_form(request: Request) -> bool:
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return False
    return _small(request)


def _small(request: Request) -> bool:
    declared = request.headers.get("content-length", "")
    return declared.isdigit() and int(declared) <= FORM_MAX_BYTES


def same_site(conn: HTTPConnection) -> None:
    """Refuse (403) a sign-in form posted from another site (login CSRF: signing a victim in to the attacker's
    account). Before sign-in there is no session token to check, so the browser's own word is used: the Fetch
    Metadata header `Sec-Fetch-Site`, or, from browsers that do not send it, `Origin` against the Host the request
    came to. Programs send neither header and are not affected."""
    site = conn.headers.get("sec-fetch-site")
    if site is not None:
        if site in ("same-origin", "none"):
            return
        raise PermissionDenied("Sign-in from another site is refused.", code="cross_site_request")
    origin = conn.headers.get("origin")
    if origin is None:
        return
    host = conn.headers.get("x-forwarded-host") or conn.headers.get("host") or ""
    if origin == "null" or urlsplit(origin).netloc.lower() != host.split(",")[0].strip().lower():
        raise PermissionDenied("Sign-in from another site is refused.", code="cross_site_request")
