"""`modelyard runner`: job runners without the HTTP server, against the database the gateways share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

from ..agents.service import AgentService
from ..batches.service import BatchService
from ..catalog import Catalog, build_catalog
from ..config import Settings
from ..context import AppContext
from ..files import FileService
from ..library.service import LibraryService
from ..media import MediaStore
from ..pipeline.auth import Authenticator
from ..pipeline.calls import CallPath
from ..pipeline.gate import Gate
from ..routing import Router
from ..storage import build_storage
from ..store.db import Store
from ..store.secrets import SecretKeyError, secret_box
from ..store.secrets import check as check_secrets
from ..responses.repo import ResponseLog
from ..responses.websearch import build_search
from ..tracing import Tracing, build_tracing
from ..workers.registry import WorkerRegistry
from .service import JobService

log = logging.getLogger(__name__)


def runner_context(settings: Settings, store: Store, catalog: Catalog, router: Router,
                   tracing: Tracing | None = None) -> AppContext:
    """The context job runners work in, outside an HTTP server: the same call path, store and media as a
    gateway's (no requests to authenticate, so its key cache stays empty)."""
    gate = Gate(settings, store)
    auth = Authenticator(store, ttl=settings.auth_cache_ttl)
    storage = build_storage(settings)  # the gateways' bucket: a runner on another machine shares only that
    ctx = AppContext(settings=settings, catalog=catalog, store=store, auth=auth, gate=gate,
                     calls=CallPath(gate, auth, tracing=tracing), responses=ResponseLog(store),
                     search=build_search(settings), storage=storage, media=MediaStore(storage, settings.media_url_ttl),
                     files=FileService.from_settings(settings, store, storage), tracing=tracing)
    ctx.router = router
    return ctx


async def run_runner(settings: Settings, *, name: str | None = None) -> None:
    """Until SIGTERM/SIGINT: then running jobs go back to the queue (not waiting out their leases)."""
    store = Store(settings.resolved_database_url, secrets=secret_box(settings))
    await store.migrate()
    try:
        await check_secrets(store, store.secrets)  # type: ignore[arg-type]
    except SecretKeyError as exc:
        raise SystemExit(f"error: {exc}") from None
    catalog = build_catalog(settings)
    tracing = build_tracing(settings)
    router = Router(catalog, cooldown_failures=settings.cooldown_failures, cooldown_seconds=settings.cooldown_seconds,
                    tracing=tracing)
    ctx = runner_context(settings, store, catalog, router, tracing)
    gate = ctx.gate
    service = JobService(ctx)
    ctx.jobs = service
    service.runner = service.make_runner(name)
    batches = BatchService(ctx)  # batch lines run here, and batches are driven here
    ctx.agents = agents = AgentService(ctx)  # agent nodes run here, and runs are advanced here
    ctx.library = LibraryService(ctx)  # jobs finished here become library items here
    # remote workers' models are deployments here too, as in the gateway
    workers = WorkerRegistry(store, router, timeout=settings.worker_timeout_seconds,
                             interval=settings.worker_heartbeat_seconds)
    await gate.start(router, catalog)  # admission here (batch lines) prices and filters as a gateway does
    await ctx.library.start(background=True)
    tasks = [asyncio.create_task(service.runner.run_forever()), asyncio.create_task(batches.driver.run_forever()),
             asyncio.create_task(agents.engine.run_forever()),
             asyncio.create_task(service.webhooks.run_forever(settings.job_poll_seconds)),
             asyncio.create_task(workers.run_forever())]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await ctx.library.aclose()
        await gate.aclose()
        await router.aclose()
        await ctx.storage.aclose()
        await store.aclose()
        if tracing is not None:
            await asyncio.to_thread(tracing.shutdown)
