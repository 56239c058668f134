"""The echo runtime: answers a chat with the last user message (and embeds text by hashing), no weights, no CPU.

Operators use it to smoke-test a deployment (auth, limits, jobs, webhooks) without loading a model; the test
suite and `bench/jobs.py`/`bench/batches.py` use it as the no-op task. Options: `delay_seconds` (default 0).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any, AsyncIterator

from ...catalog import Deployment
from ...errors import InvalidRequest
from ...protocols.openai.media import EmbeddingRequest
from ...protocols.openai.schema import ChatRequest
from ...types import Task
from ..base import BaseBackend, ChatChunk


class EchoBackend(BaseBackend):
    tasks = frozenset({Task.CHAT, Task.EMBEDDING})
    dimensions = 8

    def __init__(self, deployment: Deployment) -> None:
        self.delay = float(deployment.config.options.get("delay_seconds", 0.0))

    def _reply(self, req: ChatRequest) -> str:
        users = [m for m in req.messages if m.role == "user"]
        return users[-1].text() if users else ""

    async def chat(self, req: ChatRequest, model: str) -> dict[str, Any]:
        if self.delay:
            await asyncio.sleep(self.delay)
        text = self._reply(req)
        n = len(text.split())
        return {"id": f"chatcmpl-echo{time.time_ns()}", "object": "chat.completion", "created": int(time.time()),
                "model": model, "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                             "finish_reason": "stop"}],
                "usage": {"prompt_tokens": n, "completion_tokens": n, "total_tokens": 2 * n}}

    async def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        reply = await self.chat(req, model)
        yield {"id": reply["id"], "object": "chat.completion.chunk", "created": reply["created"], "model": model,
               "choices": [{"index": 0, "delta": {"role": "assistant", "content": reply["choices"][0]["message"]
                                                  ["content"]}, "finish_reason": "stop"}]}

    async def embed(self, req: EmbeddingRequest, model: str) -> dict[str, Any]:
        """A fixed-size vector per text from its hash: deterministic, so tests can compare; a token per word."""
        if self.delay:
            await asyncio.sleep(self.delay)
        texts = req.texts
        if texts is None:
            raise InvalidRequest(f"Model '{model}' takes text input, not token ids.", param="input")
        data = []
        for i, text in enumerate(texts):
            digest = hashlib.sha256(text.encode()).digest()
            data.append({"object": "embedding", "index": i,
                         "embedding": [b / 255 for b in digest[:req.dimensions or self.dimensions]]})
        tokens = sum(len(t.split()) for t in texts)
        return {"object": "list", "data": data, "model": model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
