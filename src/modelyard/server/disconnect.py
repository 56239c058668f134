"""Cancel work whose client has gone: a non-streaming call's result is worthless once nobody is listening."""

from __future__ import annotations

import asyncio
from typing import Awaitable, TypeVar

from starlette.requests import Request
from starlette.types import Receive

T = TypeVar("T")


class ClientGone(Exception):
    """The client closed the connection before the answer was ready."""


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await `work` in this task, cancelling it if the client disconnects first. Call after the body was read."""
    return await watch_disconnect(request.receive, work)


async def watch_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await `work` in this task, cancelling it if `receive` reports a disconnect first.

    One watcher task per call (no second task, no asyncio.wait): on a hang-up it cancels the task running `work`,
    which reaches the upstream call (its connection closes) or the local generation (it stops between tokens).
    """
    me = asyncio.current_task()
    gone = False

    async def watch() -> None:
        nonlocal gone
        while (await receive())["type"] != "http.disconnect":
            pass
        gone = True
        if me is not None:
            me.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        return await work
    except asyncio.CancelledError:
        if gone and me is not None:
            me.uncancel()  # the cancel was ours, and is answered by ClientGone
            raise ClientGone() from None
        raise
    finally:
        watcher.cancel()
