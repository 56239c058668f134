"""Prompt embeddings for semantic search: computed in the background after items are saved, never on a request."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from typing import TYPE_CHECKING, Any

from ..catalog.builtin import MINILM_ID
from ..protocols.openai.media import EmbeddingRequest
from ..types import ModelState, Task

if TYPE_CHECKING:
    from .service import LibraryService

log = logging.getLogger(__name__)
BATCH = 32
IDLE_SECONDS = 5.0  # a look for due items this often, besides being woken when an item is recorded here


class Embedder:
    def __init__(self, library: LibraryService) -> None:
        self.library = library
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        if self.library.ctx.catalog.find(MINILM_ID) is not None:
            self._task = asyncio.create_task(self._run_forever())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def ready(self) -> bool:
        """The built-in embedding model is configured and can run here."""
        ctx = self.library.ctx
        model = ctx.catalog.find(MINILM_ID)
        if model is None:
            return False
        placed = ctx.router.deployments(model)
        return bool(placed) and await ctx.router.backends[placed[0].key].status() != ModelState.OFFLINE

    async def vectors(self, texts: list[str]) -> list[list[float]]:
        ctx = self.library.ctx
        model = ctx.router.resolve(MINILM_ID, Task.EMBEDDING)
        result, _ = await ctx.router.run(model, Task.EMBEDDING, EmbeddingRequest(model=model.id, input=texts))
        data: list[dict[str, Any]] = result["data"] if isinstance(result, dict) else result.model_dump()["data"]
        return [list(map(float, d["embedding"])) for d in sorted(data, key=lambda d: d["index"])]

    async def embed_due(self) -> int:
        """One batch of items waiting for an embedding; returns how many were done."""
        repo = self.library.repo
        due = await repo.due_embeddings(BATCH)
        if not due or not await self.ready():
            return 0
        vectors = await self.vectors([prompt or " " for _, prompt in due])
        await repo.set_embeddings({item_id: v for (item_id, _), v in zip(due, vectors)})
        return len(due)

    async def _run_forever(self) -> None:
        while True:
            try:
                while await self.embed_due() == BATCH:
                    pass
            except Exception:
                log.exception("embedding library prompts failed; retrying in %.0fs", IDLE_SECONDS)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), IDLE_SECONDS)
            self._wake.clear()


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0
