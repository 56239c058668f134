"""The job API: create, get, list, cancel; and each org's webhook signing secret."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidRequest, ModelyardError
from ...jobs.tasks import job_request
from ...pipeline import scopes as sc
from ...pipeline.regions import region_for
from ..audit import audit
from ..body import parse_object
from ..render import app_context, base_url, json_response

router = APIRouter(tags=["Jobs"])
_CREATE_DOC = {"type": "object", "required": ["model_id", "task", "payload"], "properties": {
    "model_id": {"type": "string"}, "task": {"type": "string", "examples": ["text-to-image", "fal/text-to-image"]},
    "payload": {"type": "object"}, "webhook_url": {"type": "string"},
    "priority": {"type": "integer", "minimum": -100, "maximum": 100},
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": 20}}}


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """The job API's envelope: code, message, type (`not_found_error` for 404s), plus the field at fault."""
    kind = "not_found_error" if exc.status == 404 else exc.type
    return {"error": {"code": exc.code, "message": exc.message, "type": kind, "param": exc.param}}


# the error envelope this face's clients read, under these path prefixes (registered by create_app)
ERRORS = (error_body, ["/api/jobs", "/api/webhook-secret"])


def _int(body: dict[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"'{name}' is an integer from {low} to {high}.", param=name)
    return value


@router.post("/api/jobs", summary="Create a job", status_code=201,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_DOC}}}})
async def create_job(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    body = await parse_object(request)
    model, task, payload = job_request(body, ctx.catalog)
    webhook = body.get("webhook_url")
    if webhook is not None and not isinstance(webhook, str):
        raise InvalidRequest("'webhook_url' must be a string.", param="webhook_url")
    job = await ctx.jobs.submit(principal, model, task, payload, face="jobs", base_url=base_url(request),
                                client=request, region=region_for(request, ctx.settings.region_hosts),
                                priority=_int(body, "priority", 0, -100, 100),
                                max_attempts=_int(body, "max_attempts", ctx.settings.job_max_attempts, 1, 20),
                                webhook_url=webhook, payload_prefix="payload.")
    return json_response({"id": job.id, "queue_id": job.model, "status": job.status}, status=201)


@router.get("/api/jobs", summary="List your jobs (newest first)")
async def list_jobs(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    q = request.query_params
    limit_raw = q.get("limit", "20")
    if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 100:
        raise InvalidRequest("'limit' is an integer from 1 to 100.", param="limit")
    rows, more = await ctx.jobs.list(principal, status=q.get("status") or None, limit=int(limit_raw),
                                     after=q.get("after") or None)
    data = [ctx.jobs.public(j, base_url(request)) for j in rows]
    return json_response({"object": "list", "data": data, "has_more": more,
                          "last_id": data[-1]["id"] if data else None})


@router.get("/api/jobs/{job_id}", summary="Get a job: status, result or error, its request, queue position and cost")
async def get_job(request: Request, job_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(await ctx.jobs.detail(await ctx.jobs.get(job_id, principal), base_url(request)))


@router.post("/api/jobs/{job_id}/cancel", summary="Cancel a job (pending: at once; running: its work is stopped)")
async def cancel_job(request: Request, job_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    job, outcome = await ctx.jobs.cancel(job_id, principal)
    body = ctx.jobs.public(job, base_url(request))
    body["cancel"] = outcome  # cancelled | requested | final
    return json_response(body)


@router.get("/api/webhook-secret", summary="Your organization's webhook signing secret (Standard Webhooks)")
async def webhook_secret(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    # who read the signing secret, and when (never the secret itself)
    await audit(request, principal, "webhook_secret.read", org_id=principal.org_id, target=principal.org_id)
    return json_response({"object": "webhook_secret", "secret": ctx.jobs.webhook_secret(principal.org_id),
                          "scheme": "https://www.standardwebhooks.com"})

