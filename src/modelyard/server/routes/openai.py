"""OpenAI routes: models and chat completions."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...catalog import Model
from ...errors import ModelyardError
from ...pipeline import scopes as sc
from ...pipeline.billing import chat_units, chunk_usage
from ...pipeline.units import Units
from ...pipeline.regions import region_for
from ...protocols.openai import wire as oa
from ...protocols.sse import DONE, encode_data
from ...protocols.openai.schema import ChatRequest
from ...types import Task
from ..body import parse_json
from ..openapi import json_body
from ..render import SSE_HEADERS, app_context, json_response
from ..streaming import EventStream
from . import async_jobs

router = APIRouter(tags=["OpenAI"])


class ChatFraming:
    """OpenAI's chat SSE: chunks go out as they are (whole blocks of an OpenAI-compatible upstream's own events
    included); the closing `data: [DONE]` is the EventStream's end. The usage chunk, when the client asked for
    one, prices the call."""

    __slots__ = ("_usage",)

    def __init__(self) -> None:
        self._usage: dict[str, Any] | None = None

    def head(self) -> bytes:
        return b""

    def chunk(self, chunk: Any) -> bytes:
        if self._usage is None:
            self._usage = chunk_usage(chunk)
        return encode_data(chunk)

    def tail(self) -> bytes:
        return b""

    def error(self, exc: ModelyardError) -> bytes:
        return encode_data(oa.error_body(exc))

    def usage(self) -> Units | None:
        return chat_units(self._usage, None) if self._usage else None


async def _model_entry(request: Request, model: Model) -> dict[str, Any]:
    ctx = app_context(request)
    state = await ctx.router.model_state(model)
    return oa.model_object(model.id, created=model.created, owned_by=model.owned_by, type_=model.type,
                           tasks=sorted(t.value for t in model.tasks), aliases=list(model.aliases),
                           status=state.value, description=model.description)


@router.get("/models", summary="List models")
async def list_models(request: Request) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    return json_response({"object": "list", "data": [await _model_entry(request, m) for m in ctx.catalog]})


@router.get("/models/{model:path}", summary="Retrieve a model")
async def get_model(request: Request, model: str) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(await _model_entry(request, ctx.catalog.get(model, param="model")))


@router.post("/chat/completions", summary="Create a chat completion", openapi_extra=json_body(ChatRequest))
async def chat_completions(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    req = await parse_json(request, ChatRequest)
    model = ctx.router.resolve(req.model, Task.CHAT)
    if req.model_extra and "async" in req.model_extra and async_jobs.take_async(req):  # a dict lookup when absent
        return async_jobs.accepted(await async_jobs.submit(request, principal, model, Task.CHAT, req))
    region = region_for(request, ctx.settings.region_hosts)
    async with ctx.calls.start(principal, model, Task.CHAT, req, client=request) as call:
        if not req.stream:
            resp, _ = await call.run(ctx.router.chat(model, req, region))
            return json_response(resp)
        # our client reads OpenAI's SSE: an OpenAI-compatible upstream's events may pass as they are (raw_sse)
        first, stream, deployment = await call.open(ctx.router.open_stream(model, req, region, raw_sse=True))
    return EventStream(call.relay(first, stream, deployment, ChatFraming()), end=DONE, headers=SSE_HEADERS)
