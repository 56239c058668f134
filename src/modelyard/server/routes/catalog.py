"""Platform routes: the model catalog (what the caller's plan may use, and how to call it) and prompt rewrite."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...listing import CatalogQuery, catalog_entries, one_entry
from ...pipeline import scopes as sc
from ...pipeline.regions import region_for
from ...prompts import RewriteRequest, rewrite
from ..body import parse_json
from ..openapi import json_body
from ..render import app_context, json_response
from .jobs import error_body

router = APIRouter(tags=["Platform"])
# the platform API's envelope (code, message, type, param), as the job API answers
ERRORS = (error_body, ["/api/catalog", "/api/prompt-rewrite"])


@router.get("/api/catalog", summary="The models your plan may use: status, regions, price, parameters per task, "
                                    "limits and measured latency; filter with ?type=&task=&q=")
async def catalog(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    query = CatalogQuery.parse(request.query_params)
    return json_response({"object": "list", "data": await catalog_entries(ctx, principal.plan, query)})


@router.get("/api/catalog/{model:path}", summary="One model's catalog entry")
async def catalog_model(request: Request, model: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(await one_entry(ctx, principal.plan, model))


@router.post("/api/prompt-rewrite", summary="Enhance a prompt for a task (billed as a chat call on the model used)",
             openapi_extra=json_body(RewriteRequest))
async def prompt_rewrite(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    req = await parse_json(request, RewriteRequest)
    region = region_for(request, ctx.settings.region_hosts)
    return json_response(await rewrite(ctx, principal, req, client=request, region=region))
