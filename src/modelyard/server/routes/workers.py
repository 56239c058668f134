"""Control-plane routes for remote workers: register, heartbeat, sign off, list."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ...bootstrap import DEFAULT_ORG
from ...errors import NotFound, PermissionDenied
from ...pipeline import scopes as sc
from ...workers.repo import WorkerRepo
from ..body import parse_json
from ..openapi import json_body
from ..render import app_context, json_response

router = APIRouter(tags=["Workers"])


class WorkerModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str = Field(min_length=1, max_length=200)
    type: str = "text"
    tasks: list[str] = Field(default_factory=list)
    state: str | None = None


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._\-]+$")
    url: str = Field(pattern=r"^https?://[^\s/]+(/\S*)?$", max_length=500)
    region: str | None = Field(default=None, max_length=64)
    models: list[WorkerModel] = Field(min_length=1, max_length=200)
    # sealed at rest (store/secrets.py): 64 characters seal to 191, inside the column's 200 (workers send 43)
    secret: str = Field(min_length=32, max_length=64)


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: list[WorkerModel] | None = None


async def _worker_principal(request: Request) -> Any:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.WORKER)
    # Workers receive other organizations' traffic: only the operator may add them.
    if principal.org_name != DEFAULT_ORG:
        raise PermissionDenied("Only worker tokens of the operator's organization can register workers.")
    return ctx, principal


@router.post("/api/workers/register", summary="A worker joins (or rejoins) the control plane",
             openapi_extra=json_body(Registration))
async def register(request: Request) -> Response:
    ctx, principal = await _worker_principal(request)
    body = await parse_json(request, Registration)
    worker = await WorkerRepo(ctx.store).register(principal.org_id, body.name, body.url, body.region,
                                                  [m.model_dump(exclude_none=True) for m in body.models], body.secret)
    await ctx.workers.sync()
    return json_response({"id": worker.id, "name": worker.name,
                          "heartbeat_seconds": ctx.settings.worker_heartbeat_seconds,
                          "timeout_seconds": ctx.settings.worker_timeout_seconds})


@router.post("/api/workers/{worker_id}/heartbeat", summary="A worker is alive", openapi_extra=json_body(Heartbeat))
async def heartbeat(request: Request, worker_id: str) -> Response:
    ctx, principal = await _worker_principal(request)
    body = await parse_json(request, Heartbeat)
    models = [m.model_dump(exclude_none=True) for m in body.models] if body.models is not None else None
    if not await WorkerRepo(ctx.store).heartbeat(worker_id, principal.org_id, models):
        raise NotFound(f"No worker '{worker_id}'; register again.")
    return json_response({"ok": True})


@router.post("/api/workers/{worker_id}/deregister", summary="A worker leaves")
async def deregister(request: Request, worker_id: str) -> Response:
    ctx, principal = await _worker_principal(request)
    if not await WorkerRepo(ctx.store).set_offline(worker_id, principal.org_id):
        raise NotFound(f"No worker '{worker_id}'.")
    await ctx.workers.sync()
    return json_response({"ok": True})


@router.get("/api/workers", summary="Workers registered by this organization")
async def list_workers(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.ADMIN_READ)
    rows = await WorkerRepo(ctx.store).list(principal.org_id)
    return json_response({"data": [w.public(timeout=ctx.settings.worker_timeout_seconds) for w in rows]})
