"""The control plane's side of workers: the database says which are alive, and every replica's router follows."""

from __future__ import annotations

import asyncio
import logging

from ..routing import Router
from ..store.db import Store
from .repo import WorkerRepo

log = logging.getLogger(__name__)


class WorkerRegistry:
    """Control plane: the database says which workers are alive; every replica's router follows it."""

    def __init__(self, store: Store, router: Router, *, timeout: float, interval: float) -> None:
        self.repo = WorkerRepo(store)
        self.router = router
        self.timeout = timeout
        self.interval = interval

    async def sync(self) -> None:
        rows = await self.repo.list()
        self.router.set_workers([w for w in rows if w.alive(self.timeout)])

    async def run_forever(self) -> None:
        while True:
            try:
                await self.sync()
            except Exception:
                log.exception("worker sync failed; keeping the last known set")
            await asyncio.sleep(min(self.interval, 1.0))
