"""Usage rollups: minute/hour/day sums per (org, key, model, task, status), upserted with each batch of usage rows.

Why this shape:

* The rows of a batch are summed in Python first, so each grain is one `INSERT … ON CONFLICT DO UPDATE` (run as
  one executemany) however many calls the batch holds, and no statement touches the same key twice.
* Keys go in sorted order, grains always minute → hour → day: every writer takes row locks in the same global
  order, so two gateways flushing at once wait for each other but never deadlock.
* Only rows the usage insert really added are rolled up (`INSERT … ON CONFLICT DO NOTHING RETURNING id`), in the
  same transaction: a batch replayed from the spool adds nothing twice.
* The usage APIs read the day grain. Minute and hour rows are for short-range views (a dashboard's last hours) and
  are pruned by the request log's upkeep (`usage_rollup_minute_days`, `usage_rollup_hour_days`); days stay.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable, Mapping

from sqlalchemy import case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from .log_tables import GRAINS, usage_rollups
from .repo import delete_in_batches

KEY = ("org_id", "grain", "bucket", "token_id", "model_id", "task", "status")
SUMS = ("requests", "flagged", "input_tokens", "output_tokens", "price_micros", "latency_ms")
_FORMAT = {"minute": "%Y-%m-%dT%H:%M", "hour": "%Y-%m-%dT%H", "day": "%Y-%m-%d"}
_CUTS = (("minute", 16), ("hour", 13), ("day", 10))  # each grain's bucket: a prefix of the ISO time
# what the usage APIs group by, as rollup columns (usage_records.day is the day grain's bucket)
_COLUMN = {"day": "bucket", "model_id": "model_id", "task": "task", "token_id": "token_id", "status": "status"}


def bucket(grain: str, when: datetime) -> str:
    return when.strftime(_FORMAT[grain])


async def prune(engine: AsyncEngine, grain: str, before: datetime) -> int:
    """Delete the `grain` rows whose bucket began before `before`, org by org in batches (each found through the
    primary key's (org_id, grain, bucket) prefix), so upsert batches never wait long."""
    if grain == "day":
        raise ValueError("the day grain is what the usage APIs read: it is never pruned")
    cut = bucket(grain, before)
    r = usage_rollups.c
    async with engine.connect() as conn:
        orgs = [o for (o,) in (await conn.execute(select(r.org_id).distinct())).all()]
    return sum([await delete_in_batches(engine, usage_rollups, r.org_id == org, r.grain == grain, r.bucket < cut)
                for org in orgs])


def aggregate(rows: Iterable[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Usage rows (as `UsageRepo.insert_many` builds them: `created_at` a UTC datetime) summed per grain, each
    grain's keys sorted. One pass: the three buckets are prefixes of one ISO string (cheaper than three strftimes)."""
    sums: dict[tuple[str, ...], list[int]] = {}
    for r in rows:
        iso = r["created_at"].isoformat()  # YYYY-MM-DDTHH:MM:SS…, UTC
        rest = (r.get("token_id") or "", r["model_id"], r["task"], r["status"])
        add = (1, 1 if r.get("flagged") else 0, int(r.get("input_tokens") or 0), int(r.get("output_tokens") or 0),
               int(r.get("price_micros") or 0), int(r.get("latency_ms") or 0))
        for grain, cut in _CUTS:
            key = (r["org_id"], grain, iso[:cut], *rest)
            s = sums.get(key)
            if s is None:
                sums[key] = list(add)
            else:
                for i, v in enumerate(add):
                    s[i] += v
    out: dict[str, list[dict[str, Any]]] = {grain: [] for grain in GRAINS}
    for key in sorted(sums):
        out[key[1]].append({**dict(zip(KEY, key)), **dict(zip(SUMS, sums[key]))})
    return out


async def upsert(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Add these (newly inserted) usage rows to every grain, inside the caller's transaction."""
    if not rows:
        return
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    for grain, values in aggregate(rows).items():
        ins = dialect.insert(usage_rollups)
        q = ins.on_conflict_do_update(index_elements=list(KEY),
                                      set_={c: usage_rollups.c[c] + ins.excluded[c] for c in SUMS})
        await conn.execute(q, values)


async def totals(conn: AsyncConnection, org_id: str, start: str, end: str, by: tuple[str, ...], *,
                 where: Mapping[str, str] | None = None, latency: bool = False) -> list[dict[str, Any]]:
    """What `usage_records` sums to over [start, end] (UTC days, inclusive) grouped by `by` (day, model_id, task,
    token_id, status), read from the day grain: the usage APIs' answer, in the same shape and order. `where`: exact
    values of those columns (token_id '' for calls without a key); `latency` adds `latency_ms`, the sum of the calls'
    latencies (divide by requests for the mean; the rollups keep no percentiles)."""
    r = usage_rollups.c
    cols = [r[_COLUMN[name]].label(name) for name in by]
    sums = [func.coalesce(func.sum(r.requests), 0).label("requests"),
            func.coalesce(func.sum(case((r.status == "ok", r.requests), else_=0)), 0).label("succeeded"),
            func.coalesce(func.sum(r.price_micros), 0).label("price_micros"),
            func.coalesce(func.sum(r.input_tokens), 0).label("input_tokens"),
            func.coalesce(func.sum(r.output_tokens), 0).label("output_tokens"),
            func.coalesce(func.sum(r.flagged), 0).label("flagged")]
    if latency:
        sums.append(func.coalesce(func.sum(r.latency_ms), 0).label("latency_ms"))
    q = select(*cols, *sums).where(r.org_id == org_id, r.grain == "day", r.bucket >= start, r.bucket <= end)
    for name, value in (where or {}).items():
        q = q.where(r[_COLUMN[name]] == value)
    q = q.group_by(*cols).order_by(*cols)
    rows = (await conn.execute(q)).all()
    out = []
    for row in rows:
        m = {str(k): v for k, v in row._asdict().items()}
        if not by and not m["requests"]:
            continue  # no usage at all: the raw query's empty answer
        for k, v in m.items():
            if k == "token_id":
                m[k] = v or None  # '' stands for "no key" only inside the rollups' primary key
            elif k not in by:
                m[k] = int(v)
        out.append(m)
    return out
