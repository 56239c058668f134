"""OpenAI-compatible upstream (OpenAI, vLLM, Ollama, another gateway): requests and streams pass through."""

from __future__ import annotations

import logging
from typing import Any, AsyncIterator

import orjson

from ..catalog import Deployment
from ..errors import UpstreamError
from ..types import ChatRequest, ChatResponse, RawJSON, Task
from ..types_completions import CompletionRequest
from .base import ChatChunk
from .upstream_http import HTTPUpstream, upstream_message
from .via_chat import complete_via_chat, stream_via_chat

log = logging.getLogger(__name__)


class OpenAIUpstream(HTTPUpstream):
    """Chat, and the JSON tasks OpenAI-compatible servers offer (OpenAI: embeddings, moderations; vLLM: also
    rerank and score). Which of them a given upstream really serves is the operator's to declare in the model's
    `type`/`tasks`; an upstream that lacks one answers 404, which surfaces as a 502.

    Completions go to the upstream's /completions as they are (echo, suffix, logprobs: the upstream decides), unless
    the deployment sets `options: {completions: chat}`, or the upstream answers 404 there (OpenAI's chat models do):
    from then on this deployment serves completions through chat (see via_chat.py)."""

    tasks = frozenset({Task.CHAT, Task.COMPLETION, Task.EMBEDDING, Task.RERANK, Task.SCORE, Task.MODERATION})
    _JSON_TASKS = {Task.EMBEDDING: "/embeddings", Task.RERANK: "/rerank", Task.SCORE: "/score",
                   Task.MODERATION: "/moderations", Task.PII: "/pii"}

    async def _json(self, task: Task, req: Any, model: str) -> dict[str, Any]:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        data = await self.post_json(self.base_url + self._JSON_TASKS[task], payload)
        data["model"] = model
        return data

    def __init__(self, deployment: Deployment, *, shared: dict) -> None:
        super().__init__(deployment, shared=shared)
        mode = deployment.config.options.get("completions", "native")
        if mode not in ("native", "chat"):
            raise ValueError(f"deployment {deployment.key}: options.completions must be 'native' or 'chat'")
        self.native_completions = mode == "native"

    async def embed(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.EMBEDDING, req, model)

    async def rerank(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.RERANK, req, model)

    async def score(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.SCORE, req, model)

    async def moderate(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.MODERATION, req, model)

    def _body(self, req: ChatRequest | CompletionRequest) -> bytes:
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

    def _no_native_completions(self, exc: UpstreamError) -> bool:
        if exc.code != "upstream_not_found":
            return False
        log.warning("%s has no /completions (404); serving completions through chat from now on", self.name)
        self.native_completions = False
        return True

    async def complete(self, req: CompletionRequest, model: str) -> dict[str, Any]:
        if self.native_completions:
            try:
                data = await self.post_json(self.base_url + "/completions", self._body(req))
            except UpstreamError as exc:
                if not self._no_native_completions(exc):
                    raise
            else:
                if "choices" not in data:
                    raise UpstreamError(f"Upstream {self.name} returned an unexpected body.")
                data["model"] = model
                return data
        return await complete_via_chat(req, model, lambda chat: self.chat(chat, model))

    async def complete_stream(self, req: CompletionRequest, model: str) -> AsyncIterator[ChatChunk]:
        if self.native_completions:
            started = False
            try:
                async for chunk in self._relay(self.base_url + "/completions", self._body(req), model):
                    started = True
                    yield chunk
                return
            except UpstreamError as exc:
                if started or not self._no_native_completions(exc):
                    raise

        async def open_chat(chat: ChatRequest) -> AsyncIterator[ChatChunk]:
            return self.chat_stream(chat, model)

        async for chunk in stream_via_chat(req, model, open_chat):
            yield chunk

    def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        return self._relay(self.base_url + "/chat/completions", self._body(req), model)

    async def _relay(self, url: str, body: bytes, model: str) -> AsyncIterator[ChatChunk]:
        # chunks are relayed as the upstream's own bytes; only the model name is swapped, without a re-parse
        rename = self.upstream_model != model
        old_a = orjson.dumps({"model": self.upstream_model})[1:-1]
        old_b = old_a.replace(b'":"', b'": "', 1)
        new = orjson.dumps({"model": model})[1:-1]
        async for _event, data in self.post_events(url, body):
            if data == b"[DONE]":
                return
            if data.startswith(b'{"error"'):
                raise UpstreamError(f"Upstream {self.name} failed mid-stream: {upstream_message(data)[0]}")
            if rename:
                data = data.replace(old_a, new, 1).replace(old_b, new, 1)
            yield RawJSON(data)
