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
    ticket = await ctx.gate.admit(principal, model, Task.CHAT, kind="chat")
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
        ticket.settle(None, deployment)
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
    ok = False
    try:
        if first is not None:
            yield encode_data(first)
            async for chunk in stream:
                yield encode_data(chunk)
        ok = True
    except ModelyardError as exc:
        yield encode_data(oa.error_body(exc))
    except Exception:
        log.exception("stream failed")
        yield encode_data(oa.error_body(InternalError("The stream failed on the server.")))
    finally:
        if ok:
            ticket.settle(None, deployment)
        else:
            ticket.fail()
        await stream.aclose()  # type: ignore[attr-defined]
