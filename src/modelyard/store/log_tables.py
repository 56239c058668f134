"""Tables of migration 0011: usage rollups, the request log and its bodies, and the audit log."""

from __future__ import annotations

from typing import Any, Sequence

import orjson
from sqlalchemy import JSON, BigInteger, Column, DateTime, Index, Integer, String, Table

from .tables import metadata

GRAINS = ("minute", "hour", "day")  # the order every writer upserts them in (one lock order: no deadlocks)

# One row per (grain, bucket, org, key, model, task, status): what usage_records sums to, kept up to date in the
# same transaction as the usage rows, so a month's usage reads ~30 rows per model instead of millions.
# `bucket` is UTC text ('2026-12-02', '2026-12-02T05', '2026-12-02T05:12'): it sorts and compares the same on
# every database, like usage_records.day. `token_id` is '' for calls without a key (a primary key cannot be null).
usage_rollups = Table(
    "usage_rollups",
    metadata,
    Column("org_id", String(40), primary_key=True),
    Column("grain", String(6), primary_key=True),
    Column("bucket", String(16), primary_key=True),
    Column("token_id", String(40), primary_key=True),
    Column("model_id", String(200), primary_key=True),
    Column("task", String(40), primary_key=True),
    Column("status", String(20), primary_key=True),
    Column("requests", BigInteger, nullable=False, default=0),
    Column("flagged", BigInteger, nullable=False, default=0),
    Column("input_tokens", BigInteger, nullable=False, default=0),
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("price_micros", BigInteger, nullable=False, default=0),
    Column("latency_ms", BigInteger, nullable=False, default=0),  # a sum: divide by requests for the mean
)

# One row per call (the console's /logs): what the log adds to the call's usage row, whose id it shares (its key,
# model, task, status, latency, tokens, price and job are read from there: migration 0015). On PostgreSQL the table
# is partitioned by day on `at` (created ahead by the maintenance task, dropped whole by retention), so the primary
# key has to include `at`. Since 0016 the usage insert carries these fields (`usage_records.log_fields`): on
# PostgreSQL a trigger writes this table's row; on SQLite this is a view over the usage rows, with these columns.


def log_fields(deployment: Any, route: Any, http_status: Any, ttft_ms: Any, trace_id: Any, error_code: Any) -> str:
    """A call's `usage_records.log_fields` (migration 0016): the JSON array SQLite's `request_log` view reads and
    PostgreSQL's trigger unpacks, in this order."""
    return orjson.dumps((deployment, route, http_status, ttft_ms, trace_id, error_code)).decode()


def log_columns(row: Sequence[Any]) -> tuple[Any, str]:
    """(request_id, log_fields) of a log row in `requestlog_repo.ROW` order (at, id, org_id, deployment, route,
    http_status, ttft_ms, request_id, trace_id, error_code): what older versions spooled."""
    return row[7], log_fields(row[3], row[4], row[5], row[6], row[8], row[9])


request_log = Table(
    "request_log",
    metadata,
    Column("id", String(40), primary_key=True),  # the usage row's id
    Column("at", DateTime(timezone=True), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("deployment", String(200), nullable=True),
    Column("route", String(300), nullable=True),  # the path the client called (its dialect), or job:<id>
    Column("http_status", Integer, nullable=False),
    Column("ttft_ms", Integer, nullable=True),  # streams: until the first chunk was ready
    Column("request_id", String(128), nullable=True),  # the X-Request-Id the response carried
    Column("trace_id", String(32), nullable=True),  # from a W3C traceparent header
    Column("error_code", String(80), nullable=True),
    Index("ix_request_log_org_id_at", "org_id", "at"),
    Index("ix_request_log_request_id", "request_id"),
)

# Bodies only for orgs that turned them on; apart from the metadata so the log stays narrow and bodies can be
# kept (and dropped) on their own terms.
request_bodies = Table(
    "request_bodies",
    metadata,
    Column("log_id", String(40), primary_key=True),
    Column("request_id", String(128), nullable=True),
    Column("org_id", String(40), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("request", JSON, nullable=True),
    Column("response", JSON, nullable=True),
    Column("redacted", String(10), nullable=False),  # no | yes | failed (then neither body is kept)
    Index("ix_request_bodies_request_id", "request_id"),
    Index("ix_request_bodies_at", "at"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("org_id", String(40), nullable=True),  # the org acted on (null: the whole installation)
    Column("actor_kind", String(10), nullable=False),  # key | user | cli
    Column("actor_id", String(200), nullable=False),
    Column("actor_org_id", String(40), nullable=True),
    Column("action", String(60), nullable=False),
    Column("target", String(200), nullable=True),
    Column("before", JSON, nullable=True),
    Column("after", JSON, nullable=True),
    Column("client_ip", String(64), nullable=True),
    Column("request_id", String(128), nullable=True),
    Index("ix_audit_log_org_id_at", "org_id", "at"),
    Index("ix_audit_log_at", "at"),
)
