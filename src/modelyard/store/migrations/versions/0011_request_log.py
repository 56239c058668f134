"""Usage rollups (minute/hour/day, filled from the usage rows already there), the request log (partitioned by day
on PostgreSQL) and its bodies, the audit log, and the org setting that turns request bodies on.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

_TS = sa.DateTime(timezone=True)


def _bucket(grain: str, pg: bool) -> str:
    if grain == "day":
        return "day"
    if pg:
        fmt = 'YYYY-MM-DD"T"HH24' if grain == "hour" else 'YYYY-MM-DD"T"HH24:MI'
        return f"to_char(created_at AT TIME ZONE 'UTC', '{fmt}')"
    return f"strftime('{'%Y-%m-%dT%H' if grain == 'hour' else '%Y-%m-%dT%H:%M'}', created_at)"


def upgrade() -> None:
    pg = op.get_bind().dialect.name == "postgresql"
    op.add_column("organizations", sa.Column("request_logging", sa.JSON, nullable=True))
    op.create_table(
        "usage_rollups",
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("grain", sa.String(6), nullable=False),
        sa.Column("bucket", sa.String(16), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        *(sa.Column(name, sa.BigInteger, nullable=False, server_default="0")
          for name in ("requests", "flagged", "input_tokens", "output_tokens", "price_micros", "latency_ms")),
        sa.PrimaryKeyConstraint("org_id", "grain", "bucket", "token_id", "model_id", "task", "status",
                                name="pk_usage_rollups"),
    )
    for grain in ("minute", "hour", "day"):
        bucket = _bucket(grain, pg)
        op.execute(
            "INSERT INTO usage_rollups (org_id, grain, bucket, token_id, model_id, task, status, requests, flagged, "
            "input_tokens, output_tokens, price_micros, latency_ms) "
            f"SELECT org_id, '{grain}', {bucket}, COALESCE(token_id, ''), model_id, task, status, count(*), "
            f"sum(CASE WHEN flagged THEN 1 ELSE 0 END), sum(input_tokens), sum(output_tokens), sum(price_micros), sum(latency_ms) "
            f"FROM usage_records GROUP BY org_id, {bucket}, COALESCE(token_id, ''), model_id, task, status")

    columns = [
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("deployment", sa.String(200), nullable=True),
        sa.Column("route", sa.String(300), nullable=True),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("ttft_ms", sa.Integer, nullable=True),
        sa.Column("input_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("output_tokens", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("price_micros", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("trace_id", sa.String(32), nullable=True),
        sa.Column("error_code", sa.String(80), nullable=True),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.PrimaryKeyConstraint("id", "at", name="pk_request_log"),
    ]
    # PostgreSQL: range partitions by day on `at`, made ahead by the maintenance task; the default partition
    # catches rows no day partition covers yet (so no write is ever refused for want of one)
    op.create_table("request_log", *columns, **({"postgresql_partition_by": "RANGE (at)"} if pg else {}))
    if pg:
        op.execute("CREATE TABLE request_log_default PARTITION OF request_log DEFAULT")
    op.create_index("ix_request_log_org_id_at", "request_log", ["org_id", "at"])
    op.create_index("ix_request_log_request_id", "request_log", ["request_id"])

    op.create_table(
        "request_bodies",
        sa.Column("log_id", sa.String(40), primary_key=True),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("at", _TS, nullable=False),
        sa.Column("request", sa.JSON, nullable=True),
        sa.Column("response", sa.JSON, nullable=True),
        sa.Column("redacted", sa.String(10), nullable=False),
    )
    op.create_index("ix_request_bodies_request_id", "request_bodies", ["request_id"])
    op.create_index("ix_request_bodies_at", "request_bodies", ["at"])

    op.create_table(
        "audit_log",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("at", _TS, nullable=False),
        sa.Column("org_id", sa.String(40), nullable=True),
        sa.Column("actor_kind", sa.String(10), nullable=False),
        sa.Column("actor_id", sa.String(200), nullable=False),
        sa.Column("actor_org_id", sa.String(40), nullable=True),
        sa.Column("action", sa.String(60), nullable=False),
        sa.Column("target", sa.String(200), nullable=True),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
        sa.Column("client_ip", sa.String(64), nullable=True),
        sa.Column("request_id", sa.String(128), nullable=True),
    )
    op.create_index("ix_audit_log_org_id_at", "audit_log", ["org_id", "at"])
    op.create_index("ix_audit_log_at", "audit_log", ["at"])


def downgrade() -> None:
    op.drop_table("audit_log")
    op.drop_table("request_bodies")
    op.drop_table("request_log")  # its partitions go with it
    op.drop_table("usage_rollups")
    op.drop_column("organizations", "request_logging")
