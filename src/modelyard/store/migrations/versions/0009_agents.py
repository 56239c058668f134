"""Agents: saved graphs and their versions, runs with a row per node and an event log; jobs and usage rows say which
run and node they belong to.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

_T = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("run_id", sa.String(40), nullable=True))
    op.add_column("jobs", sa.Column("run_node", sa.String(100), nullable=True))
    op.add_column("jobs", sa.Column("run_item", sa.Integer, nullable=True))
    op.create_index("ix_jobs_run", "jobs", ["run_id", "run_node", "run_item"])
    op.add_column("usage_records", sa.Column("job_id", sa.String(40), nullable=True))
    op.add_column("usage_records", sa.Column("run_id", sa.String(40), nullable=True))
    op.add_column("usage_records", sa.Column("run_node", sa.String(100), nullable=True))
    op.create_index("ix_usage_records_run_id", "usage_records", ["run_id"])
    op.create_table(
        "agents",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_agents_org_id_organizations"), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("description", sa.String(2000), nullable=True),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("dag", sa.JSON, nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("updated_at", _T, nullable=False),
        sa.Column("deleted_at", _T, nullable=True),
    )
    op.create_index("ix_agents_org_id", "agents", ["org_id", "created_at"])
    op.create_table(
        "agent_versions",
        sa.Column("agent_id", sa.String(40), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("dag", sa.JSON, nullable=False),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_table(
        "agent_runs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_agent_runs_org_id_organizations"), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("agent_id", sa.String(40), nullable=False),
        sa.Column("agent_version", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("input_params", sa.JSON, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("repair_of", sa.String(40), nullable=True),
        sa.Column("idempotency_key", sa.String(200), nullable=True),
        sa.Column("base_url", sa.String(500), nullable=True),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("started_at", _T, nullable=True),
        sa.Column("finished_at", _T, nullable=True),
        sa.Column("due_at", _T, nullable=True),
        sa.Column("driver_token", sa.String(40), nullable=True),
        sa.Column("driver_expires", _T, nullable=True),
        sa.Column("webhook_url", sa.String(2000), nullable=True),
        sa.Column("webhook_status", sa.String(20), nullable=True),
        sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_next_at", _T, nullable=True),
    )
    op.create_index("ix_agent_runs_org_id", "agent_runs", ["org_id", "created_at"])
    op.create_index("ix_agent_runs_due", "agent_runs", ["status", "due_at"])
    op.create_index("ix_agent_runs_idempotency", "agent_runs", ["org_id", "idempotency_key"], unique=True)
    op.create_index("ix_agent_runs_webhook", "agent_runs", ["webhook_status", "webhook_next_at"])
    op.create_table(
        "agent_run_nodes",
        sa.Column("run_id", sa.String(40), primary_key=True),
        sa.Column("node_id", sa.String(100), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("kind", sa.String(10), nullable=False),
        sa.Column("state", sa.String(20), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("inputs", sa.JSON, nullable=True),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("errors", sa.JSON, nullable=True),
        sa.Column("total", sa.Integer, nullable=True),
        sa.Column("done", sa.Integer, nullable=True),
        sa.Column("failed", sa.Integer, nullable=True),
        sa.Column("cache_key", sa.String(64), nullable=True),
        sa.Column("reused_from", sa.String(40), nullable=True),
        sa.Column("started_at", _T, nullable=True),
        sa.Column("finished_at", _T, nullable=True),
    )
    op.create_index("ix_agent_run_nodes_cache", "agent_run_nodes", ["org_id", "cache_key"])
    op.create_table(
        "agent_run_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(40), nullable=False),
        sa.Column("type", sa.String(40), nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_index("ix_agent_run_events_run_id", "agent_run_events", ["run_id", "id"])


def downgrade() -> None:
    for table in ("agent_run_events", "agent_run_nodes", "agent_runs", "agent_versions", "agents"):
        op.drop_table(table)
    op.drop_index("ix_usage_records_run_id", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        for col in ("run_node", "run_id", "job_id"):
            batch.drop_column(col)
    op.drop_index("ix_jobs_run", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        for col in ("run_item", "run_node", "run_id"):
            batch.drop_column(col)
