"""Router: picks a deployment of the requested model and runs the call on its backend."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator

from .backends import BaseBackend, create_backend
from .backends.base import METHOD_FOR_TASK, ChatChunk
from .catalog import Catalog, Deployment, Model
from .errors import InvalidRequest, Overloaded
from .types import ChatRequest, ChatResponse, ModelState, Task

log = logging.getLogger(__name__)


@dataclass
class DeploymentStats:
    in_flight: int = 0
    successes: int = 0
    failures: int = 0


class Router:
    """Least in-flight choice among a model's deployments, weights breaking ties.

    Retries, fallbacks, cooldown and regions arrive with the routing issue; the call shape here stays.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.shared: dict = {}  # pooled clients, shared across backends
        self.backends: dict[str, BaseBackend] = {}
        self.stats: dict[str, DeploymentStats] = {}
        for model in catalog:
            for d in model.deployments:
                self.backends[d.key] = create_backend(d, shared=self.shared)
                self.stats[d.key] = DeploymentStats()

    def resolve(self, name: str, task: Task) -> Model:
        model = self.catalog.get(name)
        if task not in model.tasks:
            raise InvalidRequest(f"Model '{model.id}' does not support {task.value}.", param="model", code="unsupported_task")
        return model

    def pick(self, model: Model) -> tuple[Deployment, BaseBackend]:
        if not model.deployments:
            raise Overloaded(f"Model '{model.id}' has no deployment available.", retry_after=5)
        best = min(
            model.deployments,
            key=lambda d: (self.stats[d.key].in_flight / max(d.config.weight, 1e-6), -d.config.weight, random.random()),
        )
        return best, self.backends[best.key]

    async def run(self, model: Model, task: Task, req: Any) -> tuple[Any, Deployment]:
        """Call the backend method serving `task` on a chosen deployment of `model`."""
        deployment, backend = self.pick(model)
        stats = self.stats[deployment.key]
        stats.in_flight += 1
        try:
            resp = await getattr(backend, METHOD_FOR_TASK[task])(req, model.id)
        except Exception:
            stats.failures += 1
            raise
        finally:
            stats.in_flight -= 1
        stats.successes += 1
        return resp, deployment

    async def chat(self, model: Model, req: ChatRequest) -> tuple[ChatResponse, Deployment]:
        return await self.run(model, Task.CHAT, req)

    def chat_stream(self, model: Model, req: ChatRequest) -> tuple[AsyncIterator[ChatChunk], Deployment]:
        deployment, backend = self.pick(model)
        return self._counted(deployment, backend.chat_stream(req, model.id)), deployment

    async def _counted(self, deployment: Deployment, stream: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
        stats = self.stats[deployment.key]
        stats.in_flight += 1
        try:
            async for chunk in stream:
                yield chunk
        except Exception:
            stats.failures += 1
            raise
        else:
            stats.successes += 1
        finally:
            stats.in_flight -= 1
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()

    async def model_state(self, model: Model) -> ModelState:
        states = [await self.backends[d.key].status() for d in model.deployments]
        for s in (ModelState.ONLINE, ModelState.WARMING, ModelState.STANDBY):
            if s in states:
                return s
        return ModelState.OFFLINE

    async def unload_idle(self) -> None:
        now = time.monotonic()
        for backend in self.backends.values():
            await backend.unload_if_idle(now)

    async def preload(self) -> None:
        """Load the deployments configured with `preload: true` now rather than on first use."""
        for model in self.catalog:
            for d in model.deployments:
                load = getattr(self.backends[d.key], "model", None)
                if d.config.preload and load is not None:
                    try:
                        await load()
                    except Exception:
                        log.exception("preloading %s failed; it will be offline", d.key)

    async def aclose(self) -> None:
        for backend in self.backends.values():
            try:
                await backend.aclose()
            except Exception:
                log.exception("closing backend failed")
        for resource in self.shared.values():
            close = getattr(resource, "close", None)
            if close is not None:
                await close()
