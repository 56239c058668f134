"""OpenAI routes for text beyond chat: legacy completions, and the Responses API (stored, streamed, hosted search)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response

from ...responses import turn as ra
from ...backends.base import ChatChunk
from ...backends.via_chat import complete_via_chat, stream_via_chat
from ...catalog import Deployment
from ...errors import InvalidRequest, NotFound
from ...pipeline import scopes as sc
from ...pipeline.regions import region_for
from ...protocols.openai import responses_events as orp
from ...protocols.sse import DONE
from ...protocols.openai.schema import ChatRequest
from ...types import Task
from ...protocols.openai.completions import CompletionRequest
from ...protocols.openai.responses import ResponsesRequest
from ..body import parse_json
from ..openapi import json_body
from ..render import SSE_HEADERS, app_context, json_response
from ..streaming import EventStream
from . import async_jobs
from .openai import ChatFraming

router = APIRouter(tags=["OpenAI"])


@router.post("/completions", summary="Create a completion", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    """Native where a deployment completes raw prompts (llama.cpp, OpenAI-compatible upstreams); otherwise each
    prompt is served as a one-message chat (see backends/via_chat.py)."""
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    req = await parse_json(request, CompletionRequest)
    if (req.model_extra or {}).get("async") is not None:  # never forwarded upstream as an unknown field
        raise InvalidRequest("'async' is not available on completions; send the prompt to /v1/chat/completions "
                             "with \"async\": true, or to /api/jobs.", param="async", code="unsupported_parameter")
    model = ctx.catalog.get(req.model, param="model")
    native = Task.COMPLETION in model.tasks and ctx.router.serves(model, Task.COMPLETION)
    model = ctx.router.resolve(req.model, Task.COMPLETION if native else Task.CHAT)
    region = region_for(request, ctx.settings.region_hosts)
    served: list[Deployment] = []

    async def chat(c: ChatRequest) -> dict[str, Any]:
        resp, d = await ctx.router.chat(model, c, region)
        served.append(d)
        return resp

    async def open_chat(c: ChatRequest) -> AsyncIterator[ChatChunk]:
        first, stream, d = await ctx.router.open_stream(model, c, region)
        served.append(d)
        return _prepend(first, stream)

    async with ctx.calls.start(principal, model, Task.COMPLETION, req, client=request) as call:
        if not req.stream:
            work = ctx.router.run(model, Task.COMPLETION, req, region) if native else _via_chat(req, model.id, chat, served)
            resp, _ = await call.run(work)
            return json_response(resp)
        if native:
            opening = ctx.router.open_stream(model, req, region, task=Task.COMPLETION)
        else:
            opening = _open_via_chat(req, model.id, open_chat, served)
        first, stream, deployment = await call.open(opening)
    return EventStream(call.relay(first, stream, deployment, ChatFraming()), end=DONE, headers=SSE_HEADERS)


async def _via_chat(req: CompletionRequest, model_id: str, chat: Any, served: list[Deployment]
                    ) -> tuple[dict[str, Any], Deployment]:
    resp = await complete_via_chat(req, model_id, chat)
    return resp, served[-1]


async def _open_via_chat(req: CompletionRequest, model_id: str, open_chat: Any, served: list[Deployment]
                         ) -> tuple[ChatChunk | None, AsyncIterator[ChatChunk], Deployment]:
    """The first chunk is pulled before answering, so a failure to start keeps its HTTP status."""
    stream = stream_via_chat(req, model_id, open_chat)
    try:
        first = await stream.__anext__()
    except StopAsyncIteration:
        first = None
    return first, stream, served[0]


async def _prepend(first: ChatChunk | None, stream: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    try:
        if first is not None:
            yield first
            async for chunk in stream:
                yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


@router.post("/responses", summary="Create a model response", openapi_extra=json_body(ResponsesRequest))
async def create_response(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    req = await parse_json(request, ResponsesRequest)
    model = ctx.router.resolve(req.model, Task.CHAT)
    turn = await ra.prepare(req, principal.org_id, ctx.responses, ctx.search)
    if req.async_:  # a job running the turn's chat; hosted tools were refused above (the API reference's rule)
        job = await async_jobs.submit(request, principal, model, Task.CHAT, turn.chat)
        return json_response({"id": job.id, "object": "response.async", "status": job.status,
                              "created": int(job.created_at)}, status=202)
    region = region_for(request, ctx.settings.region_hosts)
    # the turn's chat holds the caller's input (and instructions): what the filter reads and the estimate prices
    async with ctx.calls.start(principal, model, Task.CHAT, turn.chat, client=request, field="input") as call:
        if not req.stream:
            chat, deployment = await call.run(ra.answer(turn, model, region, ctx.router, ctx.search))
            return json_response(ra.complete(turn, chat, deployment.model_id, ctx.responses))
        first, stream, deployment = await call.open(ra.open_answer(turn, model, region, ctx.router, ctx.search))
    framing = ra.ResponseFraming(turn, deployment.model_id, ctx.responses)
    return EventStream(call.relay(first, stream, deployment, framing), headers=SSE_HEADERS)


@router.get("/responses/{response_id}", summary="Retrieve a stored model response")
async def get_response(request: Request, response_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    stored = await ctx.responses.get(principal.org_id, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response(stored.body)


@router.delete("/responses/{response_id}", summary="Delete a stored model response")
async def delete_response(request: Request, response_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    if not await ctx.responses.delete(principal.org_id, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items", summary="List a stored response's input items")
async def list_input_items(request: Request, response_id: str, limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc", after: str | None = None) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    stored = await ctx.responses.get(principal.org_id, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response(orp.list_page(stored.input, limit=limit, order=order, after=after))
