"""The app factory: everything hangs off the app `create_app(settings)` builds, so every test builds its own."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import sys
from pathlib import Path
from typing import Any, AsyncIterator

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from .. import __version__
from ..bootstrap import announce, bootstrap
from ..catalog import Catalog, build_catalog
from ..config import Settings, load_settings
from ..context import AppContext
from ..files import FileService
from ..media import MediaStore
from ..errors import ModelyardError
from ..logs import setup_logging
from ..accounts.service import Accounts
from ..agents.service import AgentService
from ..batches.service import BatchService
from ..jobs.service import JobService
from ..library.service import LibraryService
from ..pipeline.auth import Authenticator, StaticKeyAuthenticator
from ..pipeline.calls import CallPath
from ..pipeline.gate import Gate
from ..pipeline.requestlog import Retention
from ..routing import Router
from ..workers.agent import WorkerAgent
from ..workers.registry import WorkerRegistry
from ..storage import build_storage
from ..store.audit_repo import AuditRepo
from ..store.repo import OrgRepo, new_secret
from ..telemetry import Metrics
from ..telemetry.metrics import multiprocess
from ..tracing import build_tracing
from ..store.db import Store
from ..store.secrets import secret_box
from ..responses.repo import ResponseLog
from ..responses.websearch import build_search
from . import errors, openapi
from .disconnect import watch_disconnect
from .fastlane import FastLane
from .process import limit_malloc_arenas
from .shutdown import Shutdown, chain_signals
from .routes import account as account_routes
from .routes import agents as agent_routes
from .routes import members as member_routes
from .routes import session as session_routes
from .routes import anthropic as anthropic_routes
from .routes import batches as batch_routes
from .routes import catalog as catalog_routes
from .routes import fal as fal_routes
from .routes import files as file_routes
from .routes import gemini as gemini_routes
from .routes import jobs as job_routes
from .routes import library as library_routes
from .routes import logs as log_routes
from .routes import openai as openai_routes
from .routes import orgs as org_routes
from .routes import studio as studio_routes
from .routes import openai_media as openai_media_routes
from .routes import openai_text as openai_text_routes
from .routes import platform as platform_routes
from .routes import workers as worker_routes
from .routes import console as console_routes
from .routes import service as service_routes

log = logging.getLogger(__name__)
USAGE_FLUSH_SECONDS = 5.0
IDLE_CHECK_SECONDS = 10.0


# The cyclic collector's thresholds in a server process: a young collection every 50,000 net allocations, not 700.
# With a thousand open streams the default ran ~700 collections in 25 s (0.7 s of CPU, pauses up to 80 ms as
# streams' objects were promoted); at 50,000 it ran 8 (0.1 s). Objects freed by reference counting (nearly all of
# a chunk's) never count; cycles still go, a little later.
GC_THRESHOLDS = (50_000, 10, 10)

# How long a thread may keep the GIL while another waits for it, in a server process (CPython's default: 5 ms).
# The write-behind's database calls run on threads (aiosqlite, the rows' encoding); while the event loop is busy
# serving calls, each of their hand-backs waited out the whole interval, so under a saturating load (bench/overhead.py
# at 16 connections) a flush ran past its 1 s stuck bound and was spooled: 38,903 records in one run, none at 0.5 ms.
# A waiting event loop gets the GIL back sooner too; the price is more switches while two threads run Python.
SWITCH_INTERVAL = 0.0005


def create_app(settings: Settings | None = None, *, freeze_gc: bool = False) -> FastAPI:
    """`freeze_gc`: a server process (not a test) sets it; once started, everything alive is moved out of the
    cyclic collector's sight (`gc.freeze`), so that a full collection scans only what requests made since, not
    the ~150,000 objects of the imported modules (otherwise one costs 60-300 ms: a stall every open stream
    feels), and the youngest generation is collected every 50,000 net allocations rather than 700
    (`GC_THRESHOLDS`; see docs/performance.md); threads hand the GIL back after 0.5 ms (`SWITCH_INTERVAL`)."""
    settings = settings or load_settings()
    catalog = build_catalog(settings)
    # a model host keeps no database secrets; a gateway seals workers' serving keys with this
    store = Store(settings.resolved_database_url,
                  secrets=None if settings.worker is not None else secret_box(settings))
    serving_key = new_secret()  # our key format: masked in any log line it reaches
    tracing = build_tracing(settings)
    if settings.worker is not None:  # a model host: its models only, answering only its control plane
        catalog = _worker_catalog(catalog, settings.worker.models)
        auth: Any = StaticKeyAuthenticator(serving_key)
    else:
        auth = Authenticator(store, ttl=settings.auth_cache_ttl)
    gate = Gate(settings, store)
    metrics = Metrics(catalog, names=settings.metrics_names) if settings.metrics_enabled else None
    if metrics is not None:
        gate.metrics = metrics
        if gate.writer is not None:
            gate.writer.observer = metrics
    if gate.writer is not None and isinstance(auth, Authenticator):
        auth.attach(gate.writer)  # token counters go through the gate's write-behind too
    storage = build_storage(settings)
    shutdown = Shutdown(settings.shutdown_grace_seconds)
    ctx = AppContext(settings=settings, catalog=catalog, store=store, auth=auth, gate=gate,
                     calls=CallPath(gate, auth, watch=watch_disconnect, streams=shutdown.stream,
                                    metrics=metrics, tracing=tracing), storage=storage,
                     media=MediaStore(storage, settings.media_url_ttl), 
                     files=FileService.from_settings(settings, store, storage),
                     responses=ResponseLog(store, flush_seconds=settings.responses_flush_seconds, writer=gate.writer),
                     search=build_search(settings), shutdown=shutdown, metrics=metrics,
                     tracing=tracing)
    if settings.worker is None:
        ctx.jobs = JobService(ctx)
        ctx.batches = BatchService(ctx)
        ctx.agents = AgentService(ctx)
        ctx.library = LibraryService(ctx)
        ctx.accounts = Accounts(settings, store, auth)  # sessions resolve through ctx.auth once attached

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.bootstrap_on_startup and settings.worker is None:
            announce(await bootstrap(settings, store))
        # after the loop starts: pooled HTTP clients bind to it
        ctx.router = Router(catalog, cooldown_failures=settings.cooldown_failures, cooldown_seconds=settings.cooldown_seconds,
                            metrics=metrics, tracing=tracing)
        await ctx.router.preload()
        await ctx.gate.start(ctx.router, catalog)
        await ctx.responses.start()
        tasks = [asyncio.create_task(_flush_forever(ctx)), asyncio.create_task(_unload_idle_forever(ctx))]
        if metrics is not None and multiprocess():  # `serve --workers N`: values reach the shared files
            tasks.append(asyncio.create_task(metrics.sync_forever()))
        if metrics is not None and gate.writer is None:  # a model host: no write-behind tick folds its metrics
            tasks.append(asyncio.create_task(metrics.fold_forever()))
        agent = None
        if settings.worker is not None:
            agent = WorkerAgent(settings.worker, serving_key, _announced(catalog), ctx.router)
            tasks.append(asyncio.create_task(agent.run_forever()))
        else:
            ctx.workers = WorkerRegistry(store, ctx.router, timeout=settings.worker_timeout_seconds,
                                         interval=settings.worker_heartbeat_seconds)
            tasks.append(asyncio.create_task(ctx.workers.run_forever()))
            tasks.append(asyncio.create_task(ctx.files.sweep_forever()))
            upkeep = Retention(ctx.gate.requests.repo, settings.request_log_retention_days,
                               every=settings.request_log_upkeep_seconds, org_days=OrgRepo(store).retention_days,
                               rollup_days={"minute": settings.usage_rollup_minute_days,
                                            "hour": settings.usage_rollup_hour_days},
                               audit=AuditRepo(store), audit_days=settings.audit_log_retention_days)
            tasks.append(asyncio.create_task(upkeep.run_forever()))
            ctx.jobs.start(runner=settings.job_runner)
            if settings.job_runner:  # batches and agent runs are driven where their jobs run
                ctx.batches.start()
                ctx.agents.start()
            await ctx.library.start(background=settings.job_runner)  # prompts are embedded where runners run
        # SIGTERM reaches uvicorn first (it stops accepting and waits for open connections); this hears it too, to
        # hand leased jobs back at once and cut streams at the deadline (server/shutdown.py)
        shutdown.on_begin(lambda: _stop_async_plane(ctx))
        unchain = chain_signals(shutdown)
        if freeze_gc:
            gc.collect()  # start-up's garbage goes now rather than staying frozen
            gc.freeze()
            gc.set_threshold(*GC_THRESHOLDS)
            sys.setswitchinterval(SWITCH_INTERVAL)
        try:
            yield
        finally:
            unchain()
            await shutdown.aclose()  # the async plane stopped: running jobs went back to the queue
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if agent is not None:
                await agent.sign_off()
            if ctx.library is not None:  # its queued items drain with the write-behind below
                await ctx.library.aclose()
            # one drain for every off-path record (usage, money, counters, responses), retried until the grace
            # period (counted from the signal) ends, for at least a few seconds; the rest is spooled
            if ctx.gate.writer is not None:
                ctx.gate.writer.grace_seconds = shutdown.flush_seconds()
            await ctx.gate.aclose()
            await ctx.responses.aclose()
            if ctx.gate.writer is None:
                await ctx.auth.flush_usage()
            await ctx.search.aclose()
            if ctx.accounts is not None:
                await ctx.accounts.aclose()
            await ctx.router.aclose()
            await storage.aclose()
            await store.aclose()
            if metrics is not None:
                metrics.close()
            if tracing is not None:
                await asyncio.to_thread(tracing.shutdown)  # the last spans are exported (a blocking HTTP post)

    app = FastAPI(
        title="Modelyard",
        version=__version__,
        description=openapi.DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    dialects = errors.Dialects()  # each face's error envelope, by path prefix
    for renderer, prefixes in (anthropic_routes.ERRORS, gemini_routes.ERRORS, fal_routes.ERRORS, job_routes.ERRORS,
                               studio_routes.ERRORS, agent_routes.ERRORS, catalog_routes.ERRORS):
        dialects.register(renderer, prefixes)
    errors.install(app, dialects)
    # before the OpenAI mounts: /api/v1 is one of their prefixes, and /api/v1/me and /balance are the studio's
    app.include_router(account_routes.router)
    app.include_router(member_routes.router)
    app.include_router(session_routes.router)
    app.include_router(org_routes.router)
    app.include_router(log_routes.router)
    for r in (openai_routes.router, openai_media_routes.router, openai_text_routes.router, file_routes.router,
              batch_routes.router):
        app.include_router(r, prefix="/v1")
        # The same OpenAI surface under the prefixes other clients expect; documented once, under /v1.
        for prefix in ("/openai/v1", "/api/v1"):
            app.include_router(r, prefix=prefix, include_in_schema=False)
    # Anthropic's SDK appends /v1/messages to its base URL; Gemini's appends /v1beta (some proxies use /api/v1beta).
    app.include_router(anthropic_routes.router, prefix="/v1")
    app.include_router(anthropic_routes.router, prefix="/anthropic/v1", include_in_schema=False)
    app.include_router(gemini_routes.router, prefix="/v1beta")
    app.include_router(gemini_routes.router, prefix="/api/v1beta", include_in_schema=False)
    app.include_router(platform_routes.router)
    app.include_router(catalog_routes.router)
    app.include_router(job_routes.router)
    app.include_router(agent_routes.router)
    app.include_router(library_routes.router)
    app.include_router(studio_routes.router)
    app.include_router(fal_routes.router)
    app.include_router(worker_routes.router)
    app.include_router(service_routes.router)
    app.include_router(console_routes.router)  # the web console's pages; their data comes from the API above
    app.router.routes.append(console_routes.static_mount())
    openapi.install(app)
    hot = {("POST", f"{prefix}/chat/completions"): openai_routes.chat_completions
           for prefix in ("/v1", "/openai/v1", "/api/v1")}
    cors = None
    if settings.cors_origins:
        def cors(inner: Any) -> Any:
            return CORSMiddleware(inner, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"],
                                  expose_headers=["x-request-id", "x-modelyard-model", "x-modelyard-deployment",
                                                  "retry-after", "x-ratelimit-limit-requests",
                                                  "x-ratelimit-remaining-requests", "x-ratelimit-reset-requests",
                                                  "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
                                                  "x-ratelimit-reset-tokens"])
    return FastLane(app, hot, outer=cors, tracing=tracing)  # type: ignore[return-value]


def _worker_catalog(catalog: Catalog, names: list[str]) -> Catalog:
    try:
        chosen = {catalog.get(name).id for name in names}
    except ModelyardError as exc:
        raise SystemExit(f"worker: {exc.message} (known: {', '.join(m.id for m in catalog)})") from None
    return Catalog([m for m in catalog if m.id in chosen])


def _announced(catalog: Catalog) -> list[dict[str, Any]]:
    return [{"id": m.id, "type": m.type, "tasks": sorted(t.value for t in m.tasks), "description": m.description}
            for m in catalog]


async def _stop_async_plane(ctx: AppContext) -> None:
    """Stop claiming work; running jobs go back to the queue untouched (before the router closes)."""
    if ctx.agents is not None:
        await ctx.agents.aclose()
    if ctx.batches is not None:
        await ctx.batches.aclose()
    if ctx.jobs is not None:
        await ctx.jobs.aclose()


async def _unload_idle_forever(ctx: AppContext) -> None:
    while True:
        await asyncio.sleep(IDLE_CHECK_SECONDS)
        try:
            await ctx.router.unload_idle()
        except Exception:
            log.exception("idle unload failed")


async def _flush_forever(ctx: AppContext) -> None:
    if ctx.gate.writer is not None:
        return  # the write-behind collects the counters itself
    while True:
        await asyncio.sleep(USAGE_FLUSH_SECONDS)
        await ctx.auth.flush_usage()


SETTINGS_FILE_ENV = "MODELYARD_SETTINGS_FILE"


def write_settings_file(settings: Settings) -> Path:
    """The resolved settings (flags, config file, environment), for `serve --workers N`'s worker processes.
    Readable by the owner only: it holds the same secrets as the config it came from."""
    path = settings.data_dir / "run" / "settings.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(settings.model_dump_json(by_alias=True))
    return path


def app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory`: the settings `serve --workers N` resolved (see `write_settings_file`), else
    those of the config file and environment."""
    limit_malloc_arenas()  # a worker process of `serve --workers N`: before its threads start
    handed = os.environ.get(SETTINGS_FILE_ENV)
    settings = Settings.model_validate_json(Path(handed).read_text()) if handed else load_settings()
    setup_logging(settings)  # a worker process of `serve --workers N` starts with logging unconfigured
    return create_app(settings, freeze_gc=True)
