"""Chat for the non-OpenAI dialects: admit through the gate, run or stream on the router, settle with usage."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Protocol

from starlette.requests import Request

from ...backends.base import ChatChunk
from ...catalog import Deployment, Model
from ...errors import InternalError, ModelyardError
from ...pipeline.auth import Principal
from ...pipeline.gate import Ticket, Units
from ...pipeline.regions import region_for
from ...protocols.openai_chat_parts import usage_numbers
from ...types import ChatRequest, Task
from ..disconnect import unless_disconnected
from ...pipeline.billing import chat_estimate
from .openai import served_by

log = logging.getLogger(__name__)


def units_of(usage: tuple[int, int] | None) -> Units | None:
    if usage is None:
        return None
    return Units(input_tokens=usage[0], output_tokens=usage[1])


def prompt_text(req: ChatRequest) -> str:
    """What the content filter reads: the user's and system's words, not the model's."""
    return "\n".join(m.text() for m in req.messages if m.role in ("system", "developer", "user"))


@dataclass
class ChatCall:
    """An admitted chat call: either its whole response, or a started stream (first chunk already pulled)."""

    ticket: Ticket
    deployment: Deployment
    response: dict[str, Any] | None = None
    first: ChatChunk | None = None
    stream: AsyncIterator[ChatChunk] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {**served_by(self.deployment), **self.ticket.headers}


async def start_chat(request: Request, principal: Principal, model: Model, req: ChatRequest) -> ChatCall:
    """Admit, then run (or open the stream of) `req`; a failure before the first chunk releases the ticket."""
    ctx = request.app.state.ctx
    region = region_for(request, ctx.settings.region_hosts)
    ticket = await ctx.gate.admit(principal, model, Task.CHAT, kind="chat", text=prompt_text(req),
                                  estimate=chat_estimate(req))
    try:
        if not req.stream:
            resp, deployment = await unless_disconnected(request, ctx.router.chat(model, req, region))
            ticket.settle(units_of(usage_numbers(resp.get("usage"))), deployment)
            return ChatCall(ticket=ticket, deployment=deployment, response=resp)
        first, stream, deployment = await ctx.router.open_stream(model, req, region)
    except BaseException:
        if not ticket.closed:
            ticket.fail()
        raise
    return ChatCall(ticket=ticket, deployment=deployment, first=first, stream=stream)


class StreamWriter(Protocol):
    """A dialect's framing of a chat stream."""

    def head(self) -> bytes: ...

    def chunk(self, chunk: ChatChunk) -> bytes: ...

    def tail(self) -> bytes: ...

    def error(self, exc: ModelyardError) -> bytes: ...

    def usage(self) -> tuple[int, int] | None: ...


async def relay(call: ChatCall, writer: StreamWriter) -> AsyncIterator[bytes]:
    """Frame chunks as they come; an error after the first byte goes out as the dialect's final error event."""
    ok = False
    assert call.stream is not None
    try:
        head = writer.head()
        if head:
            yield head
        if call.first is not None:
            out = writer.chunk(call.first)
            if out:
                yield out
            async for chunk in call.stream:
                out = writer.chunk(chunk)
                if out:
                    yield out
        ok = True
        yield writer.tail()
    except ModelyardError as exc:
        yield writer.error(exc)
    except Exception:
        log.exception("stream failed")
        yield writer.error(InternalError("The stream failed on the server."))
    finally:
        if ok:
            call.ticket.settle(units_of(writer.usage()), call.deployment)
        else:
            call.ticket.fail()
        await call.stream.aclose()  # type: ignore[attr-defined]
