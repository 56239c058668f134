"""OpenAI-compatible upstream (OpenAI, vLLM, Ollama, another gateway): requests and streams pass through."""

from __future__ import annotations

from typing import Any, AsyncIterator

import orjson

from ..errors import UpstreamError
from ..types import ChatRequest, ChatResponse, RawJSON, Task
from .base import ChatChunk
from .upstream_http import HTTPUpstream, upstream_message


class OpenAIUpstream(HTTPUpstream):
    """Chat, and the JSON tasks OpenAI-compatible servers offer (OpenAI: embeddings, moderations; vLLM: also
    rerank and score). Which of them a given upstream really serves is the operator's to declare in the model's
    `type`/`tasks`; an upstream that lacks one answers 404, which surfaces as a 502."""

    tasks = frozenset({Task.CHAT, Task.EMBEDDING, Task.RERANK, Task.SCORE, Task.MODERATION})
    _JSON_TASKS = {Task.EMBEDDING: "/embeddings", Task.RERANK: "/rerank", Task.SCORE: "/score",
                   Task.MODERATION: "/moderations", Task.PII: "/pii"}

    async def _json(self, task: Task, req: Any, model: str) -> dict[str, Any]:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        data = await self.post_json(self.base_url + self._JSON_TASKS[task], payload)
        data["model"] = model
        return data

    async def embed(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.EMBEDDING, req, model)

    async def rerank(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.RERANK, req, model)

    async def score(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.SCORE, req, model)

    async def moderate(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.MODERATION, req, model)

    def _body(self, req: ChatRequest) -> bytes:
        # the client's own JSON, unknown fields and all; only `model` changes (a plain dict round trip is several
        # times cheaper than dumping the validated model)
        payload = orjson.loads(req._raw) if req._raw is not None else req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        return orjson.dumps(payload)

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        data = await self.post_json(self.base_url + "/chat/completions", self._body(req))
        if "choices" not in data:
            raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
        data["model"] = model
        return data

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        # chunks are relayed as the upstream's own bytes; only the model name is swapped, without a re-parse
        rename = self.upstream_model != model
        old_a = orjson.dumps({"model": self.upstream_model})[1:-1]
        old_b = old_a.replace(b'":"', b'": "', 1)
        new = orjson.dumps({"model": model})[1:-1]
        async for _event, data in self.post_events(self.base_url + "/chat/completions", self._body(req)):
            if data == b"[DONE]":
                return
            if data.startswith(b'{"error"'):
                raise UpstreamError(f"Upstream {self.name} failed mid-stream: {upstream_message(data)[0]}")
            if rename:
                data = data.replace(old_a, new, 1).replace(old_b, new, 1)
            yield RawJSON(data)
