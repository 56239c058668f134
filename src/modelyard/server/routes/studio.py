"""Studio routes: POST /api/v1/generate queues a job for a mode; GET /api/v1/status/{job_id} reports it."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import NotFound
from ...pipeline import scopes as sc
from ...pipeline.units import Units
from ...pipeline.regions import region_for
from ...protocols import studio
from ..body import parse_object
from ..render import app_context, base_url, json_response

router = APIRouter(tags=["Studio"])
# the error envelope this face's clients read, under these path prefixes (registered by create_app)
ERRORS = (studio.error_body, ["/api/v1/generate", "/api/v1/status/"])
_DOC = {"type": "object", "required": ["mode", "positive_prompt"], "properties": {
    "mode": {"type": "string", "enum": list(studio.MODES)},
    "positive_prompt": {"type": "string", "maxLength": studio.MAX_PROMPT},
    "negative_prompt": {"type": "string", "maxLength": studio.MAX_PROMPT},
    "resolution": {"type": "string", "enum": ["1k", "2k", "4k", "720p", "1080p"]},
    "orientation": {"type": "string", "enum": ["square", "horizontal", "vertical"]},
    "aspect_ratio": {"type": "string", "enum": ["1:1", "2:3", "3:2", "3:4", "4:3", "9:16", "16:9"]},
    "duration": {"type": "integer", "enum": list(studio.DURATIONS)},
    "image": {"type": "string", "description": "base64, with or without a data URL prefix"},
    "images": {"type": "array", "minItems": 1, "maxItems": 12, "items": {"type": "string"}}}}


@router.post("/api/v1/generate", summary="Start a generation job (t2i, i2i, t2v, i2v and their pro variants)",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _DOC}}}})
async def generate(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    spec = studio.parse_generate(await parse_object(request))
    configured = ctx.settings.studio_models.get(spec.mode)
    model = ctx.catalog.get(configured, param="mode") if configured else ctx.catalog.first_for(spec.task)
    if model is None:
        raise NotFound(f"No model here serves mode {spec.mode}.", param="mode", code="model_not_found")
    estimate = Units(mode=spec.mode, images=spec.images, image_size=spec.image_size,
                     video_seconds=spec.video_seconds, video_resolution=spec.video_resolution)
    job = await ctx.jobs.submit(principal, model, spec.task, spec.payload, face="studio", base_url=base_url(request),
                                client=request, region=region_for(request, ctx.settings.region_hosts), estimate=estimate,
                                extra_meta={"mode": spec.mode}, field="positive_prompt")
    return json_response({"job_id": job.id, "gateway_job_id": job.id, "status": "QUEUED", "mode": spec.mode})


@router.get("/api/v1/status/{job_id}", summary="A generation job's status; result URLs when completed")
async def status(request: Request, job_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    job = await ctx.jobs.get(job_id, principal)
    return json_response(studio.status_body(job, ctx.jobs.result(job, base_url(request))))
