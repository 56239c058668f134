"""The background loop of the async plane's drivers (batches, agent runs): a pass, then wait to be woken or polled."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Awaitable, Callable

log = logging.getLogger(__name__)


async def passes(pass_once: Callable[[], Awaitable[None]], wake: asyncio.Event, poll: float, what: str) -> None:
    """Run `pass_once` forever: again as soon as `wake` is set, or after `poll` seconds; a pass that fails is
    logged and the next one tries again (a driver never dies of one bad row)."""
    while True:
        try:
            await pass_once()
        except Exception:
            log.exception("%s pass failed; retrying after %.1fs", what, poll)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(wake.wait(), poll)
        wake.clear()
