"""What every in-process runtime shares: lazy loading, a bounded queue, and work off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import gc
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, AsyncIterator, Callable, Iterator, TypeVar

from ...catalog import Deployment
from ...errors import Overloaded, UpstreamError
from ...types import ModelState
from ..base import BaseBackend

log = logging.getLogger(__name__)
T = TypeVar("T")
_END = object()
# Model loads take turns in a process. The libraries they import (transformers, diffusers, sentence-transformers)
# resolve names lazily and are not safe to import from two threads at once: a library item's prompt embedding
# (all-MiniLM) loading while the first image job loads demo-image failed that load with "cannot import name
# 'PreTrainedModel' from 'transformers'", and the deployment stayed offline.
_LOADS = threading.Lock()


class LocalRuntime(BaseBackend):
    """Subclasses implement `_load()` (runs in a worker thread) and their task methods.

    The executor has `max_concurrency` threads, so a model object is never used by more threads than it allows;
    requests past `max_queue` waiting get 503 with Retry-After instead of piling up.
    """

    retry_after_seconds = 2.0
    # a runtime whose model object is not safe to call from two threads at once (a diffusers pipeline keeps its
    # scheduler's step in itself) caps its threads here, whatever `max_concurrency` lets wait in its queue
    max_threads: int | None = None

    def __init__(self, deployment: Deployment) -> None:
        cfg = deployment.config
        self.path = Path(cfg.path) if cfg.path else None
        self.deployment = deployment
        self.name = deployment.key
        self.concurrency = max(1, cfg.max_concurrency)
        self.max_queue = max(0, cfg.max_queue)
        threads = min(self.concurrency, self.max_threads or self.concurrency)
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=f"model-{deployment.model_id}")
        self._pending = 0
        self._model: Any = None
        self._load_error: str | None = None
        self._loading: asyncio.Task | None = None
        self._state = ModelState.STANDBY if self.available() else ModelState.OFFLINE
        self._last_used = time.monotonic()

    # -- to implement
    def missing(self) -> str | None:
        """What stops this deployment from loading at all (runtime not installed, weights absent), or None."""
        return None

    def _load(self) -> Any:
        raise NotImplementedError

    # -- shared machinery
    def available(self) -> bool:
        return self.missing() is None

    def unavailable_reason(self) -> str:
        return self.missing() or "unavailable"

    async def status(self) -> ModelState:
        return self._state

    async def model(self) -> Any:
        """The loaded model, loading it on first use (state `warming` meanwhile)."""
        if self._model is not None:
            return self._model
        if self._state == ModelState.OFFLINE:
            raise UpstreamError(f"Model deployment {self.name} is offline: {self._load_error or self.unavailable_reason()}.",
                                status=503, code="model_offline")
        if self._loading is None:
            self._state = ModelState.WARMING
            self._loading = asyncio.ensure_future(self._load_once())
        await asyncio.shield(self._loading)
        return self._model

    async def _load_once(self) -> None:
        try:
            self._model = await asyncio.get_running_loop().run_in_executor(self._executor, self._load_in_turn)
            self._state = ModelState.ONLINE
            log.info("loaded %s", self.name)
        except Exception as exc:
            self._load_error = f"{type(exc).__name__}: {exc}"
            self._state = ModelState.OFFLINE
            log.exception("loading %s failed", self.name)
            raise UpstreamError(f"Model deployment {self.name} failed to load: {self._load_error}",
                                status=503, code="model_offline") from exc
        finally:
            self._loading = None

    def _load_in_turn(self) -> Any:
        with _LOADS:
            return self._load()

    @contextlib.asynccontextmanager
    async def admitted(self) -> AsyncIterator[None]:
        """Admission control: refuse rather than queue without bound."""
        if self._pending >= self.concurrency + self.max_queue:
            raise Overloaded(f"Model deployment {self.name} is at capacity ({self._pending} requests in progress or "
                             "waiting); retry shortly.", retry_after=self.retry_after_seconds)
        self._pending += 1
        try:
            yield
        finally:
            self._pending -= 1
            self._last_used = time.monotonic()

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def iterate(self, make: Callable[[threading.Event], Iterator[T]]) -> AsyncIterator[T]:
        """Run a blocking generator in the model's thread, relaying items as they come.

        Closing the async iterator (client gone) sets the stop event; the generator checks it between items.
        """
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        stop = threading.Event()

        def put(item: Any) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(queue.put_nowait, item)

        def work() -> None:
            try:
                for item in make(stop):
                    if stop.is_set():
                        break
                    put(item)
            except BaseException as exc:  # relayed to the awaiting side
                put(exc)
            finally:
                put(_END)

        future = loop.run_in_executor(self._executor, work)
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            with contextlib.suppress(BaseException):
                await asyncio.shield(future)

    async def unload_if_idle(self, now: float) -> bool:
        idle = self.deployment.config.idle_unload_seconds
        if not idle or self._model is None or self._pending or now - self._last_used < idle:
            return False
        self._model = None
        self._state = ModelState.STANDBY
        await self.run(gc.collect)  # after the model's own thread let go of it
        log.info("unloaded %s after %.0f s idle", self.name, now - self._last_used)
        return True

    async def aclose(self) -> None:
        self._model = None
        self._executor.shutdown(wait=False, cancel_futures=True)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None
