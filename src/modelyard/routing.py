"""Router: picks a healthy deployment of the requested model, retries elsewhere, falls back, cools down."""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, TypeVar

from .backends import BaseBackend, create_backend
from .backends.base import METHOD_FOR_TASK, STREAM_METHOD_FOR_TASK, ChatChunk
from .catalog import Catalog, Deployment, Model
from .catalog.latency import LatencyBook
from .config import DeploymentConfig
from .errors import InvalidRequest, ModelyardError, Overloaded, RateLimited, UpstreamError
from .logs import REQUEST
from .protocols.openai.schema import ChatRequest
from .tracing import OUTGOING, Tracing
from .types import ModelState, Task

log = logging.getLogger(__name__)
T = TypeVar("T")
# one try of one deployment: (deployment, model id, its stats, start time, the try's span or None) -> result
Attempt = Callable[[Deployment, str, "DeploymentStats", float, Any], Awaitable[T]]

# Failures that say "this deployment, now" rather than "this request": another deployment may well succeed.
RETRYABLE = (UpstreamError, Overloaded, RateLimited)


@dataclass
class DeploymentStats:
    """Counters for /metrics, and the health state behind cooldown."""

    in_flight: int = 0
    successes: int = 0
    failures: int = 0
    latency_total: float = 0.0
    consecutive_failures: int = 0
    cooldown_until: float = 0.0
    probing: bool = False  # half-open: one request is testing a deployment whose cooldown ended
    m: Any = None  # the deployment's metric children (telemetry.children.DeploymentChildren), when metrics are on

    def usable(self, now: float) -> bool:
        if self.cooldown_until <= 0:
            return True
        return now >= self.cooldown_until and not self.probing


