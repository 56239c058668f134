"""`flush()` means everything queued when it was called is written, even when the writer's loop spools part of the
queue while the flush's own write is slow (the loop treats a write running past `stuck_seconds` as hung)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from modelyard.store.writebehind import Sink, WriteBehind


async def test_flush_writes_what_the_loop_spooled_while_its_write_was_slow(tmp_path: Path) -> None:
    written: dict[int, dict[str, Any]] = {}  # sinks write idempotently by id: the batch in flight is spooled too
    slow = asyncio.Event()
    slow.set()

    async def write(rows: list[dict[str, Any]]) -> None:
        if slow.is_set():  # the first batch takes several ticks: the loop spools what is still in memory
            slow.clear()
            await asyncio.sleep(1.0)
        written.update((r["id"], r) for r in rows)

    wb = WriteBehind(tmp_path / "spool", tick_seconds=0.1, stuck_seconds=0.1)
    wb.register(Sink("item", write, interval=60, batch=1))  # interval: only the flush writes, one row per batch
    await wb.start()
    try:
        for n in range(3):
            wb.put("item", {"id": n})
        await wb.flush()
        assert sorted(written) == [0, 1, 2]
        assert wb.spool is not None and wb.spool.records == 0 and wb.depth() == 0
    finally:
        await wb.aclose()


async def test_a_slow_drain_that_keeps_finishing_batches_is_not_spooled(tmp_path: Path) -> None:
    """The stuck bound times each batch write: ten batches of 50 ms take five times the bound in all, and nothing is
    spooled (spooling a writer that is only behind adds work when it can least afford it); a batch that itself runs
    past the bound still is (the test above)."""
    written: list[int] = []

    async def write(rows: list[dict[str, Any]]) -> None:
        await asyncio.sleep(0.05)
        written.extend(r["id"] for r in rows)

    wb = WriteBehind(tmp_path / "spool", tick_seconds=0.1, stuck_seconds=0.1)
    wb.register(Sink("item", write, interval=60, batch=1))
    await wb.start()
    try:
        for n in range(10):
            wb.put("item", {"id": n})
        await wb.flush()
        assert written == list(range(10))
        assert wb.spooled == 0 and wb.stats()["spooled"] == 0 and wb.depth() == 0
    finally:
        await wb.aclose()
