"""A remote `modelyard worker`: the same OpenAI-shaped surface, reached over HTTP with the worker's serving key."""

from __future__ import annotations

from typing import Any

from ..backends.upstream_openai import OpenAIUpstream
from ..types import Task


class WorkerBackend(OpenAIUpstream):
    """Everything an OpenAI upstream carries (chat, JSON tasks, speech, transcription, images), plus PII.

    Video stays with in-process deployments: a worker stores the MP4 on its own disk and answers a URL to it.
    """

    tasks = OpenAIUpstream.tasks | {Task.PII}

    async def pii(self, req: Any, model: str) -> dict[str, Any]:
        return await self._json(Task.PII, req, model)
