"""The caller's own account (studio dialect: /api/v1/me, /api/v1/balance) and the public price list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import NotFound
from ...pipeline import scopes as sc
from ...pipeline.billing import balance_body, price_list
from ...store.repo import OrgRepo
from ..render import app_context, json_response

router = APIRouter(tags=["Account"])


@router.get("/api/pricing", summary="Public pricing: every model's price, and the studio modes' table")
async def pricing(request: Request) -> Response:
    ctx = app_context(request)
    return json_response(price_list(None if ctx.gate.passthrough else ctx.gate.prices, ctx.catalog), headers={"Cache-Control": "public, max-age=60"})


async def _mine(request: Request) -> tuple[Any, Any, Any]:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    if ctx.gate.passthrough:
        raise NotFound(f"Unknown route: {request.method} {request.url.path}", code="unknown_route")
    org = await OrgRepo(ctx.store).get(principal.org_id)
    if org is None:
        raise NotFound("This key's organization no longer exists.")
    await ctx.gate.flush()  # this replica's pending refunds first, so the balance is current
    return ctx, principal, org


@router.get("/api/v1/me", summary="Your profile, organization, plan and balance")
async def me(request: Request) -> Response:
    ctx, principal, org = await _mine(request)
    profile = dict(org.profile or {})
    if principal.user_id is not None and ctx.accounts is not None:  # a signed-in person: their own profile
        user = await ctx.accounts.repo.user(principal.user_id)
        if user is not None:
            profile.update(username=user.username, email=user.email, bio=user.bio, location=user.location)
    body = {"username": profile.get("username", org.name), "email": profile.get("email"),
            "bio": profile.get("bio"), "location": profile.get("location"),
            **{k: v for k, v in profile.items() if k not in ("username", "email", "bio", "location")},
            "organization_id": org.id, "organization": org.name, "plan": org.plan, "status": org.status,
            "token_id": principal.token_id, "user_id": principal.user_id, "role": principal.role,
            **balance_body(await ctx.gate.wallets.balance(org.id)),
            "created_at": org.created_at.isoformat()}
    return json_response(body)


@router.get("/api/v1/balance", summary="Your wallet balance")
async def balance(request: Request) -> Response:
    ctx, _, org = await _mine(request)
    return json_response(balance_body(await ctx.gate.wallets.balance(org.id)))
