"""The request log and the audit log, read by the console: the operator sees every org's, an org admin its own."""

from __future__ import annotations

import base64
from datetime import date, datetime, timezone
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidRequest, NotFound
from ...pipeline import scopes as sc
from ...store.audit_repo import AuditRepo
from ..render import json_response
from .orgs import ORG, _operator, _org_for

router = APIRouter(tags=["Logs"])
MAX_LIMIT = 500


def _time(request: Request, name: str) -> datetime | None:
    value = request.query_params.get(name)
    if not value:
        return None
    try:
        if len(value) == 10:
            d = date.fromisoformat(value)
            return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a date (YYYY-MM-DD) or an ISO 8601 time.", param=name) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def _page(request: Request) -> tuple[int, tuple[datetime, str] | None]:
    raw = request.query_params.get("limit") or "50"
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest(f"'limit' must be a whole number from 1 to {MAX_LIMIT}.", param="limit")
    after = request.query_params.get("after")
    cursor = None
    if after:
        try:
            at, _, entry = base64.urlsafe_b64decode(after.encode() + b"==").decode().partition("|")
            cursor = (datetime.fromisoformat(at), entry)
        except ValueError:
            raise InvalidRequest("'after' is not a cursor this API gave out.", param="after") from None
    return int(raw), cursor


def _listing(rows: list[dict[str, Any]], limit: int) -> Response:
    more = len(rows) > limit
    rows = rows[:limit]
    cursor = None
    if more and rows:
        cursor = base64.urlsafe_b64encode(f"{rows[-1]['at']}|{rows[-1]['id']}".encode()).decode().rstrip("=")
    return json_response({"object": "list", "data": rows, "has_more": more, "next_after": cursor})


async def _requests(request: Request, org_id: str | None) -> Response:
    ctx = request.app.state.ctx
    limit, after = _page(request)
    status = request.query_params.get("status")
    if status and status not in ("ok", "failed") and not (status.isascii() and status.isdigit() and len(status) == 3):
        raise InvalidRequest("'status' is ok, failed or an HTTP status code.", param="status")
    await ctx.gate.flush()  # this replica's queued rows first: read your own calls
    rows = await ctx.gate.requests.repo.list(org_id, model=request.query_params.get("model"), status=status,
                                              start=_time(request, "from"), end=_time(request, "to"),
                                              after=after, limit=limit + 1)
    return _listing(rows, limit)


async def _one_request(request: Request, org_id: str | None, request_id: str) -> Response:
    ctx = request.app.state.ctx
    await ctx.gate.flush()
    entries = await ctx.gate.requests.repo.get(request_id, org_id)
    if not entries:
        raise NotFound(f"No request '{request_id}' in the request log.", code="request_not_found")
    return json_response({"object": "request_log.request", "request_id": request_id, "calls": entries})


@router.get("/api/request-log", summary="Every org's request log (operator): ?model=&status=&from=&to=&after=&limit=")
async def all_requests(request: Request) -> Response:
    await _operator(request, sc.ADMIN_READ)
    return await _requests(request, None)


@router.get("/api/request-log/{request_id}", summary="One request's calls, with bodies where kept (operator)")
async def any_request(request: Request, request_id: str) -> Response:
    await _operator(request, sc.ADMIN_READ)
    return await _one_request(request, None, request_id)


@router.get(ORG + "/request-log", summary="The org's request log, newest first: ?model=&status=&from=&to=&after=&limit=")
async def org_requests(request: Request, org_id: str) -> Response:
    _, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return await _requests(request, org.id)


@router.get(ORG + "/request-log/{request_id}", summary="One of the org's requests, with bodies where kept")
async def org_request(request: Request, org_id: str, request_id: str) -> Response:
    _, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return await _one_request(request, org.id, request_id)


async def _audit(request: Request, org_id: str | None, *, emails: bool = False) -> Response:
    ctx = request.app.state.ctx
    limit, after = _page(request)
    rows = await AuditRepo(ctx.store).list(org_id, action=request.query_params.get("action"),
                                           start=_time(request, "from"), end=_time(request, "to"), after=after,
                                           limit=limit + 1)
    if emails and ctx.accounts is not None:  # the operator's view names the people who acted
        ids = {r["actor_id"][5:] for r in rows if r["actor_kind"] == "user" and r["actor_id"].startswith("user:")}
        found = await ctx.accounts.repo.emails(sorted(ids))
        for r in rows:
            r["actor_email"] = found.get(r["actor_id"][5:]) if r["actor_kind"] == "user" else None
    return _listing(rows, limit)


@router.get("/api/audit-log", summary="Admin actions across the installation (operator): ?organization=&action=&from=&to="
                                      "&after=; a person's entries name them (actor_email)")
async def audit_log(request: Request) -> Response:
    await _operator(request, sc.ADMIN_READ)
    return await _audit(request, request.query_params.get("organization") or None, emails=True)


@router.get(ORG + "/audit-log", summary="Admin actions on this org: ?action=&from=&to=&after=&limit=")
async def org_audit_log(request: Request, org_id: str) -> Response:
    _, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return await _audit(request, org.id)
