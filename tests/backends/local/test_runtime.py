"""The shared machinery of in-process runtimes: model loads take turns in a process."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from modelyard.backends.local.runtime import LocalRuntime
from modelyard.catalog.catalog import Deployment
from modelyard.config import DeploymentConfig


class _Recording(LocalRuntime):
    """A runtime whose load notes when it starts and ends; the first one to start waits to see if another starts."""

    def __init__(self, name: str, log: list[str], started: dict[str, threading.Event]) -> None:
        super().__init__(Deployment(name, "local", DeploymentConfig(name="local", backend="echo")))
        self.label, self.log, self.started = name, log, started

    def _load(self) -> Any:
        self.log.append(f"{self.label} starts")
        self.started[self.label].set()
        other = "b" if self.label == "a" else "a"
        # were loads not taking turns, the other load would start while this one is in here
        self.started[other].wait(timeout=1.0)
        self.log.append(f"{self.label} ends")
        return object()


def test_two_models_loading_at_once_take_turns() -> None:
    """transformers and diffusers import names lazily and break when two threads import them at once (seen: a
    library item's prompt embedding loading MiniLM while an image job loaded demo-image: ImportError, the image
    model offline for good), so a process loads one model at a time."""
    log: list[str] = []
    started = {"a": threading.Event(), "b": threading.Event()}
    a, b = _Recording("a", log, started), _Recording("b", log, started)

    async def both() -> None:
        await asyncio.gather(a.model(), b.model())
    asyncio.run(both())
    assert log in (["a starts", "a ends", "b starts", "b ends"], ["b starts", "b ends", "a starts", "a ends"]), log


def _batches(max_wait: float, max_burst: float, count: int, gap: float) -> list[int]:
    """Sizes of the batches a DynamicBatcher makes of `count` single items submitted `gap` seconds apart."""
    from modelyard.backends.local.batching import DynamicBatcher

    sizes: list[int] = []

    async def run_batch(items: list[int]) -> list[int]:
        sizes.append(len(items))
        return [x * 2 for x in items]

    async def go() -> list[list[int]]:
        batcher: DynamicBatcher[int, int] = DynamicBatcher(run_batch, max_items=64, max_wait=max_wait,
                                                           max_burst=max_burst)

        async def one(i: int) -> list[int]:
            await asyncio.sleep(i * gap)
            return await batcher.submit([i])
        return await asyncio.gather(*(one(i) for i in range(count)))
    results = asyncio.run(go())
    assert results == [[i * 2] for i in range(count)]
    return sizes


def test_a_burst_of_arrivals_becomes_one_batch() -> None:
    """Requests that keep arriving, each well within the wait of the one before, are collected into one batch
    even though the whole burst takes longer than that wait (the clients a finished batch answered come back one
    by one)."""
    assert _batches(max_wait=0.5, max_burst=10.0, count=12, gap=0.01) == [12]


def test_a_burst_is_cut_at_max_burst() -> None:
    """However steady the arrivals, a batch starts once `max_burst` has passed since its first item."""
    sizes = _batches(max_wait=0.2, max_burst=0.25, count=20, gap=0.03)  # 0.57 s of arrivals
    assert len(sizes) > 1 and sum(sizes) == 20
