"""Graceful shutdown: on SIGTERM (or Ctrl-C) stop taking work, let in-flight calls finish within the grace period,
return leased jobs at once, end streams still open at the deadline with their face's error event.

uvicorn owns the signals: it stops accepting connections and waits for open ones up to its
`timeout_graceful_shutdown`, then cancels what is left and runs the app's lifespan shutdown (which drains the
write-behind). It tells the app nothing before that point, so the app chains its own handler behind uvicorn's: the
same signal starts this drain in the event loop. What the drain does, in order:

* now: the job runners, batch drivers and agent engines of this process stop; the jobs they held go back to the
  queue untouched (`JobQueue.release`: the attempt does not count), so a runner elsewhere picks them up at once
  rather than after their lease expires;
* at `shutdown_grace_seconds`: every stream still open is cut (`Shutdown.cut`), its relay writes the face's error
  event and settles on what was sent; uvicorn's own timeout is a few seconds later, for those last writes;
* then the lifespan's shutdown flushes the write-behind until the same deadline (at least `FLUSH_FLOOR_SECONDS`),
  and spools what it could not write for the next start.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)

# uvicorn's hard limit is the grace plus this: cut streams write their error event and close in that time
CUT_MARGIN_SECONDS = 5.0
# the write-behind's final flush gets at least this long, even when streams used the whole grace period
FLUSH_FLOOR_SECONDS = 5.0
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Shutdown:
    """This process's drain: begun once (by a signal, or by the lifespan when it ends first)."""

    def __init__(self, grace_seconds: float) -> None:
        self.grace_seconds = grace_seconds
        self.started: float | None = None  # monotonic time the drain began
        self._streams: set[Callable[[], None]] = set()  # open relays' cut functions
        self._on_begin: list[Callable[[], Awaitable[None]]] = []
        self._tasks: list[asyncio.Task[Any]] = []
        self._deadline: asyncio.Task[None] | None = None
        self.cut_streams = 0

    @property
    def draining(self) -> bool:
        return self.started is not None

    def remaining(self) -> float:
        """Seconds left of the grace period (the whole period before a drain began)."""
        if self.started is None:
            return self.grace_seconds
        return max(0.0, self.started + self.grace_seconds - time.monotonic())

    def flush_seconds(self) -> float:
        """How long the write-behind's final flush may retry: the rest of the grace period, with a floor."""
        return max(self.remaining(), min(FLUSH_FLOOR_SECONDS, self.grace_seconds))

    def on_begin(self, fn: Callable[[], Awaitable[None]]) -> None:
        """Run `fn` as soon as the drain begins (stop claiming jobs, hand leased ones back)."""
        self._on_begin.append(fn)

    def stream(self, cut: Callable[[], None]) -> Callable[[], None]:
        """Register an open stream; returns the function that unregisters it. A stream opened after the deadline
        is cut at once."""
        if self.started is not None and self.remaining() <= 0:
            cut()
        self._streams.add(cut)
        return lambda: self._streams.discard(cut)

    def begin(self) -> None:
        """Start the drain (idempotent; call in the event loop)."""
        if self.started is not None:
            return
        self.started = time.monotonic()
        log.info("shutting down: %d open stream(s), up to %.0f s to finish", len(self._streams), self.grace_seconds)
        for fn in self._on_begin:
            self._tasks.append(asyncio.create_task(_logged(fn)))
        self._deadline = asyncio.create_task(self._cut_at_deadline())

    async def _cut_at_deadline(self) -> None:
        await asyncio.sleep(self.grace_seconds)
        open_ = list(self._streams)
        if open_:
            log.warning("grace period over: ending %d open stream(s) with an error event", len(open_))
        for cut in open_:
            self.cut_streams += 1
            cut()

    async def aclose(self) -> None:
        """The lifespan is ending: make sure the on-begin work ran to its end (it hands jobs back)."""
        self.begin()
        if self._deadline is not None:
            self._deadline.cancel()  # no stream is left to cut: the server waited for them
        for task in [*self._tasks, *([self._deadline] if self._deadline else [])]:
            try:
                await task
            except asyncio.CancelledError:
                pass


async def _logged(fn: Callable[[], Awaitable[None]]) -> None:
    try:
        await fn()
    except Exception:
        log.exception("a shutdown step failed")


def chain_signals(shutdown: Shutdown) -> Callable[[], None]:
    """Behind whatever handles SIGTERM/SIGINT now (uvicorn's), also begin `shutdown` in this event loop. Only the
    main thread can; elsewhere (a server in a test's thread) this does nothing. Returns the undo."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    loop = asyncio.get_running_loop()
    previous = {sig: signal.getsignal(sig) for sig in SIGNALS}

    def handler(sig: int, frame: Any) -> None:
        before = previous.get(sig)
        if callable(before):
            before(sig, frame)
        loop.call_soon_threadsafe(shutdown.begin)

    for sig in SIGNALS:
        signal.signal(sig, handler)

    def undo() -> None:
        for sig, before in previous.items():
            if signal.getsignal(sig) is handler:
                signal.signal(sig, before)
    return undo
