"""A call's request-log fields travel on its usage row: written by the usage insert, one row per call.

The request log held a row of its own per call, written in a transaction of its own after the usage batch. On SQLite
that second row (ten bound values, the record, the table and its three indexes) was most of what the request log
cost a call: ~30,000 instructions, 3.4% of a proxied call's CPU on the side-by-side bench. Now the usage row carries
the call's `request_id` and the rest of its log fields as one JSON array (`log_fields`: deployment, route, HTTP
status, time to first token, trace id, error code), bound with the usage row's own values:

* SQLite: they stay on the usage row, and `request_log` is a view over the usage rows that have them, with the
  same columns as the table had (reads are unchanged). Two partial indexes serve it: (org_id, created_at) for the
  listing and request_id for a request's calls; rows without log fields are in neither. Retention clears a row's
  log fields (the usage row stays: it is billing's), in batches.
* PostgreSQL: a BEFORE INSERT trigger moves them into the day-partitioned `request_log` as each usage row is
  inserted and leaves the usage row's copies NULL: the database does the work, in its own process, and retention
  still drops whole partitions. A replayed usage row (ON CONFLICT DO NOTHING) fires the trigger again; its log
  insert skips the key it already has.

Existing log rows are carried over (SQLite: onto their usage rows; a log row whose usage row is gone is dropped,
which no code path makes). The downgrade rebuilds the table from the usage rows.

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

_LOGGED = sa.text("log_fields IS NOT NULL")

# the view's columns in the table's order; log_fields is [deployment, route, http_status, ttft_ms, trace_id,
# error_code]
_VIEW = """CREATE VIEW request_log AS
SELECT id, created_at AS at, org_id,
       json_extract(log_fields, '$[0]') AS deployment, json_extract(log_fields, '$[1]') AS route,
       json_extract(log_fields, '$[2]') AS http_status, json_extract(log_fields, '$[3]') AS ttft_ms,
       request_id, json_extract(log_fields, '$[4]') AS trace_id, json_extract(log_fields, '$[5]') AS error_code
FROM usage_records WHERE log_fields IS NOT NULL"""

_PG_FUNCTION = """CREATE OR REPLACE FUNCTION usage_records_request_log() RETURNS trigger AS $$
DECLARE f json;
BEGIN
    IF NEW.log_fields IS NOT NULL THEN
        f := NEW.log_fields::json;
        INSERT INTO request_log (id, at, org_id, deployment, route, http_status, ttft_ms, request_id, trace_id,
                                 error_code)
        VALUES (NEW.id, NEW.created_at, NEW.org_id, f->>0, f->>1, (f->>2)::int, (f->>3)::int, NEW.request_id,
                f->>4, f->>5)
        ON CONFLICT (id, at) DO NOTHING;
        NEW.log_fields := NULL;
        NEW.request_id := NULL;
    END IF;
    RETURN NEW;
END
$$ LANGUAGE plpgsql"""


def upgrade() -> None:
    op.add_column("usage_records", sa.Column("request_id", sa.String(128), nullable=True))
    op.add_column("usage_records", sa.Column("log_fields", sa.Text, nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_PG_FUNCTION)
        op.execute("CREATE TRIGGER usage_records_request_log BEFORE INSERT ON usage_records "
                   "FOR EACH ROW EXECUTE FUNCTION usage_records_request_log()")
        return
    op.execute("UPDATE usage_records SET request_id = r.request_id, log_fields = json_array(r.deployment, r.route, "
               "r.http_status, r.ttft_ms, r.trace_id, r.error_code) FROM request_log r WHERE r.id = usage_records.id")
    op.drop_table("request_log")
    op.execute(_VIEW)
    op.create_index("ix_usage_records_logged_org_at", "usage_records", ["org_id", "created_at"],
                    sqlite_where=_LOGGED)
    op.create_index("ix_usage_records_logged_request_id", "usage_records", ["request_id"], sqlite_where=_LOGGED)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS usage_records_request_log ON usage_records")
        op.execute("DROP FUNCTION IF EXISTS usage_records_request_log()")
    else:
        op.drop_index("ix_usage_records_logged_request_id", table_name="usage_records")
        op.drop_index("ix_usage_records_logged_org_at", table_name="usage_records")
        op.execute("DROP VIEW request_log")
        op.create_table(
            "request_log",
            sa.Column("id", sa.String(40), primary_key=True),
            sa.Column("at", sa.DateTime(timezone=True), primary_key=True),
            sa.Column("org_id", sa.String(40), nullable=False),
            sa.Column("deployment", sa.String(200), nullable=True),
            sa.Column("route", sa.String(300), nullable=True),
            sa.Column("http_status", sa.Integer, nullable=False),
            sa.Column("ttft_ms", sa.Integer, nullable=True),
            sa.Column("request_id", sa.String(128), nullable=True),
            sa.Column("trace_id", sa.String(32), nullable=True),
            sa.Column("error_code", sa.String(80), nullable=True),
        )
        op.create_index("ix_request_log_org_id_at", "request_log", ["org_id", "at"])
        op.create_index("ix_request_log_request_id", "request_log", ["request_id"])
        op.execute("INSERT INTO request_log (id, at, org_id, deployment, route, http_status, ttft_ms, request_id, "
                   "trace_id, error_code) SELECT id, created_at, org_id, json_extract(log_fields, '$[0]'), "
                   "json_extract(log_fields, '$[1]'), json_extract(log_fields, '$[2]'), "
                   "json_extract(log_fields, '$[3]'), request_id, json_extract(log_fields, '$[4]'), "
                   "json_extract(log_fields, '$[5]') FROM usage_records WHERE log_fields IS NOT NULL")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("log_fields")
        batch.drop_column("request_id")
