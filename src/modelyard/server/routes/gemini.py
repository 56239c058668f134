"""Gemini routes under /v1beta: models, generateContent, streamGenerateContent, countTokens, embeddings."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter
from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from ...backends.base import ChatChunk
from ...catalog import Model
from ...errors import InvalidRequest, ModelyardError, NotFound
from ...pipeline import scopes as sc
from ...pipeline.billing import token_units
from ...pipeline.units import Units
from ...pipeline.tokens import count_tokens as count_prompt_tokens
from ...pipeline.regions import region_for
from ...protocols.gemini import inbound as gd
from ...protocols.gemini import schema as gs
from ...protocols.sse import encode_data
from ...types import Task
from ...protocols.openai.media import EmbeddingRequest
from ...context import AppContext
from ..body import parse_json
from ..render import SSE_HEADERS, app_context, json_response
from ..streaming import EventStream

router = APIRouter(tags=["Gemini"])
PREFIXES = ("/v1beta", "/api/v1beta")
# the error envelope this face's clients read, under these path prefixes (registered by create_app)
ERRORS = (gs.error_body, list(PREFIXES))

CHAT_METHODS = ["generateContent", "streamGenerateContent", "countTokens"]
EMBED_METHODS = ["embedContent", "batchEmbedContents"]


class _SSEWriter:
    """`alt=sse`: one `data:` event per partial response; a broken stream ends with an error event."""

    def __init__(self, encoder: gd.StreamEncoder) -> None:
        self.encoder = encoder

    def head(self) -> bytes:
        return b""

    def chunk(self, chunk: ChatChunk) -> bytes:
        return b"".join(encode_data(r) for r in self.encoder.feed(chunk))

    def tail(self) -> bytes:
        return b"".join(encode_data(r) for r in self.encoder.finish())

    def error(self, exc: ModelyardError) -> bytes:
        return encode_data(gs.error_body(exc))

    def usage(self) -> Units | None:
        return token_units(self.encoder.usage)


class _ArrayWriter:
    """Without `alt=sse`: one JSON array, streamed element by element; a broken stream's last element is the error."""

    def __init__(self, encoder: gd.StreamEncoder) -> None:
        self.encoder = encoder
        self.count = 0

    def _items(self, responses: list[dict[str, Any]]) -> bytes:
        out = b""
        for r in responses:
            out += (b"\r\n," if self.count else b"") + orjson.dumps(r)
            self.count += 1
        return out

    def head(self) -> bytes:
        return b"["

    def chunk(self, chunk: ChatChunk) -> bytes:
        return self._items(self.encoder.feed(chunk))

    def tail(self) -> bytes:
        return self._items(self.encoder.finish()) + b"]"

    def error(self, exc: ModelyardError) -> bytes:
        return self._items([gs.error_body(exc)]) + b"]"

    def usage(self) -> Units | None:
        return token_units(self.encoder.usage)


def _methods(model: Model) -> list[str]:
    return (CHAT_METHODS if Task.CHAT in model.tasks else []) + (EMBED_METHODS if Task.EMBEDDING in model.tasks else [])


def _model_entry(model: Model, router: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": f"models/{model.id}", "baseModelId": model.id, "version": "1",
                             "displayName": model.id, "description": model.description or "",
                             "supportedGenerationMethods": _methods(model)}
    n_ctx = next((d.config.n_ctx for d in router.deployments(model) if getattr(d.config, "n_ctx", None)), None)
    if n_ctx:  # known for local models only; upstreams' limits are theirs to state
        entry["inputTokenLimit"] = n_ctx
    return entry


def _bare(name: str) -> str:
    return name.removeprefix("models/")


@router.get("/models", summary="List models (Gemini)")
async def list_models(request: Request) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    models = [m for m in ctx.catalog if _methods(m)]
    size = _int_query(request, "pageSize", 50, 1, 1000)
    start = _int_query(request, "pageToken", 0, 0, len(models)) if request.query_params.get("pageToken") else 0
    page = models[start:start + size]
    body: dict[str, Any] = {"models": [_model_entry(m, ctx.router) for m in page]}
    if start + size < len(models):
        body["nextPageToken"] = str(start + size)  # an offset: the catalog is small and changes rarely
    return json_response(body)


