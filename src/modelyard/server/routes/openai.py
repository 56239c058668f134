"""OpenAI routes: models and chat completions."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import orjson
from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...backends.base import ChatChunk
from ...catalog import Deployment, Model
from ...errors import InternalError, ModelyardError
from ...pipeline import scopes as sc
from ...pipeline.billing import chat_estimate, chat_units, chunk_events, chunk_usage, filter_text
from ...pipeline.gate import Ticket
from ...pipeline.regions import region_for
from ...protocols import openai as oa
from ...protocols.sse import DONE, encode_data
from ...types import ChatRequest, Task
from ..body import parse_json
from ..disconnect import unless_disconnected
from ..openapi import json_body
from ..streaming import EventStream

log = logging.getLogger(__name__)
router = APIRouter(tags=["OpenAI"])

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


async def _model_entry(request: Request, model: Model) -> dict[str, Any]:
    ctx = request.app.state.ctx
    state = await ctx.router.model_state(model)
    return oa.model_object(model.id, created=model.created, owned_by=model.owned_by, type_=model.type,
                           tasks=sorted(t.value for t in model.tasks), aliases=list(model.aliases),
                           status=state.value, description=model.description)


@router.get("/models", summary="List models")
async def list_models(request: Request) -> Response:
    ctx = request.app.state.ctx
    await ctx.auth.authenticate(request, sc.USER_READ)
    return json_response({"object": "list", "data": [await _model_entry(request, m) for m in ctx.catalog]})


@router.get("/models/{model:path}", summary="Retrieve a model")
async def get_model(request: Request, model: str) -> Response:
    ctx = request.app.state.ctx
    await ctx.auth.authenticate(request, sc.USER_READ)
    return json_response(await _model_entry(request, ctx.catalog.get(model, param="model")))


@router.post("/chat/completions", summary="Create a chat completion", openapi_extra=json_body(ChatRequest))
async def chat_completions(request: Request) -> Response:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    req = await parse_json(request, ChatRequest)
    req._relay_sse = True  # our client reads OpenAI's SSE: an OpenAI-compatible upstream's events pass as they are
    model = ctx.router.resolve(req.model, Task.CHAT)
    if req.model_extra and "async" in req.model_extra:  # a dict lookup: the hot path stays as it was
        from . import async_jobs

        if async_jobs.take_async(req):
            request.state.principal = principal
            return async_jobs.accepted(await async_jobs.submit(request, model, Task.CHAT, req))
    region = region_for(request, ctx.settings.region_hosts)
    text, field = filter_text(req) if ctx.gate.filters(principal.org_id) else (None, None)
    ticket = await ctx.gate.admit(principal, model, Task.CHAT, kind="chat", estimate=chat_estimate(req), text=text,
                                  field=field)
    try:
        if not req.stream:
            resp, deployment = await unless_disconnected(request, ctx.router.chat(model, req, region))
        else:
            # The router pulls the first chunk before we answer: failures to start keep their HTTP status, and may
            # move to another deployment; after that first chunk the stream is committed.
            first, stream, deployment = await ctx.router.open_stream(model, req, region)
    except BaseException:
        ticket.fail()
        raise
    if not req.stream:
        ticket.settle(chat_units(resp.get("usage"), ticket.estimate), deployment)
        return json_response(resp, headers={**served_by(deployment), **ticket.headers})
    return EventStream(_sse(first, stream, ticket, deployment), end=DONE,
                       headers={**SSE_HEADERS, **served_by(deployment), **ticket.headers})


def served_by(deployment: Deployment) -> dict[str, str]:
    return {"X-Modelyard-Model": deployment.model_id, "X-Modelyard-Deployment": deployment.name}


async def _sse(first: ChatChunk | None, stream: AsyncIterator[ChatChunk], ticket: Ticket,
               deployment: Deployment) -> AsyncIterator[bytes]:
    """Relay chunks as they come; an error after the first byte goes out as a final error event.

    The closing `data: [DONE]` is the EventStream's `end`, written with the end of the response.
    """
    failed = False  # the upstream or the server failed: not charged. A client hanging up is charged what it got.
    usage, chunks = None, 0  # the final chunk's usage prices the call; without it, chunks approximate tokens
    try:
        if first is not None:
            usage = chunk_usage(first)
            chunks += chunk_events(first) - 1  # a relayed block may hold many events
            yield encode_data(first)
            async for chunk in stream:
                chunks += chunk_events(chunk)
                if usage is None:
                    usage = chunk_usage(chunk)
                yield encode_data(chunk)
    except ModelyardError as exc:
        failed = True
        yield encode_data(oa.error_body(exc))
    except Exception:
        failed = True
        log.exception("stream failed")
        yield encode_data(oa.error_body(InternalError("The stream failed on the server.")))
    finally:
        if failed:
            ticket.fail()
        else:
            ticket.settle(chat_units(usage, ticket.estimate, chunks), deployment)
        await stream.aclose()  # type: ignore[attr-defined]
