"""The model host's side of workers: register with the control plane, beat, re-register when forgotten, sign off."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp

from ..config import WorkerSettings
from ..routing import Router

log = logging.getLogger(__name__)


class WorkerAgent:
    """Worker side: register with the control plane, beat, re-register when forgotten, sign off on shutdown."""

    def __init__(self, settings: WorkerSettings, serving_key: str, models: list[dict[str, Any]], router: Router) -> None:
        self.settings = settings
        self.serving_key = serving_key
        self.models = models
        self.router = router
        self.base = settings.control_plane.rstrip("/")
        self.worker_id: str | None = None
        self._headers = {"Authorization": f"Bearer {settings.token}"}

    async def _states(self) -> list[dict[str, Any]]:
        out = []
        for entry in self.models:
            model = self.router.catalog.get(entry["id"])
            out.append({**entry, "state": (await self.router.model_state(model)).value})
        return out

    async def register(self, session: aiohttp.ClientSession) -> None:
        body = {"name": self.settings.name, "url": self.settings.advertise_url, "region": self.settings.region,
                "models": await self._states(), "secret": self.serving_key}
        async with session.post(self.base + "/api/workers/register", json=body, headers=self._headers) as resp:
            data = await resp.json(content_type=None)
            if resp.status != 200:
                raise RuntimeError(f"control plane refused registration ({resp.status}): {data}")
        self.worker_id = data["id"]
        log.info("registered with %s as %s (%s)", self.base, self.settings.name, self.worker_id)

    async def run_forever(self) -> None:
        delay = 1.0
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            while True:
                try:
                    if self.worker_id is None:
                        await self.register(session)
                    url = f"{self.base}/api/workers/{self.worker_id}/heartbeat"
                    async with session.post(url, json={"models": await self._states()}, headers=self._headers) as resp:
                        if resp.status == 404:  # the control plane forgot us (or was reset): join again
                            self.worker_id = None
                            continue
                        if resp.status != 200:
                            raise RuntimeError(f"heartbeat refused ({resp.status}): {await resp.text()}")
                    delay = 1.0
                    await asyncio.sleep(self.settings.heartbeat_seconds)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("control plane at %s: %s; retrying in %.0f s", self.base, exc, delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def sign_off(self) -> None:
        if self.worker_id is None:
            return
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as session:
                await session.post(f"{self.base}/api/workers/{self.worker_id}/deregister", headers=self._headers)
        except Exception as exc:  # the control plane notices the silence anyway
            log.info("could not sign off: %s", exc)
