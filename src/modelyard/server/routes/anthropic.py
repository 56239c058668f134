"""Anthropic Messages routes: POST /v1/messages (plain and streamed) and /v1/messages/count_tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...backends.base import ChatChunk
from ...errors import ModelyardError
from ...pipeline import scopes as sc
from ...pipeline.billing import token_units
from ...pipeline.units import Units
from ...pipeline.regions import region_for
from ...pipeline.tokens import count_tokens as count_prompt_tokens
from ...pipeline.tokens import stream_input_tokens
from ...protocols.anthropic import inbound as ad
from ...protocols.anthropic import schema as an
from ...protocols.sse import encode_event
from ...types import Task
from ..body import parse_json
from ..openapi import json_body
from ..render import SSE_HEADERS, app_context, json_response
from ..streaming import EventStream

router = APIRouter(tags=["Anthropic"])
# Longest prefix wins: everything under /v1/messages (404s and 405s included) answers in Anthropic's envelope.
# the error envelope this face's clients read, under these path prefixes (registered by create_app)
ERRORS = (an.error_body, ["/v1/messages", "/anthropic/v1/messages"])


class _Writer:
    """Anthropic's SSE framing: `event: <type>` lines, an `error` event if the stream breaks."""

    def __init__(self, encoder: ad.StreamEncoder) -> None:
        self.encoder = encoder

    @staticmethod
    def _frame(events: list[tuple[str, dict[str, Any]]]) -> bytes:
        return b"".join(encode_event(name, data) for name, data in events)

    def head(self) -> bytes:
        return self._frame(self.encoder.start())

    def chunk(self, chunk: ChatChunk) -> bytes:
        return self._frame(self.encoder.feed(chunk))

    def tail(self) -> bytes:
        return self._frame(self.encoder.finish())

    def error(self, exc: ModelyardError) -> bytes:
        return encode_event("error", an.error_body(exc))

    def usage(self) -> Units | None:
        return token_units(self.encoder.usage)


async def _authorized(request: Request, *, paid: bool) -> Any:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=paid)
    an.check_version(request.headers.get("anthropic-version"))
    return ctx, principal


@router.post("/messages", summary="Create a message (Anthropic Messages API)", openapi_extra=json_body(an.MessagesRequest))
async def create_message(request: Request) -> Response:
    ctx, principal = await _authorized(request, paid=True)
    body = await parse_json(request, an.MessagesRequest)
    req = ad.to_chat_request(body)
    model = ctx.router.resolve(body.model, Task.CHAT)
    region = region_for(request, ctx.settings.region_hosts)
    async with ctx.calls.start(principal, model, Task.CHAT, req, client=request) as call:
        if not req.stream:
            resp, _ = await call.run(ctx.router.chat(model, req, region))
            return json_response(ad.from_chat_response(resp, model.id))
        first, stream, deployment = await call.open(ctx.router.open_stream(model, req, region))
        # message_start reports the prompt's tokens (the SDK's final message keeps them): counted before the first byte
        input_tokens = await stream_input_tokens(ctx.router, deployment, req)
    writer = _Writer(ad.StreamEncoder(model=model.id, input_tokens=input_tokens))
    return EventStream(call.relay(first, stream, deployment, writer), headers=SSE_HEADERS)


@router.post("/messages/count_tokens", summary="Count the tokens of a Messages request",
             openapi_extra=json_body(an.CountTokensRequest))
async def count_tokens(request: Request) -> Response:
    """Free, like Anthropic's: not gated or billed. Exact for local models, estimated for others (see README)."""
    ctx, _ = await _authorized(request, paid=False)
    body = await parse_json(request, an.CountTokensRequest)
    req = ad.to_chat_request(body)
    model = ctx.router.resolve(body.model, Task.CHAT)
    tokens, how = await count_prompt_tokens(ctx.router, model, req)
    return json_response({"input_tokens": tokens}, headers={"X-Modelyard-Token-Count": how})
