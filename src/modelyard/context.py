"""The application context: every long-lived part of one Modelyard process, built once by `create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the parts import nothing from here at run time: no cycles through the context
    from .accounts.service import Accounts
    from .agents.service import AgentService
    from .batches.service import BatchService
    from .catalog import Catalog
    from .config import Settings
    from .files import FileService
    from .jobs.service import JobService
    from .library.service import LibraryService
    from .media import MediaStore
    from .pipeline.auth import Authenticator, StaticKeyAuthenticator
    from .pipeline.calls import CallPath
    from .pipeline.gate import Gate
    from .routing import Router
    from .server.shutdown import Shutdown
    from .storage import Storage
    from .tracing import Tracing
    from .store.db import Store
    from .telemetry import Metrics
    from .responses.repo import ResponseLog
    from .responses.websearch import SearchProvider
    from .workers.registry import WorkerRegistry


@dataclass
class AppContext:
    """What routes reach as `request.app.state.ctx`, and what job runners run with.

    `router` is made when the server starts (its pooled HTTP clients bind to the running event loop); `jobs` and
    `workers` exist on a gateway, not on a `modelyard worker` model host.
    """

    settings: Settings
    catalog: Catalog
    store: Store
    auth: Authenticator | StaticKeyAuthenticator
    storage: Storage  # files, batch outputs and media: the data dir or a bucket shared across machines
    media: MediaStore
    files: FileService
    gate: Gate
    calls: CallPath
    responses: ResponseLog  # stored Responses API responses, written behind the request
    search: SearchProvider  # the hosted web_search tool's provider
    router: Router = field(init=False)
    jobs: JobService | None = None  # None on a model host
    batches: BatchService | None = None  # None on a model host
    agents: AgentService | None = None  # None on a model host
    workers: WorkerRegistry | None = None  # None on a model host
    library: LibraryService | None = None  # None on a model host
    shutdown: Shutdown | None = None  # a server's drain on SIGTERM: jobs handed back, streams cut at its deadline
    metrics: Metrics | None = None  # None when metrics are off (settings.metrics_enabled) and outside a server
    tracing: Tracing | None = None  # None while tracing is off
    accounts: Accounts | None = None  # people and console sessions; None on a model host
