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
