"""The Backend interface every runtime and upstream implements: one async method per task."""

from __future__ import annotations

from typing import Any, AsyncIterator, Protocol, runtime_checkable

from ..errors import InvalidRequest
from ..protocols.openai.schema import ChatRequest
from ..types import ChatResponse, ModelState, RawJSON, Task

ChatChunk = dict | RawJSON

# Task -> the Backend method that serves it. Streaming chat is `chat_stream`, chosen by the router.
METHOD_FOR_TASK: dict[Task, str] = {
    Task.CHAT: "chat",
    Task.COMPLETION: "complete",
    Task.EMBEDDING: "embed",
    Task.RERANK: "rerank",
    Task.SCORE: "score",
    Task.MODERATION: "moderate",
    Task.PII: "pii",
    Task.SPEECH: "speech",
    Task.TRANSCRIPTION: "transcribe",
    Task.TRANSLATION: "translate",
    Task.TEXT_TO_IMAGE: "generate_image",
    Task.IMAGE_TO_IMAGE: "edit_image",
    Task.TEXT_TO_VIDEO: "generate_video",
    Task.IMAGE_TO_VIDEO: "generate_video",
}

# Task -> the Backend method that streams it.
STREAM_METHOD_FOR_TASK: dict[Task, str] = {Task.CHAT: "chat_stream", Task.COMPLETION: "complete_stream"}


@runtime_checkable
class Backend(Protocol):
    tasks: frozenset[Task]

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse: ...

    def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]: ...

    async def status(self) -> ModelState: ...

    async def aclose(self) -> None: ...


class BaseBackend:
    """Defaults: every task unsupported until a subclass implements it.

    `model` is the public model id the client asked for; backends put it in their responses.
    Task methods take the validated request (types.py) and return an OpenAI-shaped dict or a result object.
    """

    tasks: frozenset[Task] = frozenset()

    def _unsupported(self, model: str, what: str) -> InvalidRequest:
        return InvalidRequest(f"Model '{model}' does not support {what}.", param="model", code="unsupported_task")

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        raise self._unsupported(model, "chat completions")

    def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        raise self._unsupported(model, "chat completions")

    async def status(self) -> ModelState:
        return ModelState.ONLINE

    def describe(self) -> dict[str, Any]:
        """Extra facts for /api/model-status (voices, sizes, demo labels)."""
        return {}

    async def unload_if_idle(self, now: float) -> bool:
        """Local runtimes free their memory after an idle time; others have nothing to free."""
        return False

    async def aclose(self) -> None:
        return None
