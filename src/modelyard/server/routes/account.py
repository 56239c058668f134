"""The caller's own account (studio dialect: /api/v1/me, /api/v1/balance) and the public price list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import NotFound
from ...pipeline import scopes as sc
from ...pipeline.billing import MICROS_PER_DOLLAR, dollars
from ...store.repo import OrgRepo
from .openai import json_response
from .orgs import balance_body

router = APIRouter(tags=["Account"])


def price_list(ctx: Any) -> dict[str, Any]:
    """Every model with its price (free when none) and any plan restriction; the studio modes' table."""
    book = None if ctx.gate.passthrough else ctx.gate.prices
    models = []
    for m in ctx.catalog:
        price = book.models.get(m.id) if book else None
        entry: dict[str, Any] = {"model_id": m.id, "type": m.type, "free": price is None}
        if price is not None:
            entry["price"] = price.public()
        plans = book.model_plans.get(m.id) if book else None
        if plans:
            entry["plans"] = sorted(plans)
        models.append(entry)
    studio = {}
    for mode, t in (book.studio.items() if book else ()):
        if t.per_resolution:
            studio[mode] = {"per_resolution": {r: dollars(round(p * MICROS_PER_DOLLAR))
                                               for r, p in t.per_resolution.items()}, "seconds": t.seconds}
        else:
            studio[mode] = {"per_tier": {k: dollars(round(p * MICROS_PER_DOLLAR)) for k, p in t.per_tier.items()}}
    return {"currency": "usd", "models": models, "studio": studio}


@router.get("/api/pricing", summary="Public pricing: every model's price, and the studio modes' table")
async def pricing(request: Request) -> Response:
    return json_response(price_list(request.app.state.ctx), headers={"Cache-Control": "public, max-age=60"})


async def _mine(request: Request) -> tuple[Any, Any, Any]:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_READ)
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
    profile = org.profile or {}
    body = {"username": profile.get("username", org.name), "email": profile.get("email"),
            "bio": profile.get("bio"), "location": profile.get("location"),
            **{k: v for k, v in profile.items() if k not in ("username", "email", "bio", "location")},
            "organization_id": org.id, "organization": org.name, "plan": org.plan, "status": org.status,
            "token_id": principal.token_id, **balance_body(await ctx.gate.wallets.balance(org.id)),
            "created_at": org.created_at.isoformat()}
    return json_response(body)


@router.get("/api/v1/balance", summary="Your wallet balance")
async def balance(request: Request) -> Response:
    ctx, _, org = await _mine(request)
    return json_response(balance_body(await ctx.gate.wallets.balance(org.id)))
