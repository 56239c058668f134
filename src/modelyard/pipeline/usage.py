"""Usage records: one per call, queued on the request path and written in batches by a background flush."""

from __future__ import annotations

import logging
import time
from datetime import date, datetime, timedelta, timezone
from typing import Any

from ..errors import InvalidRequest
from ..store.billing_repo import UsageRepo
from ..store.db import Store
from ..store.log_tables import log_fields
from ..store.repo import IdSequence
from ..store.writebehind import Sink, WriteBehind
from .units import Units

log = logging.getLogger(__name__)
MAX_RANGE_DAYS = 366
KIND = "usage"


class UsageRecorder:
    """One usage row per call, queued on the request path; the process's write-behind writes them in batches.

    The id is assigned here, when the call ends, so a row that reaches the database twice (spooled while its first
    write was still in flight, or replayed after a crash) is inserted once: the write ignores ids it already has.
    """

    def __init__(self, store: Store, writer: WriteBehind, *, interval: float = 1.0, batch: int = 10_000) -> None:
        self.repo = UsageRepo(store)
        self.writer = writer
        self._ids = IdSequence("use")
        # a spooled record keeps its log fields even if the log is off now: it was on then
        writer.register(Sink(KIND, self.repo.insert_many, encode=self._row, interval=interval, batch=batch))

    def record(self, *, org_id: str, token_id: str | None, model_id: str, task: str, units: Units | None,
               price_micros: int, status: str, latency_ms: int, region: str | None, flagged: bool,
               tags: tuple[str | None, str | None, str | None] | None = None, use_id: str | None = None,
               log: tuple[Any, ...] | None = None) -> str:
        """`tags`: (job id, agent run id, run node) for a call that was part of a job or an agent run; `use_id`
        names the row where a repeat must land on the same one (a job's settlement); `log`: the call's own
        request-log fields (`RequestLog.fields`), written as its request-log row with the same id. Returns the
        row's id."""
        # raw values only: the row (units as JSON, the day) is built by the writer, off the request path
        use_id = use_id or self._ids()
        self.writer.put(KIND, (use_id, org_id, token_id, model_id, task, units, price_micros, status,
                               latency_ms, region, flagged, time.time(), tags, log))
        return use_id

    def _row(self, raw: tuple[Any, ...]) -> dict[str, Any]:
        """The record as JSON-able data (what the spool keeps); `UsageRepo.insert_many` turns it into a row. A call
        with a request-log row has its request id and the rest of its log fields, as the JSON array the usage row
        stores (`log_fields`, migration 0016), in the record (older versions' records hold a `log` list instead,
        which `UsageRepo.insert_many` turns into the same)."""
        use_id, org_id, token_id, model_id, task, units, price, status, latency_ms, region, flagged, at = raw[:12]
        job_id, run_id, run_node = (raw[12] if len(raw) > 12 else None) or (None, None, None)
        fields = {k: getattr(units, k) for k in units.__slots__ if getattr(units, k)} if units is not None else {}
        row = {"id": use_id, "org_id": org_id, "token_id": token_id, "model_id": model_id, "task": task,
               "units": fields, "input_tokens": units.input_tokens if units else 0,
               "output_tokens": units.output_tokens if units else 0, "price_micros": price, "status": status,
               "latency_ms": latency_ms, "region": region, "flagged": flagged, "at": at, "job_id": job_id,
               "run_id": run_id, "run_node": run_node}
        log = raw[13] if len(raw) > 13 else None
        if log is not None:  # `RequestLog.fields`: deployment, route, HTTP status, ttft, request id, trace, error
            row["request_id"] = log[4]
            row["log_fields"] = log_fields(log[0], log[1], log[2], log[3], log[5], log[6])
        return row

    @property
    def pending(self) -> int:
        return self.writer.depth(KIND)


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
