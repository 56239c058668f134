"""Job test helpers: echo models (the no-op task), a failing upstream, fast runner intervals, a webhook receiver."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .servers import free_port
from .waiting import wait_until

FAST = {"job_poll_seconds": 0.2, "job_heartbeat_seconds": 0.3, "job_lease_seconds": 2.0, "job_backoff_seconds": 0.1,
        "job_backoff_max_seconds": 0.5, "webhook_backoff_seconds": 0.2, "webhook_timeout_seconds": 3.0,
        "builtin_models": True}


def job_models(delay: float = 2.0) -> list[dict[str, Any]]:
    return [
        {"id": "echo", "type": "text", "deployments": [{"backend": "echo"}]},
        {"id": "echo-slow", "type": "text", "deployments": [{"backend": "echo", "options": {"delay_seconds": delay}}]},
        # a provider that refuses connections: every attempt fails retryably
        {"id": "always-down", "type": "text",
         "deployments": [{"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout": 2,
                          "connect_timeout": 1}]},
    ]


def chat_payload(text: str = "hello jobs") -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def wait_status(client: httpx.Client, url: str, headers: dict[str, str], want: set[str], timeout: float = 30) -> dict:
    """Poll a job until its status is one of `want` (its runner works on another thread or process)."""
    last: dict = {}

    def reached() -> dict | None:
        last.update(client.get(url, headers=headers).json())
        return dict(last) if last.get("status") in want else None
    return wait_until(reached, timeout, f"{url} to reach {want} (last: {last})", interval=0.1)


@dataclass
class Receiver:
    """Records webhook POSTs; answers 500 to the first `fail_first` of them."""

    fail_first: int = 0
    calls: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    lock: threading.Condition = field(default_factory=threading.Condition)

    def wait_for_calls(self, n: int, timeout: float = 30) -> list[tuple[dict[str, str], bytes]]:
        """The first `n` calls, once they have come (told by the receiving thread, not by polling)."""
        with self.lock:
            assert self.lock.wait_for(lambda: len(self.calls) >= n, timeout), f"{len(self.calls)} of {n} webhooks"
            return self.calls[:n]

    def app(self) -> Starlette:
        async def hook(request: Request) -> Response:
            body = await request.body()
            with self.lock:
                self.calls.append((dict(request.headers), body))
                n = len(self.calls)
                self.lock.notify_all()
            return Response(status_code=500 if n <= self.fail_first else 204)

        return Starlette(routes=[Route("/hook", hook, methods=["POST"])])
