"""Webhook deliveries kept on the rows they report (jobs, batches): claiming the due ones, recording the outcome.

Both tables carry `webhook_status` (pending / delivered / failed), `webhook_next_at` and `webhook_attempts`; one
copy of the claim keeps the two deliverers' rules the same.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, TypeVar

from sqlalchemy import Table, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")
CLAIM_SECONDS = 120  # a claimed delivery is not due again for this long: one deliverer at a time


async def claim_due(engine: AsyncEngine, table: Table, now: float, limit: int,
                    to_object: Callable[[Mapping[str, Any]], T]) -> list[T]:
    """Claim deliveries that are due: each goes to one deliverer (its next_at moves past the claim's timeout)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(select(table).where(table.c.webhook_status == "pending",
                                                       table.c.webhook_next_at <= now).limit(limit))).all()
    claimed = []
    for r in rows:
        q = (update(table).where(table.c.id == r.id, table.c.webhook_status == "pending",
                                 table.c.webhook_next_at == r.webhook_next_at)
             .values(webhook_next_at=now + CLAIM_SECONDS, webhook_attempts=table.c.webhook_attempts + 1))
        async with engine.begin() as conn:
            if (await conn.execute(q)).rowcount == 1:
                item = to_object(r._mapping)
                item.webhook_attempts += 1  # type: ignore[attr-defined]
                claimed.append(item)
    return claimed


async def mark_done(engine: AsyncEngine, table: Table, row_id: str, *, delivered: bool,
                    retry_at: float | None) -> None:
    """Delivered, due again at `retry_at`, or failed for good (no retry left)."""
    status = "delivered" if delivered else ("pending" if retry_at is not None else "failed")
    async with engine.begin() as conn:
        await conn.execute(update(table).where(table.c.id == row_id)
                           .values(webhook_status=status, webhook_next_at=retry_at))
