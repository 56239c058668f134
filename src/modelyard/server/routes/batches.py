"""OpenAI's Batch API: create, list, retrieve, cancel (the work itself runs in batches/ on the job queue)."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidRequest
from ...pipeline import scopes as sc
from ..body import parse_object
from ..render import app_context, base_url, json_response

router = APIRouter(tags=["OpenAI"])
_CREATE_DOC = {"type": "object", "required": ["input_file_id", "endpoint", "completion_window"], "properties": {
    "input_file_id": {"type": "string"}, "endpoint": {"type": "string", "examples": ["/v1/chat/completions"]},
    "completion_window": {"type": "string", "enum": ["24h"]},
    "metadata": {"type": "object", "additionalProperties": {"type": "string"}},
    "output_expires_after": {"type": "object", "properties": {"anchor": {"type": "string", "enum": ["created_at"]},
                                                              "seconds": {"type": "integer"}}}}}


@router.post("/batches", summary="Create a batch from an uploaded .jsonl file",
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": _CREATE_DOC}}}})
async def create_batch(request: Request) -> Response:
    ctx = app_context(request)
    # creating admits no work: each line is admitted (and counted in the `job` class) when it is queued
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    body = await parse_object(request)
    batch = await ctx.batches.create(principal, body, base_url(request))
    return json_response(await ctx.batches.public(batch))


@router.get("/batches", summary="List your batches (newest first)")
async def list_batches(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    raw = request.query_params.get("limit", "20")
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("'limit' is an integer from 1 to 100.", param="limit")
    rows, more = await ctx.batches.list(principal, limit=int(raw), after=request.query_params.get("after") or None)
    data = [await ctx.batches.public(b) for b in rows]
    return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": more})


@router.get("/batches/{batch_id}", summary="Retrieve a batch")
async def get_batch(request: Request, batch_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(await ctx.batches.public(await ctx.batches.get(principal, batch_id)))


@router.post("/batches/{batch_id}/cancel", summary="Cancel a batch (finished lines are kept in its output)")
async def cancel_batch(request: Request, batch_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    return json_response(await ctx.batches.public(await ctx.batches.cancel(principal, batch_id)))
