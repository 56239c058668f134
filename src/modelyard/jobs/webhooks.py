"""Webhook delivery: Standard Webhooks signatures, retries with backoff, never to private addresses."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import aiohttp
import orjson

from ..errors import InvalidRequest
from ..net import BlockedURL, check_url, guarded_session
from .queue import Job, JobQueue

log = logging.getLogger(__name__)
SECRET_PREFIX = "whsec_"


def org_secret(master: bytes, org_id: str) -> str:
    """Each org verifies with its own key (derived, so nothing per org is stored): one org cannot forge another's."""
    key = hmac.new(master, f"webhook:{org_id}".encode(), hashlib.sha256).digest()
    return SECRET_PREFIX + base64.b64encode(key).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value per the Standard Webhooks spec: v1,<base64 HMAC-SHA256(id.ts.body)>."""
    key = base64.b64decode(secret.removeprefix(SECRET_PREFIX))
    mac = hmac.new(key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


def load_master(setting: str | None, data_dir: Path) -> bytes:
    if setting:
        return setting.encode()
    path = data_dir / "webhook-secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
        except FileExistsError:
            pass  # another process made it first
    return path.read_text().strip().encode()


class WebhookSender:
    """Delivers due webhooks from the jobs table; any runner may deliver any job's webhook, once at a time."""

    def __init__(self, queue: JobQueue, master: bytes, *, render: Callable[[Job], Awaitable[dict[str, Any]]],
                 allow_private: bool, timeout: float, max_attempts: int, backoff: float) -> None:
        self.queue = queue
        self.master = master
        self.render = render
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.wake = asyncio.Event()

    async def run_forever(self, poll: float) -> None:
        while True:
            try:
                for job in await self.queue.due_webhooks():
                    await self.deliver(job)
            except Exception:
                log.exception("webhook delivery pass failed")
            with_timeout = asyncio.wait_for(self.wake.wait(), poll)
            try:
                await with_timeout
            except asyncio.TimeoutError:
                pass
            self.wake.clear()

    async def deliver(self, job: Job) -> bool:
        ok, permanent = await self.send(job.org_id, f"msg_{job.id}", job.webhook_url or "",
                                        orjson.dumps(await self.render(job)))
        await self.queue.webhook_done(job.id, delivered=ok, retry_at=self.retry_at(job.webhook_attempts, ok,
                                                                                  permanent))
        return ok

    def retry_at(self, attempts: int, ok: bool, permanent: bool) -> float | None:
        """When to try a failed delivery again (None: never again)."""
        if not ok and not permanent and attempts < self.max_attempts:
            return time.time() + self.backoff * 2 ** (attempts - 1)
        return None

    async def send(self, org_id: str, msg_id: str, url: str, body: bytes) -> tuple[bool, bool]:
        """One signed POST (any event: a job's, a batch's): (delivered, failed for good). `msg_id` is the same on
        every retry, so receivers can drop duplicates."""
        ts = int(time.time())
        headers = {"content-type": "application/json", "webhook-id": msg_id, "webhook-timestamp": str(ts),
                   "webhook-signature": sign(org_secret(self.master, org_id), msg_id, ts, body),
                   "user-agent": "Modelyard-Webhooks/1"}
        ok, permanent = False, False
        try:
            await check_url(url, "webhook_url", allow_private=self.allow_private)
            async with guarded_session(allow_private=self.allow_private, timeout=self.timeout,
                                       param="webhook_url") as session:
                async with session.post(url, data=body, headers=headers, allow_redirects=False) as resp:
                    ok = 200 <= resp.status < 300
                    if not ok:
                        log.info("webhook %s answered %d", msg_id, resp.status)
        except BlockedURL:  # a private address: retrying will not help
            permanent = True
            log.warning("webhook %s refused: %s is a private address", msg_id, url)
        except InvalidRequest as exc:  # a host that does not resolve (now) may resolve later
            permanent = exc.code != "url_unresolvable"
            log.warning("webhook %s not sent: %s", msg_id, exc.message)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.info("webhook %s failed: %r", msg_id, exc)
        return ok, permanent
