"""Usage records: one per call, queued on the request path and written in batches by a background flush."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from ..errors import InvalidRequest
from ..store.billing_repo import UsageRepo
from ..store.db import Store
from ..store.repo import new_id
from .units import Units

log = logging.getLogger(__name__)
MAX_PENDING = 200_000  # past this, a database that keeps failing costs records, not the server's memory
MAX_RANGE_DAYS = 366
FLUSH_CHUNK = 500  # rows per transaction; the event loop runs requests between chunks


class UsageRecorder:
    """Collects usage rows in memory; `flush` writes them in one transaction (every second, and at shutdown)."""

    def __init__(self, store: Store) -> None:
        self.repo = UsageRepo(store)
        self._pending: list[tuple[Any, ...]] = []  # raw values; rows are built at flush, off the request path
        self._failed: list[dict[str, Any]] = []

    def record(self, *, org_id: str, token_id: str | None, model_id: str, task: str, units: Units | None,
               price_micros: int, status: str, latency_ms: int, region: str | None, flagged: bool) -> None:
        self._pending.append((org_id, token_id, model_id, task, units, price_micros, status, latency_ms, region,
                              flagged, time.time()))

    @staticmethod
    def _row(raw: tuple[Any, ...]) -> dict[str, Any]:
        org_id, token_id, model_id, task, units, price, status, latency_ms, region, flagged, at = raw
        when = datetime.fromtimestamp(at, timezone.utc)
        fields = {k: getattr(units, k) for k in units.__slots__ if getattr(units, k)} if units is not None else {}
        return {"id": new_id("use"), "org_id": org_id, "token_id": token_id, "model_id": model_id, "task": task,
                "units": fields, "input_tokens": units.input_tokens if units else 0,
                "output_tokens": units.output_tokens if units else 0, "price_micros": price, "status": status,
                "latency_ms": latency_ms, "region": region, "flagged": flagged, "day": when.strftime("%Y-%m-%d"),
                "created_at": when}

    async def flush(self) -> None:
        """Write what is queued, FLUSH_CHUNK rows per transaction. Building and binding rows is Python work on the
        event loop: one transaction holding a busy second's rows stalled every request for tens of milliseconds,
        so the loop gets a turn between chunks."""
        queued: list[Any] = self._failed + self._pending  # rows (dicts) that failed before, then raw records
        self._failed, self._pending = [], []
        for start in range(0, len(queued), FLUSH_CHUNK):
            chunk = [self._as_row(r) for r in queued[start:start + FLUSH_CHUNK]]
            try:
                await self.repo.insert_many(chunk)
            except Exception:
                rest = chunk + [self._as_row(r) for r in queued[start + FLUSH_CHUNK:]]
                log.exception("could not write %d usage records; keeping them for the next flush", len(rest))
                self._failed = (rest + self._failed)[-MAX_PENDING:]
                return
            await asyncio.sleep(0)

    def _as_row(self, item: Any) -> dict[str, Any]:
        return item if isinstance(item, dict) else self._row(item)

    @property
    def pending(self) -> int:
        return len(self._pending) + len(self._failed)


def day_range(start: str | None, end: str | None) -> tuple[str, str]:
    """Validated UTC day bounds (YYYY-MM-DD, inclusive); the default is the last 30 days."""
    today = datetime.now(timezone.utc).date()

    def parse(value: str | None, name: str, default: date) -> date:
        if not value:
            return default
        try:
            return date.fromisoformat(value[:10])
        except ValueError:
            raise InvalidRequest(f"'{name}' must be a date as YYYY-MM-DD.", param=name) from None

    last = parse(end, "end", today)
    first = parse(start, "start", last - timedelta(days=29))
    if first > last:
        raise InvalidRequest("'start' is after 'end'.", param="start")
    if (last - first).days >= MAX_RANGE_DAYS:
        raise InvalidRequest(f"The range spans more than {MAX_RANGE_DAYS} days; ask for less.", param="start")
    return first.isoformat(), last.isoformat()
