"""The Responses API's turn: load the conversation, run the hosted search, serve through chat, store the result."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import orjson

from ..backends.base import ChatChunk
from ..catalog import Deployment, Model
from ..errors import InvalidRequest, ModelyardError, NotFound
from ..pipeline.units import Units
from ..protocols.openai import responses_events as orp
from ..protocols.sse import encode_event
from ..routing import Router
from .repo import ResponseLog
from ..protocols.openai.schema import ChatRequest
from ..protocols.openai.responses import ResponsesRequest
from .websearch import SearchProvider

log = logging.getLogger(__name__)


@dataclass
class Turn:
    """One request, checked and placed in its conversation, before anything is charged."""

    req: ResponsesRequest
    org_id: str
    messages: list[dict[str, Any]]  # the conversation so far plus this input, as chat messages
    chat: ChatRequest  # what the model is asked (search results are added once the search ran)
    query: str | None = None  # what the hosted web_search looks up, when it runs
    search_item: dict[str, Any] | None = None
    search_hits: list[dict[str, str]] = field(default_factory=list)
    response_id: str = field(default_factory=lambda: orp.item_id("resp"))


async def prepare(req: ResponsesRequest, org_id: str, log_: ResponseLog, search: SearchProvider) -> Turn:
    """Every 4xx a request can earn, before the gate admits it: nothing is charged for a request we refuse."""
    orp.validate(req)
    if req.async_ and req.stream:
        raise InvalidRequest("'async' cannot be combined with 'stream'.", param="stream")
    query = orp.search_query(req) if orp.wants_search(req) else None
    if query is not None and not search.configured:
        await search.search(query)  # raises the "web search is not configured" 400
    history: list[dict[str, Any]] = []
    if req.previous_response_id:
        previous = await log_.get(org_id, req.previous_response_id)
        if previous is None:
            raise NotFound(f"Previous response with id '{req.previous_response_id}' not found.",
                           param="previous_response_id")
        history = previous.history
    messages = history + orp.messages_from_items(req.input_items, orp.calls_in(history))
    if not messages:
        raise InvalidRequest("Invalid value for 'input': the conversation has no messages.", param="input")
    return Turn(req=req, org_id=org_id, messages=messages, chat=orp.chat_request(req, messages), query=query)


async def run_search(turn: Turn, search: SearchProvider) -> None:
    """The hosted web_search, executed here before the model answers; its results join the system message."""
    if turn.query is None:
        return
    hits = [h.as_dict() for h in await search.search(turn.query)]
    turn.search_item = orp.web_search_item(turn.query, hits)
    turn.search_hits = hits
    turn.chat = orp.chat_request(turn.req, turn.messages, search=orp.search_context(turn.query, hits))


def builder_for(turn: Turn, model_id: str) -> orp.ResponseBuilder:
    return orp.ResponseBuilder(orp.skeleton(turn.req, id=turn.response_id, model=model_id))


def remember(turn: Turn, response: dict[str, Any], log_: ResponseLog) -> None:
    if turn.req.store:
        log_.add(turn.org_id, response, turn.messages + orp.history_from_output(response["output"]),
                 orp.input_listing(turn.req.input_items))


def complete(turn: Turn, chat: dict[str, Any], model_id: str, log_: ResponseLog) -> dict[str, Any]:
    """A whole chat completion as the finished response (stored when `store`)."""
    builder = builder_for(turn, model_id)
    if turn.search_item is not None:
        builder.web_search(turn.search_item, turn.search_hits)
    builder.feed(orp.chunk_from_chat(chat))
    _, response = builder.finish()
    remember(turn, response, log_)
    return response


async def answer(turn: Turn, model: Model, region: str | None, router: Router, search: SearchProvider
                 ) -> tuple[dict[str, Any], Deployment]:
    """The hosted search (when asked for), then the model's whole answer as a chat completion."""
    await run_search(turn, search)
    return await router.chat(model, turn.chat, region)


async def open_answer(turn: Turn, model: Model, region: str | None, router: Router, search: SearchProvider
                      ) -> tuple[ChatChunk | None, AsyncIterator[ChatChunk], Deployment]:
    """The hosted search (when asked for), then the model's answer as a stream whose first chunk has arrived."""
    await run_search(turn, search)
    return await router.open_stream(model, turn.chat, region)


class ResponseFraming:
    """The Responses SSE event sequence around a chat stream; the finished response is stored (when `store`)
    and prices the call. An error after the first event goes out as a final `error` event."""

    def __init__(self, turn: Turn, model_id: str, log_: ResponseLog) -> None:
        self.turn = turn
        self.log = log_
        self.builder = builder_for(turn, model_id)
        self.response: dict[str, Any] | None = None

    @staticmethod
    def _frame(events: list[dict[str, Any]]) -> bytes:
        return b"".join(encode_event(e["type"], e) for e in events)

    def head(self) -> bytes:
        out = self.builder.start()
        if self.turn.search_item is not None:
            out += self.builder.web_search(self.turn.search_item, self.turn.search_hits)
        return self._frame(out)

    def chunk(self, chunk: ChatChunk) -> bytes:
        return self._frame(self.builder.feed(_parsed(chunk)))

    def tail(self) -> bytes:
        final, self.response = self.builder.finish()
        remember(self.turn, self.response, self.log)
        return self._frame(final)

    def error(self, exc: ModelyardError) -> bytes:
        return encode_event("error", orp.error_event(exc, self.builder.seq))

    def usage(self) -> Units | None:
        if self.response is None:
            return None
        usage = self.response.get("usage") or {}
        return Units(input_tokens=int(usage.get("input_tokens") or 0),
                     output_tokens=int(usage.get("output_tokens") or 0))


def _parsed(chunk: ChatChunk) -> dict[str, Any]:
    return orjson.loads(bytes(chunk)) if isinstance(chunk, (bytes, bytearray)) else chunk
