"""The request log: one row per call (timing, model, deployment, status, tokens, cost, key, request and trace id),
queued at settlement and written in batches by the write-behind; bodies for orgs that keep them; retention.

A call's row rides on its usage record: on the request path `fields` only takes what the row has beyond the
usage record (deployment, status, request and trace ids...) as plain values, the usage record carries them, and
the usage insert writes them into the call's usage row (migration 0016): SQLite's `request_log` is a view over
those rows, and PostgreSQL's trigger moves them into its day-partitioned table. The request log's own queue
(`KIND`) only replays rows that older versions spooled on their own.
Bodies are queued the same way; when the org asked for redaction the writer runs every string in them through the
built-in PII model before they are stored (a body the model cannot redact is stored as neither request nor
response, marked `failed`: never unredacted).
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable

import orjson

from ..catalog.builtin import PII_ID
from ..store.db import Store
from ..store import rollups
from ..store.requestlog_repo import RequestLogRepo
from ..store.writebehind import Sink, WriteBehind
from ..types import RawJSON, RawSSE, Task

log = logging.getLogger(__name__)
KIND, BODIES = "request_log", "request_bodies"
MAX_STRINGS = 256  # per PII request (what its `input` accepts)


def trace_id(traceparent: bytes | None) -> str | None:
    """The trace id of a W3C `traceparent` header value (version-traceid-parentid-flags)."""
    if traceparent is None:
        return None
    parts = traceparent.split(b"-")
    if len(parts) >= 4 and len(parts[1]) == 32 and parts[1].isalnum():
        return parts[1].decode().lower()
    return None


def plain(value: Any) -> Any:
    """A request or response as JSON-able data (pydantic models, dataclasses of chunks, bytes left out)."""
    dump = getattr(value, "model_dump", None)
    if dump is not None:
        return dump(mode="json", exclude_none=True)
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, RawJSON):
        return _json(bytes(value))
    if isinstance(value, RawSSE):  # one or more relayed events: their JSON data, one item each
        events = [_json(line[5:].strip()) for line in bytes(value).split(b"\n") if line.startswith(b"data:")]
        return events[0] if len(events) == 1 else events
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"bytes": len(value)}
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def _json(data: bytes) -> Any:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", "replace")


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None


class RequestLog:
    """Queues request-log rows and bodies; `start` gives it the router for redaction."""

    def __init__(self, store: Store, writer: WriteBehind, *, interval: float = 1.0, batch: int = 10_000,
                 enabled: bool = True) -> None:
        self.repo = RequestLogRepo(store)
        if not enabled:  # `request_log_enabled: false`: nothing is queued, so nothing is written
            self.body = self.fields = _nothing  # type: ignore[method-assign]
        self.writer = writer
        self.router: Any = None
        self.catalog: Any = None
        # log rows spooled on their own by older versions (a call's row now rides on its usage record): replayed
        writer.register(Sink(KIND, self.repo.insert_many, interval=interval, batch=batch))
        writer.register(Sink(BODIES, self._write_bodies, encode=self._body, interval=interval, batch=100))

    def fields(self, deployment: Any, scope: Any, http_status: int, ttft_ms: int | None, error_code: str | None,
               request_id: str | None = None, route: str | None = None) -> tuple[Any, ...] | None:
        """What a call's request-log row has beyond its usage record, as stored (`ROW` after the id, time and org;
        None with the request log off). The gate hands it to `UsageRecorder.record(log=…)`: one queued record per
        call on the request path, and one row: the usage insert writes these with the call's usage row.

        What the row needs from the ASGI scope (request id, path, trace id) is taken here, and the scope is not
        queued: a record lives up to a flush interval, and one that held its call's scope kept ~7 KB alive per
        call (never awaits: the request path calls this)."""
        trace = None
        if scope is not None:
            state = scope.get("state")
            request_id = request_id or (state.get("request_id") if state else None)
            route = route or scope.get("path")
            for name, value in scope.get("headers") or ():
                if name == b"traceparent":
                    trace = trace_id(value)
                    break
        if route:  # a NUL (a path's %00) is no text PostgreSQL keeps: it would cost the call its usage row
            route = route[:300] if "\x00" not in route else route.replace("\x00", "")[:300]
        return (getattr(deployment, "name", deployment), route or None, http_status, ttft_ms, request_id, trace,
                error_code[:80] if error_code else None)

    def body(self, log_id: str, org_id: str, scope: Any, request: Any, response: Any, mode: str) -> None:
        """The org keeps bodies (`mode` "raw" or "redact"); made JSON-able and redacted by the writer."""
        state = scope.get("state") if scope is not None else None
        self.writer.put(BODIES, (log_id, time.time(), org_id, state.get("request_id") if state else None, request,
                                 response, mode))

    @staticmethod
    def _body(raw: tuple[Any, ...]) -> dict[str, Any]:
        log_id, at, org_id, rid, request, response, mode = raw
        return {"log_id": log_id, "at": at, "org_id": org_id, "request_id": rid, "request": plain(request),
                "response": plain(response), "redacted": "pending" if mode == "redact" else "no"}

    async def _write_bodies(self, rows: list[dict[str, Any]]) -> None:
        out = []
        for r in rows:
            if r["redacted"] == "pending":
                try:
                    r = {**r, **await self.redact({"request": r["request"], "response": r["response"]}),
                         "redacted": "yes"}
                except Exception as exc:  # never store what could not be redacted
                    log.warning("request log: could not redact bodies of %s (%s); stored without them",
                                r["log_id"], exc)
                    r = {**r, "request": None, "response": None, "redacted": "failed"}
            out.append(r)
        await self.repo.insert_bodies(out)

    async def redact(self, doc: dict[str, Any]) -> dict[str, Any]:
        """Every string in `doc` through the PII model (`redacted_text`), the structure kept."""
        strings: list[str] = []

        def collect(v: Any) -> None:
            if isinstance(v, str):
                if v.strip():
                    strings.append(v)
            elif isinstance(v, dict):
                for k, x in v.items():
                    if k not in ("model", "role", "object", "id", "type", "finish_reason"):
                        collect(x)
            elif isinstance(v, list):
                for x in v:
                    collect(x)
        collect(doc)
        if not strings:
            return doc
        if self.router is None or self.catalog is None:
            raise RuntimeError("no router to run the PII model")
        from ..protocols.openai.media import PIIRequest

        model = self.catalog.find(PII_ID) or self.catalog.first_for(Task.PII)
        if model is None:
            raise RuntimeError("no PII model in the catalog")
        unique = list(dict.fromkeys(strings))
        clean: dict[str, str] = {}
        for i in range(0, len(unique), MAX_STRINGS):
            part = unique[i:i + MAX_STRINGS]
            result, _ = await self.router.run(model, Task.PII, PIIRequest(input=part), None)
            for item in result["data"]:
                clean[part[item["index"]]] = item["redacted_text"]

        def swap(v: Any, key: str | None = None) -> Any:
            if isinstance(v, str):
                return v if key in ("model", "role", "object", "id", "type", "finish_reason") else clean.get(v, v)
            if isinstance(v, dict):
                return {k: swap(x, k) for k, x in v.items()}
            if isinstance(v, list):
                return [swap(x) for x in v]
            return v
        return swap(doc)


class Retention:
    """The request log's upkeep: partitions made ahead (PostgreSQL), rows past `days` dropped; hourly. Orgs that
    keep theirs for less (`request_logging.retention_days`, read through `org_days`) lose their older rows too.
    The same pass prunes usage rollups finer than a day (`rollup_days`: grain → days) and the audit log
    (`audit_days`, through `audit`), each kept forever at 0."""

    def __init__(self, repo: RequestLogRepo, days: int, *, every: float = 3600.0,
                 clock: Callable[[], float] = time.time,
                 org_days: Callable[[], Awaitable[dict[str, int]]] | None = None,
                 rollup_days: dict[str, int] | None = None, audit: Any = None, audit_days: int = 0) -> None:
        self.repo, self.days, self.every, self.clock, self.org_days = repo, days, every, clock, org_days
        self.rollup_days = {g: d for g, d in (rollup_days or {}).items() if d > 0}
        self.audit, self.audit_days = audit, audit_days

    async def run_once(self) -> dict[str, Any]:
        now = datetime.fromtimestamp(self.clock(), timezone.utc)
        made = await self.repo.ensure_partitions(now)
        gone = await self.repo.drop_before(now - timedelta(days=self.days)) if self.days > 0 else {}
        shorter = {org: d for org, d in (await self.org_days() if self.org_days else {}).items()
                   if d > 0 and (self.days <= 0 or d < self.days)}
        orgs = {org: await self.repo.drop_org_before(org, now - timedelta(days=d)) for org, d in shorter.items()}
        rolled = {grain: await rollups.prune(self.repo.engine, grain, now - timedelta(days=d))
                  for grain, d in self.rollup_days.items()}
        audited = (await self.audit.drop_before(now - timedelta(days=self.audit_days))
                   if self.audit is not None and self.audit_days > 0 else 0)
        if made or any(gone.values()) or any(any(n.values()) for n in orgs.values()) or any(rolled.values()) \
                or audited:
            log.info("request log: partitions made %s, dropped %s, by org's retention %s; rollup rows pruned %s; "
                     "audit entries dropped %d", made, gone, orgs, rolled, audited)
        return {"made": made, **gone, "orgs": orgs, "rollups": rolled, "audit": audited}

    async def run_forever(self, *, first: bool = True) -> None:
        """Upkeep now (today's partition before the first row), then every `every` seconds."""
        while True:
            if first:
                try:
                    await self.run_once()
                except Exception:  # upkeep must outlive a bad hour (a database restart)
                    log.exception("request log upkeep failed")
            first = True
            await asyncio.sleep(self.every)
