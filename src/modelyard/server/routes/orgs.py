"""Organization APIs: the operator's account management, and each org admin's tokens, wallet, usage and filter."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ...bootstrap import DEFAULT_ORG
from ...errors import InsufficientBalance, InvalidRequest, ModelyardError, NotFound, PermissionDenied
from ...pipeline import scopes as sc
from ...pipeline.auth import Principal
from ...pipeline.billing import balance_body, dollars, price_list
from ...pipeline.limits import UNLIMITED, default_plans
from ...pipeline.usage import day_range
from ...store.billing_repo import FilterRepo
from ...store.repo import Conflict, Org, OrgRepo, TokenRepo
from ...context import AppContext
from ..audit import audit
from ..body import parse_json
from ..openapi import json_body
from ..render import app_context, json_response

router = APIRouter(tags=["Organizations"])
ORG = "/api/organizations/{org_id}"
FILTER_OFF_PLANS = ("enterprise", UNLIMITED)  # `off` skips classification entirely: enterprise only (the API reference's rule)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrgCreate(_Body):
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._-]*$")
    plan: str = Field(default="free", min_length=1, max_length=40)
    profile: dict[str, Any] = Field(default_factory=dict)


class RequestLogging(_Body):
    bodies: bool = False  # keep request and response bodies in the request log
    redact: bool = False  # run them through the built-in PII model first
    # keep this org's request log (rows and bodies) this many days; null: the installation's retention
    retention_days: int | None = Field(default=None, ge=1, le=3650)


class OrgPatch(_Body):
    plan: str | None = Field(default=None, min_length=1, max_length=40)
    status: Literal["active", "banned"] | None = None
    profile: dict[str, Any] | None = None
    library_autosave: bool | None = None  # every media result becomes a library item (docs/library.md)
    prompts_private: bool | None = None  # share links leave the prompt out
    request_logging: RequestLogging | None = None


class TopUp(_Body):
    amount_cents: int = Field(gt=0, le=100_000_000)
    note: str | None = Field(default=None, max_length=500)


class TokenCreate(_Body):
    name: str = Field(default="key", min_length=1, max_length=200)
    scopes: list[str] = Field(default_factory=lambda: list(sc.DEFAULT), min_length=1)
    expires_in_days: float | None = Field(default=None, gt=0, le=3650)


class FilterPolicyBody(_Body):
    action: Literal["block", "flag", "log", "off"]
    categories: list[str] | None = Field(default=None, max_length=50)


class FilterPolicyPatch(_Body):
    action: Literal["block", "flag", "log", "off"] | None = None
    categories: list[str] | None = Field(default=None, max_length=50)


def is_operator(principal: Principal) -> bool:
    """The operator is whoever holds a key on the default org created at first start."""
    return principal.org_name == DEFAULT_ORG


async def _caller(request: Request, scope: str) -> tuple[Any, Principal]:
    ctx = app_context(request)
    if ctx.gate.passthrough:  # a worker process has no accounts; its control plane does
        raise NotFound(f"Unknown route: {request.method} {request.url.path}", code="unknown_route")
    return ctx, await ctx.calls.authorize(request, scope)


async def _operator(request: Request, scope: str) -> tuple[Any, Principal]:
    ctx, principal = await _caller(request, scope)
    if not is_operator(principal):
        raise PermissionDenied("Only the operator's organization may do this.", code="operator_only")
    return ctx, principal


async def _org_for(request: Request, org_id: str, scope: str) -> tuple[Any, Principal, Org]:
    """The org the path names, if the caller may see it: its own, or any for the operator. Others' are 404."""
    ctx, principal = await _caller(request, scope)
    org = await OrgRepo(ctx.store).get(org_id)
    if org is None or (org.id != principal.org_id and not is_operator(principal)):
        raise NotFound(f"No organization '{org_id}'.", code="organization_not_found")
    return ctx, principal, org


def _check_plan(ctx: AppContext, plan: str) -> None:
    if not ctx.gate.passthrough and not ctx.gate.limits.known(plan):
        raise InvalidRequest(f"Unknown plan '{plan}'; configured plans: {', '.join(sorted(ctx.gate.limits.rules))}.",
                             param="plan")


async def _org_body(ctx: AppContext, org: Org) -> dict[str, Any]:
    await ctx.gate.flush()
    return {**org.public(), **balance_body(await ctx.gate.wallets.balance(org.id)),
            "request_log_retention_days": ctx.settings.request_log_retention_days}  # the installation's (0: forever)


# ---------------------------------------------------------------- operator: accounts

