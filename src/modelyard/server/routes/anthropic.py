"""Anthropic Messages routes: POST /v1/messages (plain and streamed) and /v1/messages/count_tokens."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...backends.base import ChatChunk
from ...errors import ModelyardError
from ...pipeline import scopes as sc
from ...pipeline.tokens import count_tokens as count_prompt_tokens
from ...pipeline.tokens import stream_input_tokens
from ...protocols import anthropic_dialect as ad
from ...protocols.sse import encode_event
from ...types import Task
from ..body import parse_json
from ..errors import register_dialect
from ..openapi import json_body
from .dialect_chat import relay, start_chat
from .openai import SSE_HEADERS, json_response

router = APIRouter(tags=["Anthropic"])
# Longest prefix wins: everything under /v1/messages (404s and 405s included) answers in Anthropic's envelope.
register_dialect("anthropic", ad.error_body, ["/v1/messages", "/anthropic/v1/messages"])


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
        return encode_event("error", ad.error_body(exc))

    def usage(self) -> tuple[int, int] | None:
        return self.encoder.usage


async def _authorized(request: Request) -> Any:
    ctx = request.app.state.ctx
    principal = await ctx.auth.authenticate(request, sc.USER_WRITE)
    ad.check_version(request.headers.get("anthropic-version"))
    return ctx, principal


@router.post("/messages", summary="Create a message (Anthropic Messages API)", openapi_extra=json_body(ad.MessagesRequest))
async def create_message(request: Request) -> Response:
    ctx, principal = await _authorized(request)
    body = await parse_json(request, ad.MessagesRequest)
    req = ad.to_chat_request(body)
    model = ctx.router.resolve(body.model, Task.CHAT)
    call = await start_chat(request, principal, model, req)
    if call.response is not None:
        return json_response(ad.from_chat_response(call.response, model.id), headers=call.headers)
    # message_start reports the prompt's tokens (the SDK's final message keeps them): counted before the first byte
    writer = _Writer(ad.StreamEncoder(model=model.id,
                                      input_tokens=await stream_input_tokens(ctx.router, call.deployment, req)))
    return StreamingResponse(relay(call, writer), media_type="text/event-stream", headers={**SSE_HEADERS, **call.headers})


@router.post("/messages/count_tokens", summary="Count the tokens of a Messages request",
             openapi_extra=json_body(ad.CountTokensRequest))
async def count_tokens(request: Request) -> Response:
    """Free, like Anthropic's: not gated or billed. Exact for local models, estimated for others (see README)."""
    ctx, _ = await _authorized(request)
    body = await parse_json(request, ad.CountTokensRequest)
    req = ad.to_chat_request(body)
    model = ctx.router.resolve(body.model, Task.CHAT)
    tokens, how = await count_prompt_tokens(ctx.router, model, req)
    return json_response({"input_tokens": tokens}, headers={"X-Modelyard-Token-Count": how})
