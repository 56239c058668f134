"""Run ASGI apps on real sockets in background threads, so tests talk HTTP to them like any client."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import uvicorn

from .waiting import wait_until


class ServerThread:
    """uvicorn serving `app` on 127.0.0.1:<free port> in its own thread and event loop."""

    def __init__(self, app: Any, *, lifespan: str = "on") -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, lifespan=lifespan, log_level="warning", timeout_graceful_shutdown=3)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self._run, daemon=True, name=f"server-{self.port}")
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.server.serve(sockets=[self.sock]))

    def __enter__(self) -> "ServerThread":
        self.thread.start()

        def started() -> bool:
            if not self.thread.is_alive():
                raise RuntimeError("server thread died during startup")
            return self.server.started
        wait_until(started, 30, "the server to start", interval=0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
