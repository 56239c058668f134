"""fal queue routes: submit at /fal/{slug}, then status, result, cancel and batch status, as fal-client expects."""

from __future__ import annotations

import re

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...catalog import Model
from ...errors import InvalidRequest, NotFound
from ...jobs.queue import Job
from ...pipeline import scopes as sc
from ...pipeline.regions import region_for
from ...protocols import fal
from ...types import Task
from ...context import AppContext
from ..body import parse_object
from ..render import app_context, base_url, json_response

router = APIRouter(tags=["fal queue"])
# the error envelope this face's clients read, under these path prefixes (registered by create_app)
ERRORS = (fal.error_body, ["/fal/"])
# .../requests/{id}, .../requests/{id}/status, .../requests/{id}/cancel, with or without an {owner}/{app} before
_REQUEST_PATH = re.compile(r"^(?:.+/)?requests/([A-Za-z0-9_\-]{1,64})(/status|/cancel)?/?$")
BATCH_LIMIT = 50


def resolve_slug(ctx: AppContext, path: str) -> tuple[Model, str]:
    """Configured slugs first (longest wins), then `modelyard/<model id>`, then model ids and aliases."""
    path = path.strip("/")
    for slug in sorted(ctx.settings.fal_slugs, key=len, reverse=True):
        if path == slug or path.startswith(slug + "/"):
            return ctx.catalog.get(ctx.settings.fal_slugs[slug], param="model"), path[len(slug):].strip("/")
    name = path.removeprefix("modelyard/")
    parts = name.split("/")
    for cut in range(len(parts), 0, -1):
        model = ctx.catalog.find("/".join(parts[:cut]))
        if model is not None:
            return model, "/".join(parts[cut:])
    raise NotFound(f"No model answers at '{path}'. Every model answers at modelyard/<model id>; see "
                   f"/api/model-status for configured slugs.", code="application_not_found")


def slugs_of(ctx: AppContext, model: Model) -> list[str]:
    return [f"modelyard/{model.id}", *sorted(s for s, m in ctx.settings.fal_slugs.items() if m == model.id)]


def _urls(request: Request, job_id: str) -> dict[str, str]:
    base = base_url(request).rstrip("/") + f"/fal/requests/{job_id}"
    return {"response_url": base, "status_url": base + "/status", "cancel_url": base + "/cancel"}


async def _result(request: Request, job: Job) -> Response:
    ctx = app_context(request)
    headers = {"x-fal-request-id": job.id}
    if not job.final:
        pos = await ctx.jobs.queue.queue_position(job) if job.status == "pending" else None
        return json_response(fal.status_body(job, pos, False), status=202, headers=headers)
    if job.status == "completed":
        return json_response(fal.result_body(Task(job.task), ctx.jobs.result(job, base_url(request))), headers=headers)
    err = job.error or {}
    status = int(err.get("status") or (400 if job.status == "cancelled" else 502))
    body = {"detail": err.get("message") or job.status, "error_type": err.get("code") or job.status}
    return json_response(body, status=status, headers=headers)


@router.post("/fal/requests/batch", summary="Status of up to 50 requests")
async def batch_status(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    body = await parse_object(request)
    ids = body.get("request_ids", body.get("ids"))
    if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
        raise InvalidRequest("'request_ids' is a list of request ids.", param="request_ids")
    if len(ids) > BATCH_LIMIT:
        raise InvalidRequest(f"'request_ids' takes at most {BATCH_LIMIT} ids.", param="request_ids")
    found = {j.id: j for j in await ctx.jobs.queue.get_many(ids, org_id=principal.org_id)}
    out = []
    for rid in ids:
        job = found.get(rid)
        if job is None:
            out.append({"request_id": rid, "status": "NOT_FOUND"})
            continue
        pos = await ctx.jobs.queue.queue_position(job) if job.status == "pending" else None
        out.append(fal.status_body(job, pos, False))
    return json_response({"requests": out})


@router.get("/fal/{path:path}", summary="Status (…/requests/{id}/status) or result (…/requests/{id})")
async def get_request(request: Request, path: str) -> Response:
    ctx = app_context(request)
    m = _REQUEST_PATH.match(path)
    if m is None or m.group(2) == "/cancel":
        raise NotFound(f"Unknown route: GET /fal/{path}", code="unknown_route")
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    job = await ctx.jobs.get(m.group(1), principal)
    if m.group(2) is None:
        return await _result(request, job)
    logs = request.query_params.get("logs", "0") in ("1", "true")
    pos = await ctx.jobs.queue.queue_position(job) if job.status == "pending" else None
    return json_response(fal.status_body(job, pos, logs), status=200 if job.final else 202,
                         headers={"x-fal-request-id": job.id})


@router.put("/fal/{path:path}", summary="Cancel (…/requests/{id}/cancel)")
async def cancel_request(request: Request, path: str) -> Response:
    ctx = app_context(request)
    m = _REQUEST_PATH.match(path)
    if m is None or m.group(2) != "/cancel":
        raise NotFound(f"Unknown route: PUT /fal/{path}", code="unknown_route")
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    job = await ctx.jobs.queue.get(m.group(1), org_id=principal.org_id)
    if job is None:
        return json_response({"status": "NOT_FOUND"}, status=404)
    job, outcome = await ctx.jobs.cancel(job.id, principal)
    if outcome == "final":
        return json_response({"status": "ALREADY_COMPLETED"}, status=400)
    return json_response({"status": "CANCELLATION_REQUESTED"}, status=202)


@router.post("/fal/{path:path}", summary="Submit to a model by fal slug (queued; `sync_mode: true` waits)")
async def submit(request: Request, path: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    # fal-client's `run` posts to FAL_RUN_HOST: point it at <host>/fal/run and the call waits for its result
    blocking = path.startswith("run/")
    model, subpath = resolve_slug(ctx, path.removeprefix("run/"))
    args = await parse_object(request)
    task = fal.pick_task(model.tasks, subpath, args)
    payload = fal.to_payload(task, args)
    webhook = request.query_params.get("fal_webhook") or None
    job = await ctx.jobs.submit(principal, model, task, payload, face="fal", base_url=base_url(request), client=request,
                                region=region_for(request, ctx.settings.region_hosts), webhook_url=webhook,
                                extra_meta={"slug": path})
    if blocking or args.get("sync_mode") is True:
        job = await ctx.jobs.wait(job, ctx.settings.fal_sync_timeout_seconds)
        if job.final:
            return await _result(request, job)
    position = await ctx.jobs.queue.queue_position(job) if job.status == "pending" else 0
    return json_response({"request_id": job.id, **_urls(request, job.id), "status": "IN_QUEUE",
                          "queue_position": position}, headers={"x-fal-request-id": job.id})