@router.post("/api/organizations", summary="Create an organization (operator)", status_code=201,
             openapi_extra=json_body(OrgCreate))
async def create_org(request: Request) -> Response:
    ctx, principal = await _operator(request, sc.ADMIN_WRITE)
    body = await parse_json(request, OrgCreate)
    _check_plan(ctx, body.plan)
    try:
        org = await OrgRepo(ctx.store).create(body.name, plan=body.plan)
    except Conflict as exc:
        raise ModelyardError(str(exc), status=409, code="conflict", param="name") from None
    if body.profile:
        org = await OrgRepo(ctx.store).update(org.id, profile=body.profile) or org
    await audit(request, principal, "organization.create", org_id=org.id, target=org.id, after=org.public())
    return json_response(await _org_body(ctx, org), status=201)


@router.get("/api/organizations", summary="List organizations (the operator sees all; an org admin its own)")
async def list_orgs(request: Request) -> Response:
    ctx, principal = await _caller(request, sc.ADMIN_READ)
    orgs = await OrgRepo(ctx.store).list()
    if not is_operator(principal):
        orgs = [o for o in orgs if o.id == principal.org_id]
    return json_response({"object": "list", "data": [o.public() for o in orgs]})


@router.get(ORG, summary="An organization, with its balance")
async def get_org(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return json_response(await _org_body(ctx, org))


@router.patch(ORG, summary="Change plan, status (active/banned), profile or library settings; plan and status are the "
                            "operator's",
              openapi_extra=json_body(OrgPatch))
async def patch_org(request: Request, org_id: str) -> Response:
    ctx, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    body = await parse_json(request, OrgPatch)
    if (body.plan is not None or body.status is not None) and not is_operator(principal):
        raise PermissionDenied("Only the operator may change an organization's plan or status.",
                               param="plan" if body.plan is not None else "status", code="operator_only")
    if body.plan is not None:
        _check_plan(ctx, body.plan)
    if body.status == "banned" and org.name == DEFAULT_ORG:
        raise InvalidRequest("The operator's own organization cannot be banned.", param="status")
    logging_ = None
    if body.request_logging is not None:  # the fields sent change; the others stay as they were
        logging_ = {**(org.request_logging or {}), **body.request_logging.model_dump(exclude_unset=True)}
        days, most = logging_.get("retention_days"), ctx.settings.request_log_retention_days
        if days is not None and most and days > most:
            raise InvalidRequest(f"This server keeps the request log {most} days at most; 'retention_days' can "
                                 f"only shorten that.", param="request_logging.retention_days")
    updated = await OrgRepo(ctx.store).update(org.id, plan=body.plan, status=body.status, profile=body.profile,
                                              library_autosave=body.library_autosave,
                                              prompts_private=body.prompts_private, request_logging=logging_)
    ctx.auth.forget()  # cached keys carry plan, status and body logging: this process applies the change at once
    changed = sorted(body.model_fields_set)
    await audit(request, principal, "organization.update", org_id=org.id, target=org.id,
                before={k: org.public()[k] for k in changed}, after={k: (updated or org).public()[k] for k in changed})
    return json_response(await _org_body(ctx, updated or org))


@router.post(ORG + "/wallet/top-ups", summary="Add money to an org's wallet (operator)", status_code=201,
             openapi_extra=json_body(TopUp))
async def top_up(request: Request, org_id: str) -> Response:
    ctx, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    if not is_operator(principal):
        raise PermissionDenied("Only the operator may top up wallets.", code="operator_only")
    body = await parse_json(request, TopUp)
    balance, row = await ctx.gate.wallets.top_up(org.id, body.amount_cents * 10_000, body.note)
    await audit(request, principal, "wallet.top_up", org_id=org.id, target=row["id"],
                before={"balance_micros": balance - row["amount_micros"]},  # the same transaction's balance
                after={"amount_micros": row["amount_micros"], "note": row["note"], "balance_micros": balance})
    return json_response({"organization_id": org.id, **balance_body(balance),
                          "entry": {"id": row["id"], "kind": row["kind"], "amount_micros": row["amount_micros"],
                                    "note": row["note"], "created_at": row["created_at"].isoformat()}}, status=201)


@router.get(ORG + "/wallet", summary="Balance and the most recent ledger entries")
async def wallet(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    await ctx.gate.flush()
    return json_response({"organization_id": org.id, **balance_body(await ctx.gate.wallets.balance(org.id)),
                          "ledger": await ctx.gate.wallets.ledger(org.id)})


# ---------------------------------------------------------------- tokens

async def _token_org(request: Request, org_id: str, scope: str, admin_scope: str) -> tuple[Any, Principal, Org, bool]:
    """The org for a token route, and whether the caller acts as a person without the org's admin scope: then on
    their own org and the tokens they made only. A key without that scope is refused, as before (a leaked user key
    must not mint more keys); so is a member of the operator's org, who is no operator."""
    ctx, principal = await _caller(request, scope)
    person = admin_scope not in principal.scopes
    if person and principal.user_id is None:
        principal.require(admin_scope)
    org = await OrgRepo(ctx.store).get(org_id)
    if org is None or (org.id != principal.org_id and (person or not is_operator(principal))):
        raise NotFound(f"No organization '{org_id}'.", code="organization_not_found")
    return ctx, principal, org, person


@router.post(ORG + "/tokens", summary="Create an API token (the secret is returned once); a signed-in member may "
                                      "make tokens with their own scopes",
             status_code=201, openapi_extra=json_body(TokenCreate))
async def create_token(request: Request, org_id: str) -> Response:
    ctx, principal, org, person = await _token_org(request, org_id, sc.USER_WRITE, sc.ADMIN_WRITE)
    body = await parse_json(request, TokenCreate)
    try:
        scopes = sc.normalize(body.scopes)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="scopes") from None
    beyond = [s for s in scopes if not sc.expand([s]) <= principal.scopes]
    if beyond and (person or not is_operator(principal)):
        raise PermissionDenied(f"You cannot grant scopes you do not hold: {', '.join(beyond)}.", param="scopes")
    need = ctx.settings.key_min_balance_cents * 10_000
    if need and org.name != DEFAULT_ORG:
        await ctx.gate.flush()
        if await ctx.gate.wallets.balance(org.id) < need:
            raise InsufficientBalance(f"Creating an API key needs a balance of at least "
                                      f"${dollars(need)}; top up the wallet first.")
    expires = datetime.now(timezone.utc) + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = await TokenRepo(ctx.store).create(org.id, body.name, scopes, expires_at=expires,
                                                      created_by=principal.token_id)
    await audit(request, principal, "token.create", org_id=org.id, target=token.id, after=token.public())
    return json_response({"token": token.public(), "secret": secret}, status=201)


@router.get(ORG + "/tokens", summary="List an org's tokens (never their secrets); a member sees the ones they made")
async def list_tokens(request: Request, org_id: str) -> Response:
    ctx, principal, org, person = await _token_org(request, org_id, sc.USER_READ, sc.ADMIN_READ)
    tokens = await TokenRepo(ctx.store).list(org.id, created_by=principal.token_id if person else None)
    return json_response({"object": "list", "data": [t.public() for t in tokens]})


@router.delete(ORG + "/tokens/{token_id}", summary="Revoke a token (a member: one they made)")
async def revoke_token(request: Request, org_id: str, token_id: str) -> Response:
    ctx, principal, org, person = await _token_org(request, org_id, sc.USER_WRITE, sc.ADMIN_WRITE)
    tokens = TokenRepo(ctx.store)
    before = await tokens.get(token_id, org_id=org.id)
    if before is None or (person and before.created_by != principal.token_id):
        raise NotFound(f"No token '{token_id}'.", code="token_not_found")
    token = await tokens.revoke(token_id, org_id=org.id)
    ctx.auth.forget(token_id)
    await audit(request, principal, "token.revoke", org_id=org.id, target=token_id,
                before={"status": before.status}, after={"status": token.status if token else None})
    return json_response({"token": token.public() if token else None, "deleted": True})


# ---------------------------------------------------------------- usage and rates

@router.get(ORG + "/storage", summary="What the org stores now: live files and bytes, in all and per purpose")
async def storage_usage(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return json_response(await ctx.files.usage(org.id))


@router.get(ORG + "/usage", summary="Usage totals by day, model and task over ?start=&end= (UTC dates)")
async def usage(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    start, end = day_range(request.query_params.get("start"), request.query_params.get("end"))
    await ctx.gate.flush()  # read your own writes: this replica's queued rows first
    repo = ctx.gate.usage.repo
    rows = await repo.totals(org.id, start, end, ("day", "model_id", "task"))
    totals = await repo.totals(org.id, start, end, ())
    return json_response({"organization_id": org.id, "start": start, "end": end,
                          "totals": _money(totals[0] if totals else {}), "data": [_money(r) for r in rows]})


@router.get(ORG + "/usage/by-token", summary="Usage totals per token over ?start=&end=")
async def usage_by_token(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    start, end = day_range(request.query_params.get("start"), request.query_params.get("end"))
    await ctx.gate.flush()
    rows = await ctx.gate.usage.repo.totals(org.id, start, end, ("token_id",))
    return json_response({"organization_id": org.id, "start": start, "end": end, "data": [_money(r) for r in rows]})


# the usage explorer's dimensions: the API's names -> the rollups' columns (and the rows' keys)
SERIES_GROUPS = {"day": "day", "model": "model_id", "token": "token_id", "task": "task", "status": "status"}
SERIES_FILTERS = {"model": "model_id", "token": "token_id", "task": "task", "status": "status"}
_GROUP_NAMES = {c: n for n, c in SERIES_GROUPS.items()}


def _series_query(request: Request) -> tuple[tuple[str, ...], dict[str, str]]:
    """`group_by` (comma-separated, in the order given) and the exact-value filters, checked: a 400 names the
    parameter."""
    q = request.query_params
    raw = q.get("group_by") or "day"
    names = [n.strip() for n in raw.split(",")]
    bad = [n for n in names if n not in SERIES_GROUPS]
    if bad or len(set(names)) != len(names):
        raise InvalidRequest(f"'group_by' takes a comma-separated list of {', '.join(SERIES_GROUPS)}, each once; "
                             f"got '{raw[:100]}'.", param="group_by")
    where: dict[str, str] = {}
    for name, column in SERIES_FILTERS.items():
        value = q.get(name)
        if not value:
            continue
        if len(value) > 200 or "\x00" in value:  # PostgreSQL text holds no NUL
            raise InvalidRequest(f"'{name}' must be at most 200 characters, without NUL.", param=name)
        if name == "status" and value not in ("ok", "failed"):
            raise InvalidRequest("'status' is ok or failed.", param="status")
        where[column] = "" if name == "token" and value == "none" else value  # '' : calls without a key
    return tuple(SERIES_GROUPS[n] for n in names), where


@router.get(ORG + "/usage/series",
            summary="Usage sums (requests, tokens, spend, failures, mean latency) over ?start=&end= grouped by "
                    "?group_by=day,model,token,task,status and filtered by ?model=&token=&task=&status=")
async def usage_series(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    start, end = day_range(request.query_params.get("start"), request.query_params.get("end"))
    by, where = _series_query(request)
    await ctx.gate.flush()  # read your own writes: this replica's queued rows first
    rows = await ctx.gate.usage.repo.series(org.id, start, end, by, where)
    names = {t.id: t.name for t in await TokenRepo(ctx.store).list(org.id)} if "token_id" in by else {}
    data = [_series_row(r, names, "token_id" in by) for r in rows]
    totals = {k: sum(r[k] for r in rows) for k in ("requests", "succeeded", "price_micros", "input_tokens",
                                                     "output_tokens", "flagged", "latency_ms")}
    filters = {name: request.query_params[name] for name in SERIES_FILTERS if request.query_params.get(name)}
    return json_response({"object": "usage.series", "organization_id": org.id, "start": start, "end": end,
                          "group_by": [_GROUP_NAMES[c] for c in by],
                          "filters": filters, "totals": _series_row(totals, names, False), "data": data})


def _series_row(row: dict[str, Any], names: dict[str, str], keyed: bool) -> dict[str, Any]:
    out = _money({k: v for k, v in row.items() if k != "latency_ms"})
    total = int(row.get("latency_ms") or 0)
    out["latency_ms_total"] = total
    out["latency_ms_mean"] = round(total / out["requests"], 1) if out["requests"] else None
    if keyed:
        out["token_name"] = names.get(out["token_id"]) if out["token_id"] else None
    return out


def _money(row: dict[str, Any]) -> dict[str, Any]:
    out = {"requests": 0, "succeeded": 0, "price_micros": 0, "input_tokens": 0, "output_tokens": 0, "flagged": 0,
           **{k: v for k, v in row.items() if v is not None or k == "token_id"}}
    out["failed"] = out["requests"] - out["succeeded"]
    out["cost_usd"] = dollars(out["price_micros"])
    return out


@router.get(ORG + "/billing/rates", summary="The org's plan limits and what each model costs it")
async def rates(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    limits = _limits(ctx.gate.limits.rules.get(org.plan, ()) if not ctx.gate.passthrough else ())
    prices = price_list(None if ctx.gate.passthrough else ctx.gate.prices, ctx.catalog)
    allowed = [m for m in prices["models"] if not m.get("plans") or org.plan in m["plans"]
               or org.plan == UNLIMITED]
    return json_response({"organization_id": org.id, "plan": org.plan, "limits": limits, "models": allowed,
                          "studio": prices["studio"], "currency": "usd"})


def _limits(rules: Any, *, describe: bool = False) -> list[dict[str, Any]]:
    return [{"scope": r.scope, "class": r.cls, "kind": r.kind, "window": "second" if r.seconds == 1 else "minute",
             "count": r.count, "unit": r.unit, **({"describe": r.describe()} if describe else {})} for r in rules]


@router.get("/api/plans", summary="The plans in force: each one's limits, the models kept to it, how many orgs are on "
                                  "it (operator)")
async def plans(request: Request) -> Response:
    ctx, _ = await _operator(request, sc.ADMIN_READ)
    configured = {**default_plans(), **ctx.settings.plans}
    on_plan: dict[str, int] = {}
    for org in await OrgRepo(ctx.store).list():
        on_plan[org.plan] = on_plan.get(org.plan, 0) + 1
    models = price_list(ctx.gate.prices, ctx.catalog)["models"]
    data = [{"object": "plan", "name": name, "description": configured[name].description if name in configured else None,
             "unlimited": name == UNLIMITED, "limits": _limits(rules, describe=True), "organizations": on_plan.get(name, 0),
             "models_only_on_plans": sorted(m["model_id"] for m in models if m.get("plans") and name in m["plans"])}
            for name, rules in sorted(ctx.gate.limits.rules.items())]
    return json_response({"object": "list", "data": data,
                          "key_min_balance_cents": ctx.settings.key_min_balance_cents,
                          "request_log_retention_days": ctx.settings.request_log_retention_days})


# ---------------------------------------------------------------- content filter policy

async def _filter_change(request: Request, org_id: str, create: bool) -> Response:
    ctx, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    repo = FilterRepo(ctx.store)
    current = None
    if create:
        body: Any = await parse_json(request, FilterPolicyBody)
        action, categories = body.action, body.categories
    else:
        body = await parse_json(request, FilterPolicyPatch)
        current = await repo.get(org.id)
        if current is None:
            raise NotFound("This organization has no content filter policy; create one with POST.",
                           code="policy_not_found")
        action = body.action or current.action
        categories = body.categories if "categories" in body.model_fields_set else (
            list(current.categories) if current.categories is not None else None)
    if action == "off" and org.plan not in FILTER_OFF_PLANS:
        raise PermissionDenied("Turning the content filter off is available on the enterprise plan only.",
                               param="action", code="plan_required")
    policy = await repo.put(org.id, action, categories, create=create)
    if policy is None:
        raise ModelyardError("This organization already has a content filter policy; change it with PATCH.",
                             status=409, code="conflict")
    ctx.gate.filter.remember(org.id, policy)
    await audit(request, principal, "content_filter." + ("create" if create else "update"), org_id=org.id,
                target=org.id, before=_policy(current), after=_policy(policy))
    return json_response(policy.public(), status=201 if create else 200)


def _policy(policy: Any) -> dict[str, Any] | None:
    return None if policy is None else {"action": policy.action, "categories": policy.public()["categories"]}


@router.get(ORG + "/content-filter-policy", summary="The org's content filter policy")
async def get_filter(request: Request, org_id: str) -> Response:
    ctx, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    policy = await FilterRepo(ctx.store).get(org.id)
    if policy is None:
        raise NotFound("This organization has no content filter policy.", code="policy_not_found")
    return json_response({**policy.public(), "recent_events": await FilterRepo(ctx.store).events(org.id, 20)})


@router.post(ORG + "/content-filter-policy", summary="Create the org's content filter policy", status_code=201,
             openapi_extra=json_body(FilterPolicyBody))
async def create_filter(request: Request, org_id: str) -> Response:
    return await _filter_change(request, org_id, create=True)


@router.patch(ORG + "/content-filter-policy", summary="Change the org's content filter policy",
              openapi_extra=json_body(FilterPolicyPatch))
async def patch_filter(request: Request, org_id: str) -> Response:
    return await _filter_change(request, org_id, create=False)


@router.delete(ORG + "/content-filter-policy", summary="Remove the org's content filter policy")
async def delete_filter(request: Request, org_id: str) -> Response:
    ctx, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    current = await FilterRepo(ctx.store).get(org.id)
    if current is None or not await FilterRepo(ctx.store).delete(org.id):
        raise NotFound("This organization has no content filter policy.", code="policy_not_found")
    ctx.gate.filter.remember(org.id, None)
    await audit(request, principal, "content_filter.delete", org_id=org.id, target=org.id, before=_policy(current))
    return json_response({"organization_id": org.id, "deleted": True})
