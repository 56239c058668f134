"""Dynamic batching: requests that arrive together share one model call."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    """Collects items from concurrent callers and runs them through `run_batch` in as few calls as fit.

    While one batch runs on the model's thread, new requests queue up and become the next batch, so under
    load batches grow by themselves; a lone request waits at most `max_wait` seconds for company.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_items: int = 64,
                 max_wait: float = 0.002) -> None:
        self.run_batch = run_batch
        self.max_items = max_items
        self.max_wait = max_wait
        self._queue: list[tuple[list[T], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self.batches_run = 0
        self.items_run = 0

    async def submit(self, items: list[T]) -> list[R]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        while self._queue:
            if self.max_wait and sum(len(i) for i, _ in self._queue) < self.max_items:
                await asyncio.sleep(self.max_wait)
            group: list[tuple[list[T], asyncio.Future]] = []
            count = 0
            while self._queue and (not group or count + len(self._queue[0][0]) <= self.max_items):
                items, future = self._queue.pop(0)
                if future.done():  # caller went away
                    continue
                group.append((items, future))
                count += len(items)
            if not group:
                continue
            flat: list[T] = [x for items, _ in group for x in items]
            try:
                results: Any = await self.run_batch(flat)
            except Exception as exc:
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
                continue
            self.batches_run += 1
            self.items_run += len(flat)
            at = 0
            for items, future in group:
                if not future.done():
                    future.set_result(list(results[at:at + len(items)]))
                at += len(items)
