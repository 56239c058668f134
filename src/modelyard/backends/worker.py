"""A remote `modelyard worker`: the same OpenAI-shaped surface, reached over HTTP with the worker's serving key."""

from __future__ import annotations

from typing import Any

from ..types import Task
from .upstream_openai import OpenAIUpstream

_JSON_TASKS = {"embed": "/embeddings", "rerank": "/rerank", "score": "/score", "pii": "/pii", "moderate": "/moderations"}


class WorkerBackend(OpenAIUpstream):
    """Chat (relayed like any OpenAI upstream) and the JSON tasks; media tasks stay on in-process deployments."""

    tasks = frozenset({Task.CHAT, Task.EMBEDDING, Task.RERANK, Task.SCORE, Task.PII, Task.MODERATION})

    async def _json(self, path: str, req: Any, model: str) -> dict[str, Any]:
        payload = req.model_dump(mode="json", exclude_unset=True)
        payload["model"] = self.upstream_model
        data = await self.post_json(self.base_url + path, payload)
        data["model"] = model
        return data

    async def embed(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(_JSON_TASKS["embed"], req, model)

    async def rerank(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(_JSON_TASKS["rerank"], req, model)

    async def score(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(_JSON_TASKS["score"], req, model)

    async def pii(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(_JSON_TASKS["pii"], req, model)

    async def moderate(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(_JSON_TASKS["moderate"], req, model)
