"""A remote `modelyard worker`: the same OpenAI-shaped surface, reached over HTTP with the worker's serving key."""

from __future__ import annotations

from typing import Any

from ..types import Task
from .upstream_openai import OpenAIUpstream


class WorkerBackend(OpenAIUpstream):
    """Chat (relayed like any OpenAI upstream) and the JSON tasks, PII included; media tasks stay in-process."""

    tasks = OpenAIUpstream.tasks | {Task.PII}

    async def pii(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.PII, req, model)
