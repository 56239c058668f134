"""OpenAI routes for text beyond chat: legacy completions, and the Responses API (stored, streamed, hosted search)."""

from __future__ import annotations

from typing import Any, AsyncIterator, Literal

from fastapi import APIRouter, Query
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ... import responses_api as ra
from ...backends.base import ChatChunk
from ...backends.via_chat import complete_via_chat, stream_via_chat
from ...catalog import Deployment
from ...errors import InvalidRequest, NotFound
from ...pipeline import scopes as sc
from ...pipeline.gate import Units
from ...pipeline.regions import region_for
from ...protocols import openai_responses as orp
from ...types import ChatRequest, Task
from ...types_completions import CompletionRequest
from ...types_responses import ResponsesRequest
from ..body import parse_json
from ..disconnect import unless_disconnected
from ..openapi import json_body
from ...pipeline.billing import chat_estimate
from .openai import SSE_HEADERS, _sse, json_response, served_by

router = APIRouter(tags=["OpenAI"])


def _units(body: dict[str, Any]) -> Units:
    usage = body.get("usage") or {}
    return Units(input_tokens=int(usage.get("prompt_tokens") or 0),
                 output_tokens=int(usage.get("completion_tokens") or 0))


@router.post("/completions", summary="Create a completion", openapi_extra=json_body(CompletionRequest))
async def completions(request: Request) -> Response:
    """Native where a deployment completes raw prompts (llama.cpp, OpenAI-compatible upstreams); otherwise each
    prompt is served as a one-message chat (see backends/via_chat.py)."""
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    req = await parse_json(request, CompletionRequest)
    if (req.model_extra or {}).get("async") is not None:  # never forwarded upstream as an unknown field
        raise InvalidRequest("'async' is not available on completions; send the prompt to /v1/chat/completions "
                             "with \"async\": true, or to /api/jobs.", param="async", code="unsupported_parameter")
    model = ctx.catalog.get(req.model, param="model")
    native = Task.COMPLETION in model.tasks and ctx.router.serves(model, Task.COMPLETION)
    model = ctx.router.resolve(req.model, Task.COMPLETION if native else Task.CHAT)
    region = region_for(request, ctx.settings.region_hosts)
    text = "\n".join(req.prompts or [])
    ticket = await ctx.gate.admit(principal, model, Task.COMPLETION, kind="completion", text=text or None,
                                  estimate=chat_estimate(req))
    served: list[Deployment] = []

    async def chat(c: ChatRequest) -> dict[str, Any]:
        resp, d = await ctx.router.chat(model, c, region)
        served.append(d)
        return resp

    async def open_chat(c: ChatRequest) -> AsyncIterator[ChatChunk]:
        first, stream, d = await ctx.router.open_stream(model, c, region)
        served.append(d)
        return _prepend(first, stream)

    try:
        if not req.stream:
            work = ctx.router.run(model, Task.COMPLETION, req, region) if native else _via_chat(req, model.id, chat, served)
            resp, deployment = await unless_disconnected(request, work)
        elif native:
            first, stream, deployment = await ctx.router.open_stream(model, req, region, task=Task.COMPLETION)
        else:
            # the first chunk is pulled before answering, so a failure to start keeps its HTTP status
            stream = stream_via_chat(req, model.id, open_chat)
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                first = None
            deployment = served[0]
    except BaseException:
        ticket.fail()
        raise
    if not req.stream:
        ticket.settle(_units(resp), deployment)
        return json_response(resp, headers={**served_by(deployment), **ticket.headers})
    return StreamingResponse(_sse(first, stream, ticket, deployment), media_type="text/event-stream",
                             headers={**SSE_HEADERS, **served_by(deployment), **ticket.headers})


async def _via_chat(req: CompletionRequest, model_id: str, chat: Any, served: list[Deployment]
                    ) -> tuple[dict[str, Any], Deployment]:
    resp = await complete_via_chat(req, model_id, chat)
    return resp, served[-1]


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
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    req = await parse_json(request, ResponsesRequest)
    model = ctx.router.resolve(req.model, Task.CHAT)
    turn = await ra.prepare(req, principal.org_id, ctx.responses, ctx.search)
    if req.async_:  # a job running the turn's chat; hosted tools were refused above (Casola's rule)
        from . import async_jobs

        request.state.principal = principal
        job = await async_jobs.submit(request, model, Task.CHAT, turn.chat)
        return json_response({"id": job.id, "object": "response.async", "status": job.status,
                              "created": int(job.created_at)}, status=202)
    region = region_for(request, ctx.settings.region_hosts)
    ticket = await ctx.gate.admit(principal, model, Task.CHAT, kind="responses", text=orp.search_query(req),
                                  estimate=chat_estimate(turn.chat))
    try:
        await ra.run_search(turn, ctx.search)
        if not req.stream:
            chat, deployment = await unless_disconnected(request, ctx.router.chat(model, turn.chat, region))
        else:
            first, stream, deployment = await ctx.router.open_stream(model, turn.chat, region)
    except BaseException:
        ticket.fail()
        raise
    if not req.stream:
        body = ra.complete(turn, chat, deployment.model_id, ctx.responses)
        ticket.settle(ra.units_of(body), deployment)
        return json_response(body, headers={**served_by(deployment), **ticket.headers})
    events = ra.events(turn, first, stream, deployment.model_id, ctx.responses, ticket, deployment)
    return StreamingResponse(events, media_type="text/event-stream",
                             headers={**SSE_HEADERS, **served_by(deployment), **ticket.headers})


@router.get("/responses/{response_id}", summary="Retrieve a stored model response")
async def get_response(request: Request, response_id: str) -> Response:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_READ)
    stored = await ctx.responses.get(principal.org_id, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response(stored.body)


@router.delete("/responses/{response_id}", summary="Delete a stored model response")
async def delete_response(request: Request, response_id: str) -> Response:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    if not await ctx.responses.delete(principal.org_id, response_id):
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response({"id": response_id, "object": "response", "deleted": True})


@router.get("/responses/{response_id}/input_items", summary="List a stored response's input items")
async def list_input_items(request: Request, response_id: str, limit: int = Query(20, ge=1, le=100),
                           order: Literal["asc", "desc"] = "desc", after: str | None = None) -> Response:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_READ)
    stored = await ctx.responses.get(principal.org_id, response_id)
    if stored is None:
        raise NotFound(f"Response with id '{response_id}' not found.", param="response_id")
    return json_response(orp.list_page(stored.input, limit=limit, order=order, after=after))