def _int_query(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit() or not low <= int(raw) <= high:
        raise InvalidRequest(f"'{name}' must be a whole number from {low} to {high}.", param=name)
    return int(raw)


@router.get("/models/{name:path}", summary="Get a model (Gemini)")
async def get_model(request: Request, name: str) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    model = ctx.catalog.get(_bare(name), param="name")
    if not _methods(model):
        raise NotFound(f"Model 'models/{model.id}' does not serve the Gemini API.", param="name")
    return json_response(_model_entry(model, ctx.router))


@router.post("/models/{target:path}", summary="Call a model method: generateContent, streamGenerateContent, "
                                              "countTokens, embedContent, batchEmbedContents")
async def call_model(request: Request, target: str) -> Response:
    name, sep, method = target.rpartition(":")
    handler = _HANDLERS.get(method) if sep else None
    if handler is None:
        raise NotFound(f"Unknown method: POST {request.url.path}; models take "
                       f"{', '.join(':' + m for m in _HANDLERS)}.", code="unknown_route")
    ctx = app_context(request)
    # countTokens is free (not admitted), so it counts here as an API request; the others count at admission
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=method != "countTokens")
    return await handler(request, ctx, principal, _bare(name))


async def _generate(request: Request, ctx: AppContext, principal: Any, name: str, *, stream: bool = False) -> Response:
    body = await parse_json(request, gs.GenerateContentRequest)
    model = ctx.router.resolve(name, Task.CHAT)
    req = gd.to_chat_request(body, model.id, stream=stream)
    region = region_for(request, ctx.settings.region_hosts)
    async with ctx.calls.start(principal, model, Task.CHAT, req, client=request, field="contents") as call:
        if not req.stream:
            resp, _ = await call.run(ctx.router.chat(model, req, region))
            return json_response(gd.from_chat_response(resp, model.id))
        first, stream, deployment = await call.open(ctx.router.open_stream(model, req, region))
    encoder = gd.StreamEncoder(model=model.id)
    if request.query_params.get("alt") == "sse":
        return EventStream(call.relay(first, stream, deployment, _SSEWriter(encoder)), headers=SSE_HEADERS)
    return EventStream(call.relay(first, stream, deployment, _ArrayWriter(encoder)), media_type="application/json")


async def _stream(request: Request, ctx: AppContext, principal: Any, name: str) -> Response:
    return await _generate(request, ctx, principal, name, stream=True)


async def _count(request: Request, ctx: AppContext, principal: Any, name: str) -> Response:
    """Free, like Gemini's: not gated or billed. Exact for local models, estimated for others (see README)."""
    body = await parse_json(request, gs.CountTokensRequest)
    model = ctx.router.resolve(name, Task.CHAT)
    inner = body.generate_content_request or gs.GenerateContentRequest(contents=body.contents or [])
    tokens, how = await count_prompt_tokens(ctx.router, model, gd.to_chat_request(inner, model.id))
    return json_response({"totalTokens": tokens}, headers={"X-Modelyard-Token-Count": how})


async def _embed(request: Request, ctx: AppContext, principal: Any, name: str, texts: list[str],
                 dimensions: int | None) -> list[list[float]]:
    model = ctx.router.resolve(name, Task.EMBEDDING)
    try:
        req = EmbeddingRequest(model=model.id, input=texts, dimensions=dimensions)
    except ValidationError as exc:
        raise InvalidRequest(f"Invalid content to embed: {exc.errors(include_url=False)[0]['msg']}",
                             param="content") from None
    region = region_for(request, ctx.settings.region_hosts)
    async with ctx.calls.start(principal, model, Task.EMBEDDING, req, client=request, field="content") as call:
        result, _ = await call.run(ctx.router.run(model, Task.EMBEDDING, req, region))
    vectors = [item["embedding"] for item in sorted(result["data"], key=lambda item: item["index"])]
    return vectors


def _same_model(given: str | None, name: str, param: str) -> None:
    if given and _bare(given) != name:
        raise InvalidRequest(f"'{given}' differs from the model in the URL, models/{name}.", param=param)


async def _embed_one(request: Request, ctx: AppContext, principal: Any, name: str) -> Response:
    body = await parse_json(request, gs.EmbedContentRequest)
    _same_model(body.model, name, "model")
    vectors = await _embed(request, ctx, principal, name, [gd.embed_texts(body, "content")],
                           body.output_dimensionality)
    return json_response({"embedding": {"values": vectors[0]}})


async def _embed_batch(request: Request, ctx: AppContext, principal: Any, name: str) -> Response:
    body = await parse_json(request, gs.BatchEmbedContentsRequest)
    dims = {r.output_dimensionality for r in body.requests}
    if len(dims) > 1:
        raise InvalidRequest("All requests in a batch must ask for the same outputDimensionality.",
                             param="requests[1].outputDimensionality")
    texts = []
    for i, r in enumerate(body.requests):
        _same_model(r.model, name, f"requests[{i}].model")
        texts.append(gd.embed_texts(r, f"requests[{i}].content"))
    vectors = await _embed(request, ctx, principal, name, texts, dims.pop())
    return json_response({"embeddings": [{"values": v} for v in vectors]})


_HANDLERS = {"generateContent": _generate, "streamGenerateContent": _stream, "countTokens": _count,
             "embedContent": _embed_one, "batchEmbedContents": _embed_batch}
