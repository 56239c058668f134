"""Gemini generateContent as an upstream behind the OpenAI chat surface."""

from __future__ import annotations

from typing import AsyncIterator
from urllib.parse import quote

import orjson

from ..errors import UpstreamError
from ..protocols.gemini import outbound as gm
from ..protocols.openai.schema import ChatRequest
from ..types import ChatResponse, Task
from .base import ChatChunk
from .upstream_http import HTTPUpstream, upstream_message


class GeminiUpstream(HTTPUpstream):
    tasks = frozenset({Task.CHAT})

    def auth_headers(self, api_key: str | None) -> dict[str, str]:
        return {"x-goog-api-key": api_key} if api_key else {}

    def _url(self, method: str) -> str:
        return f"{self.base_url}/models/{quote(self.upstream_model, safe='')}:{method}"

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        data = await self.post_json(self._url("generateContent"), gm.to_generate_request(req))
        return gm.from_generate_response(data, model)

    async def count_tokens(self, req: ChatRequest) -> int:
        """Gemini's own count; the whole generateContent request, so system instruction and tools count too."""
        body = {"generateContentRequest": {"model": f"models/{self.upstream_model}", **gm.to_generate_request(req)}}
        data = await self.post_json(self._url("countTokens"), body)
        if not isinstance(data.get("totalTokens"), int):
            raise UpstreamError(f"Upstream {self.name} returned an unexpected token count.")
        return data["totalTokens"]

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        state = gm.StreamState(model=model, include_usage=req.wants_usage_in_stream)
        async for _event, data in self.post_events(self._url("streamGenerateContent") + "?alt=sse",
                                                   gm.to_generate_request(req)):
            try:
                payload = orjson.loads(data)
            except orjson.JSONDecodeError:
                continue
            if "error" in payload:
                raise UpstreamError(f"Upstream {self.name} failed mid-stream: {upstream_message(data)[0]}")
            for chunk in state.feed(payload):
                yield chunk
        for chunk in state.close():
            yield chunk
