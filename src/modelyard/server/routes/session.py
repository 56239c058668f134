"""Console sign-in: first-run setup, login (password or admin key), the session, sign-out, invite acceptance."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ...accounts import csrf
from ...accounts.service import Accounts
from ...accounts.sessions import COOKIE, ORG_HEADER, SessionState
from ...errors import AuthenticationError, NotFound
from ..body import parse_json
from ..openapi import json_body
from ..render import app_context, json_response

router = APIRouter(tags=["Sessions"])


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Setup(_Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)
    username: str | None = Field(default=None, max_length=40)


class Login(_Body):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1024)


class KeyLogin(_Body):
    key: str = Field(min_length=1, max_length=200)


class SelectOrg(_Body):
    organization: str = Field(min_length=1, max_length=200, pattern=r"^[^\x00]+$")  # PostgreSQL text holds no NUL


class AcceptInvite(_Body):
    token: str = Field(min_length=1, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    password: str | None = Field(default=None, max_length=1024)
    username: str | None = Field(default=None, max_length=40)


def accounts(request: Request) -> Accounts:
    ctx = app_context(request)
    if ctx.accounts is None:  # a model host has no people
        raise NotFound(f"Unknown route: {request.method} {request.url.path}", code="unknown_route")
    return ctx.accounts


def address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def with_cookie(request: Request, response: Response, token: str | None) -> Response:
    """Set (or, with None, clear) the session cookie: HttpOnly, SameSite=Lax, Secure over TLS or when configured."""
    settings = app_context(request).settings
    secure = settings.session_cookie_secure
    if secure is None:
        secure = request.url.scheme == "https"
    if token is None:
        response.delete_cookie(COOKIE, path="/", secure=secure, httponly=True, samesite="lax")
    else:
        response.set_cookie(COOKIE, token, max_age=int(settings.session_max_seconds), path="/", secure=secure,
                            httponly=True, samesite="lax")
    return response


async def current(request: Request, *, check_csrf: bool = True) -> SessionState:
    """The request's live session (401 without one); unsafe methods must carry its CSRF token."""
    acc = accounts(request)
    token = request.cookies.get(COOKIE)
    state = await acc.sessions.lookup(token) if token else None
    if state is None:
        raise AuthenticationError("You are not signed in.", code="not_signed_in")
    if check_csrf:
        await csrf.check(request, state.csrf_token)
    return state


async def _signed_in(request: Request, acc: Accounts, state: SessionState, token: str, status: int = 200) -> Response:
    principal = await acc.sessions.principal(state)
    return with_cookie(request, json_response(await acc.describe(state, principal), status=status), token)


@router.get("/api/auth/setup", summary="Whether first-run setup is still open (no user exists yet)")
async def setup_state(request: Request) -> Response:
    return json_response({"needed": await accounts(request).repo.count_users() == 0})


@router.post("/api/auth/setup", summary="First run: create the first user, owner of the default organization",
             status_code=201, openapi_extra=json_body(Setup))
async def setup(request: Request) -> Response:
    acc = accounts(request)
    csrf.same_site(request)
    body = await parse_json(request, Setup)
    await acc.guard.attempt(address(request), "setup")
    _, state, token = await acc.setup(body.email, body.password, body.username)
    return await _signed_in(request, acc, state, token, status=201)


@router.post("/api/auth/login", summary="Sign in with email and password; sets the session cookie",
             openapi_extra=json_body(Login))
async def login(request: Request) -> Response:
    acc = accounts(request)
    csrf.same_site(request)
    body = await parse_json(request, Login)
    _, state, token = await acc.login(body.email, body.password, address(request), request.headers.get("user-agent"))
    return await _signed_in(request, acc, state, token)


@router.post("/api/auth/login-key", summary="Sign in to the console with an admin key (headless installs)",
             openapi_extra=json_body(KeyLogin))
async def login_key(request: Request) -> Response:
    acc = accounts(request)
    csrf.same_site(request)
    body = await parse_json(request, KeyLogin)
    _, state, token = await acc.login_key(body.key, address(request), request.headers.get("user-agent"))
    return await _signed_in(request, acc, state, token)


@router.get("/api/auth/session", summary="Who is signed in, their organizations, and the session's CSRF token")
async def session(request: Request) -> Response:
    acc = accounts(request)
    state = await current(request)
    principal = await acc.sessions.principal(state, request.headers.get(ORG_HEADER))
    return json_response(await acc.describe(state, principal))


@router.post("/api/auth/session/organization", summary="Switch the organization the session acts in",
             openapi_extra=json_body(SelectOrg))
async def select_org(request: Request) -> Response:
    acc = accounts(request)
    state = await current(request)
    body = await parse_json(request, SelectOrg)
    principal = await acc.sessions.principal(state, body.organization)  # 404 unless a member
    await acc.sessions.select_org(state, principal.org_id)
    return json_response(await acc.describe(state, principal))


@router.post("/api/auth/logout", summary="Sign out this session")
async def logout(request: Request) -> Response:
    state = await current(request)
    await accounts(request).sessions.revoke(state)
    return with_cookie(request, json_response({"signed_out": 1}), None)


@router.post("/api/auth/logout-all", summary="Sign out everywhere: every session of this user")
async def logout_all(request: Request) -> Response:
    state = await current(request)
    n = await accounts(request).sessions.revoke_all(state)
    return with_cookie(request, json_response({"signed_out": n}), None)


@router.post("/api/auth/accept-invite", summary="Join an organization by invite: as the signed-in user, or as a new "
                                                "user (email, password, username)",
             status_code=201, openapi_extra=json_body(AcceptInvite))
async def accept_invite(request: Request) -> Response:
    acc = accounts(request)
    token = request.cookies.get(COOKIE)
    signed_in = await acc.sessions.lookup(token) if token else None  # a stale cookie: accept as someone new
    if signed_in is not None:
        await csrf.check(request, signed_in.csrf_token)
    else:
        csrf.same_site(request)
    body = await parse_json(request, AcceptInvite)
    await acc.guard.attempt(address(request), "invite:" + body.token)
    user, membership, state, token = await acc.accept(body.token, signed_in, body.email, body.password,
                                                      body.username)
    out: dict[str, Any] = {"user": user.public(), "membership": membership}
    response = json_response(out, status=201)
    if state is not None and token is not None:
        out["csrf_token"] = state.csrf_token
        response = with_cookie(request, json_response(out, status=201), token)
    return response
