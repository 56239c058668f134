"""The Backend interface every runtime and upstream implements."""

from __future__ import annotations

from typing import AsyncIterator, Protocol, runtime_checkable

from ..errors import InvalidRequest
from ..types import ChatRequest, ChatResponse, ModelState, RawJSON, Task

ChatChunk = dict | RawJSON


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
    """

    tasks: frozenset[Task] = frozenset()

    async def chat(self, req: ChatRequest, model: str) -> ChatResponse:
        raise InvalidRequest(f"Model '{model}' does not support chat completions.", param="model", code="unsupported_task")

    def chat_stream(self, req: ChatRequest, model: str) -> AsyncIterator[ChatChunk]:
        raise InvalidRequest(f"Model '{model}' does not support chat completions.", param="model", code="unsupported_task")

    async def status(self) -> ModelState:
        return ModelState.ONLINE

    async def aclose(self) -> None:
        return None