class Router:
    """Least in-flight choice (weights break ties) among a model's healthy deployments in the client's region.

    A retryable failure moves the call to the next deployment, then to the model's fallbacks. A deployment that
    fails `cooldown_failures` times in a row sits out `cooldown_seconds`; then one request probes it (half-open)
    and its result decides whether it is trusted again. A stream is only retried before its first chunk.
    """

    def __init__(self, catalog: Catalog, *, cooldown_failures: int = 3, cooldown_seconds: float = 30.0,
                 metrics: Any = None, tracing: Tracing | None = None) -> None:
        self.catalog = catalog
        self.metrics = metrics
        self.tracing = tracing  # None: off (a span per attempt when on)
        self.cooldown_failures = cooldown_failures
        self.cooldown_seconds = cooldown_seconds
        self.shared: dict = {}  # pooled clients, shared across backends
        self.backends: dict[str, BaseBackend] = {}
        self.stats: dict[str, DeploymentStats] = {}
        self.worker_keys: dict[str, tuple] = {}  # deployment key -> (url, secret, region) of a live worker
        self.latency = LatencyBook()  # recent successful calls' timings per (model, task), for the catalog
        # model id -> deployments on live workers: the router's own, beside the catalog's configured ones
        self._on_workers: dict[str, list[Deployment]] = {}
        for model in catalog:
            for name in model.fallbacks:
                if catalog.find(name) is None:
                    raise ValueError(f"model '{model.id}' falls back to '{name}', which is not a model")
            for d in model.deployments:
                self.backends[d.key] = create_backend(d, shared=self.shared)
                self.stats[d.key] = self._stats(d)

    def _stats(self, d: Deployment) -> DeploymentStats:
        stats = DeploymentStats()
        if self.metrics is not None:  # its in-flight and outcome series read these counts (telemetry.children)
            stats.m = self.metrics.deployment(d, stats)
        return stats

    def deployments(self, model: Model) -> list[Deployment]:
        """Where `model` runs now: its configured deployments, then those of live workers hosting it."""
        extra = self._on_workers.get(model.id)
        return model.deployments + extra if extra else model.deployments

    def resolve(self, name: str, task: Task, param: str = "model") -> Model:
        """The model `name` names, for `task`; errors name `param`, the field the client named it in."""
        model = self.catalog.get(name, param=param)
        if task not in model.tasks:
            raise InvalidRequest(f"Model '{model.id}' does not support {task.value}.", param=param, code="unsupported_task")
        return model

    def serves(self, model: Model, task: Task) -> bool:
        """Whether any deployment of `model` has a backend method for `task` (a completion may go through chat)."""
        return any(task in self.backends[d.key].tasks for d in self.deployments(model))

    def batch_size(self, model_id: str) -> int:
        """The most items one call of this model embeds together when its deployments batch dynamically (local
        embedders); 0 when they do not. Batch lines for such a model are released and claimed in groups."""
        model = self.catalog.find(model_id)
        if model is None:
            return 0
        batchers = (getattr(self.backends.get(d.key), "batcher", None) for d in model.deployments)
        return max((int(getattr(b, "max_items", 0)) for b in batchers if b is not None), default=0)

    # ---------------------------------------------------------------- choosing

    def candidates(self, model: Model, region: str | None, task: Task | None = None) -> list[Deployment]:
        """Deployments to try, best first. Raises when none can serve (region, cooldown)."""
        able = [d for d in self.deployments(model) if task is None or task in self.backends[d.key].tasks]
        if not able:
            raise InvalidRequest(f"No deployment of model '{model.id}' can serve {task.value if task else 'this'}.",
                                 param="model", code="unsupported_task")
        pool = [d for d in able if region is None or (d.config.region or "").lower() == region]
        if not pool:
            raise Overloaded(f"No deployment of model '{model.id}' serves region '{region}'.", code="region_unavailable",
                             retry_after=30)
        now = time.monotonic()
        usable = [d for d in pool if self.stats[d.key].usable(now)]
        if not usable:
            wait = min(self.stats[d.key].cooldown_until for d in pool) - now
            raise Overloaded(f"Every deployment of model '{model.id}' is cooling down after failures.",
                             code="deployments_cooling_down", retry_after=max(wait, 1.0))
        return sorted(usable, key=lambda d: (self.stats[d.key].in_flight / max(d.config.weight, 1e-6),
                                             -d.config.weight, random.random()))

    def _chain(self, model: Model, task: Task) -> list[Model]:
        chain = [model]
        for name in model.fallbacks:
            fallback = self.catalog.get(name)
            if task in fallback.tasks and fallback not in chain:
                chain.append(fallback)
        return chain

    # ---------------------------------------------------------------- health bookkeeping

    def _begin(self, d: Deployment) -> tuple[DeploymentStats, float]:
        stats = self.stats[d.key]
        if stats.cooldown_until and time.monotonic() >= stats.cooldown_until:
            stats.probing = True
        stats.in_flight += 1
        return stats, time.monotonic()

    def _succeeded(self, d: Deployment, task: Task, stats: DeploymentStats, started: float,
                   first: float | None = None) -> None:
        ended = time.monotonic()
        stats.in_flight -= 1
        stats.successes += 1
        stats.latency_total += ended - started
        self.latency.record(d.model_id, task, started, first, ended)
        m = stats.m
        if m is not None:  # in flight and successes: read from `stats`; the latency summary is this histogram's
            m.observed.append((m.upstream_ok, ended - started))  # added up by Metrics.fold
        stats.consecutive_failures = 0
        stats.cooldown_until = 0.0
        stats.probing = False

    def _failed(self, d: Deployment, stats: DeploymentStats, exc: BaseException, started: float) -> None:
        stats.in_flight -= 1
        m = stats.m
        if not isinstance(exc, RETRYABLE):  # the request's fault (or a cancel), not the deployment's
            stats.probing = False
            return
        stats.failures += 1
        stats.consecutive_failures += 1
        if m is not None:  # failures: read from `stats`
            m.upstream_failed.observe(time.monotonic() - started)
        if stats.probing or stats.consecutive_failures >= self.cooldown_failures:
            stats.cooldown_until = time.monotonic() + self.cooldown_seconds
            if m is not None:
                m.cooldowns.inc()
            log.warning("deployment %s cools down for %.1f s after %d failure(s): %s", d.key, self.cooldown_seconds,
                        stats.consecutive_failures, exc)
        stats.probing = False

    # ---------------------------------------------------------------- calling

    async def _first_success(self, model: Model, task: Task, region: str | None, attempt: Attempt[T], *,
                             stream: bool = False) -> tuple[T, Deployment]:
        """Try `model`'s deployments, then its fallbacks', until `attempt` succeeds on one.

        A retryable failure moves on to the next deployment; any other failure is raised at once. Each failure of
        an upstream logs one line (model, deployment, upstream status, attempt). With tracing on, each try is a
        span whose context goes out with its request; a stream's span is handed to the attempt, which ends it
        when the stream ends.
        """
        last: ModelyardError | None = None
        tracing = self.tracing
        tries = 0
        for target in self._chain(model, task):
            if target is not model and self.metrics is not None:
                self.metrics.fell_back(model.id, target.id)
            try:
                deployments = self.candidates(target, region, task)
            except Overloaded as exc:
                last = exc
                continue
            for d in deployments:
                tries += 1
                stats, started = self._begin(d)
                span = None
                if tracing is not None:
                    span, token = tracing.start_attempt(d, task, tries, target is not model)
                try:
                    result = await attempt(d, target.id, stats, started, span)
                except BaseException as exc:
                    self._failed(d, stats, exc, started)
                    if span is not None:
                        tracing.end_attempt(span, exc)  # type: ignore[union-attr]
                    if not isinstance(exc, RETRYABLE):
                        raise
                    if stats.m is not None:
                        stats.m.retries.inc()
                    _log_attempt_failure(task, d, tries, exc)
                    last = exc
                else:
                    if span is not None and not stream:
                        tracing.end_attempt(span)  # type: ignore[union-attr]
                    return result, d
                finally:
                    if span is not None:
                        OUTGOING.reset(token)
        assert last is not None
        raise last

    async def run(self, model: Model, task: Task, req: Any, region: str | None = None) -> tuple[Any, Deployment]:
        """Call the backend method serving `task`; returns the result and the deployment that served it."""
        async def call(d: Deployment, model_id: str, stats: DeploymentStats, started: float, span: Any) -> Any:
            result = await getattr(self.backends[d.key], METHOD_FOR_TASK[task])(req, model_id)
            self._succeeded(d, task, stats, started)
            return result

        return await self._first_success(model, task, region, call)

    async def chat(self, model: Model, req: ChatRequest, region: str | None = None) -> tuple[Any, Deployment]:
        return await self.run(model, Task.CHAT, req, region)

    async def open_stream(self, model: Model, req: Any, region: str | None = None, task: Task = Task.CHAT, *,
                          raw_sse: bool = False) -> tuple[ChatChunk | None, AsyncIterator[ChatChunk], Deployment]:
        """Start a stream (chat, or a raw-prompt completion): deployments are tried until one yields its first
        chunk, then it is committed. `raw_sse`: the caller writes OpenAI's chat SSE as it is, so a backend that
        offers `chat_stream_sse` (an OpenAI-compatible upstream) may yield whole blocks of its events (RawSSE)."""
        method = STREAM_METHOD_FOR_TASK[task]

        async def start(d: Deployment, model_id: str, stats: DeploymentStats, started: float, span: Any
                        ) -> tuple[ChatChunk | None, AsyncIterator[ChatChunk]]:
            backend = self.backends[d.key]
            raw = getattr(backend, "chat_stream_sse", None) if raw_sse and task is Task.CHAT else None
            stream = raw(req, model_id) if raw is not None else getattr(backend, method)(req, model_id)
            try:
                first = await stream.__anext__()
            except StopAsyncIteration:
                first = None
            except BaseException:
                await _aclose(stream)
                raise
            return first, self._committed(d, task, stats, started, time.monotonic(), stream, span)

        (first, stream), deployment = await self._first_success(model, task, region, start, stream=True)
        return first, stream, deployment

    async def _committed(self, d: Deployment, task: Task, stats: DeploymentStats, started: float, first: float,
                         stream: AsyncIterator[ChatChunk], span: Any = None) -> AsyncIterator[ChatChunk]:
        failure: BaseException | None = None
        try:
            async for chunk in stream:
                yield chunk
        except BaseException as exc:
            failure = exc
            self._failed(d, stats, exc, started)
            if isinstance(exc, RETRYABLE):
                _log_attempt_failure(task, d, 0, exc, midstream=True)
            raise
        else:
            self._succeeded(d, task, stats, started, first)
        finally:
            if span is not None:
                self.tracing.end_attempt(span, failure)  # type: ignore[union-attr]
            await _aclose(stream)

    # ---------------------------------------------------------------- remote workers

    def set_workers(self, alive: list[Any]) -> None:
        """Make the deployments of live workers match `alive` (rows from the workers table).

        A worker is one more deployment of each model it hosts, named `worker:<name>`; a model only a worker
        knows is added to the catalog. Deployments of workers that went silent are withdrawn at once.
        """
        wanted: dict[str, tuple[Any, dict[str, Any]]] = {}
        for w in alive:
            for entry in w.models:
                wanted[f"{entry['id']}/worker:{w.name}"] = (w, entry)
        for key in [k for k in self.worker_keys if k not in wanted]:
            model = self.catalog.find(key.split("/worker:", 1)[0])
            if model is not None:
                self._on_workers[model.id] = [d for d in self._on_workers.get(model.id, ()) if d.key != key]
            self.worker_keys.pop(key)
            log.info("withdrew deployment %s", key)
        for key, (w, entry) in wanted.items():
            signature = (w.url, w.secret, w.region)
            if self.worker_keys.get(key) == signature:
                continue
            model = self.catalog.find(entry["id"]) or self._announce(entry)
            if model is None:
                continue
            config = DeploymentConfig(name=f"worker:{w.name}", backend="worker", base_url=w.url.rstrip("/") + "/v1",
                                      api_key=w.secret, model=entry["id"], region=w.region, timeout=600)
            deployment = Deployment(model_id=model.id, name=config.name, config=config)  # type: ignore[arg-type]
            self._on_workers[model.id] = [d for d in self._on_workers.get(model.id, ()) if d.key != key] + [deployment]
            self.backends[key] = create_backend(deployment, shared=self.shared)
            if key not in self.stats:
                self.stats[key] = self._stats(deployment)
            self.worker_keys[key] = signature
            log.info("added deployment %s at %s", key, w.url)

    def _announce(self, entry: dict[str, Any]) -> Model | None:
        try:
            tasks = frozenset(Task(t) for t in entry.get("tasks") or ())
            model = Model(id=entry["id"], type=str(entry.get("type") or "text"), tasks=tasks, owned_by="worker",
                          created=int(time.time()), description=entry.get("description"))
            self.catalog.add(model)
        except (ValueError, KeyError) as exc:
            log.warning("ignoring a worker's model %r: %s", entry, exc)
            return None
        return model

    # ---------------------------------------------------------------- state

    async def model_state(self, model: Model) -> ModelState:
        return best_state([await self.backends[d.key].status() for d in self.deployments(model)])

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


def _log_attempt_failure(task: Task, d: Deployment, attempt: int, exc: BaseException, *,
                         midstream: bool = False) -> None:
    """One line per upstream failure, with what an operator needs; the request's log context learns it too, so the
    request's own ≥ 500 line (server/fastlane.py) names where it failed."""
    status = getattr(exc, "upstream_status", None)
    info = REQUEST.get()
    if info is not None:
        info.model, info.deployment, info.upstream_status = d.model_id, d.key, status
        info.attempt = attempt or info.attempt
    when = "mid-stream" if midstream else f"attempt {attempt}"
    log.warning("upstream failure: %s on %s (%s, upstream status %s): %s", task.value, d.key, when, status or "none",
                exc, extra={"model": d.model_id, "deployment": d.key, "upstream_status": status,
                            "attempt": attempt or None, "error_code": getattr(exc, "code", None)})


def best_state(states: list[ModelState]) -> ModelState:
    """A model is as available as its most available deployment."""
    for state in (ModelState.ONLINE, ModelState.WARMING, ModelState.STANDBY):
        if state in states:
            return state
    return ModelState.OFFLINE


async def _aclose(stream: AsyncIterator[Any]) -> None:
    close = getattr(stream, "aclose", None)
    if close is not None:
        await close()
