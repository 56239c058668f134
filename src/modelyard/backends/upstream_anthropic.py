"""Anthropic Messages API as an upstream behind the OpenAI chat surface."""

from __future__ import annotations

from typing import AsyncIterator

import orjson

from ..errors import UpstreamError
from ..protocols.anthropic import outbound as an
from ..protocols.openai.schema import ChatRequest
from ..types import ChatResponse, Task
from .base import ChatChunk
from .upstream_http import HTTPUpstream


class AnthropicUpstream(HTTPUpstream):
    tasks = frozenset({Task.CHAT})

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        headers = {"anthropic-version": an.API_VERSION}
        if api_key:
            headers["x-api-key"] = api_key
        return headers

    def _request(self, req: ChatRequest) -> dict:
        default = int(self.deployment.config.options.get("max_tokens", 4096))  # Anthropic requires max_tokens
        return an.to_messages_request(req, self.upstream_model, default_max_tokens=default)

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        data = await self.post_json(self.base_url + "/messages", self._request(req))
        if data.get("type") != "message":
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        return an.from_messages_response(data, model)

    async def count_tokens(self, req: ChatRequest) -> int:
        """Anthropic's own count (free there too); count_tokens takes the request minus its sampling fields."""
        body = {k: v for k, v in self._request(req).items() if k in ("model", "messages", "system", "tools", "tool_choice")}
        data = await self.post_json(self.base_url + "/messages/count_tokens", body)
        if not isinstance(data.get("input_tokens"), int):
            raise UpstreamError(f"Upstream {self.name} returned an unexpected token count.")
        return data["input_tokens"]

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        state = an.StreamState(model=model, include_usage=req.wants_usage_in_stream)
        async for _event, data in self.post_events(self.base_url + "/messages", self._request(req)):
            try:
                event = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if event.get("type") == "error":
                raise UpstreamError(f"Upstream {self.name} failed mid-stream: {an.error_message(event)}")
            for chunk in state.feed(event):
                yield chunk
            if event.get("type") == "message_stop":
                return
