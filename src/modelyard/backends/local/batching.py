"""Dynamic batching: requests that arrive together share one model call."""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable, Generic, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class DynamicBatcher(Generic[T, R]):
    """Collects items from concurrent callers and runs them through `run_batch` in as few calls as fit.

    While one batch runs on the model's thread, new requests queue up and become the next batch, so under
    load batches grow by themselves. A lone request waits at most `max_wait` seconds for company; while company
    keeps coming (each within `max_wait` of the last, as the clients a finished batch just answered send their
    next requests), the batch keeps collecting, up to `max_items` or `max_burst` seconds in all. On a 2-core
    machine a burst split into two smaller batches costs more than one of 64: the model's threads and the
    event loop take turns on the same cores, and a small batch uses them less well.
    """

    def __init__(self, run_batch: Callable[[list[T]], Awaitable[Sequence[R]]], *, max_items: int = 64,
                 max_wait: float = 0.002, max_burst: float = 0.02) -> None:
        self.run_batch = run_batch
        self.max_items = max_items
        self.max_wait = max_wait
        self.max_burst = max(max_burst, max_wait)
        self._queue: list[tuple[list[T], asyncio.Future]] = []
        self._worker: asyncio.Task | None = None
        self._arrived: asyncio.Event | None = None
        self.batches_run = 0
        self.items_run = 0

    async def submit(self, items: list[T]) -> list[R]:
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._queue.append((items, future))
        if self._arrived is not None:
            self._arrived.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._drain())
        return await future

    async def _gather(self) -> None:
        """Wait while more items keep arriving: each within `max_wait` of the last, `max_burst` in all."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_burst
        if self._arrived is None:
            self._arrived = asyncio.Event()
        while sum(len(i) for i, _ in self._queue) < self.max_items:
            left = deadline - loop.time()
            if left <= 0:
                return
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), min(self.max_wait, left))
            except asyncio.TimeoutError:
                return  # a quiet gap: what is here is the batch

    async def _drain(self) -> None:
        while self._queue:
            if self.max_wait and sum(len(i) for i, _ in self._queue) < self.max_items:
                await self._gather()
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
