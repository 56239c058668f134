"""Batches: the batches table, and each job row's batch and input line (a batch's lines are jobs).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_T = sa.Float(precision=53)


def upgrade() -> None:
    op.add_column("jobs", sa.Column("batch_id", sa.String(40), nullable=True))
    op.add_column("jobs", sa.Column("batch_line", sa.Integer, nullable=True))
    op.create_index("ix_jobs_batch_line", "jobs", ["batch_id", "batch_line"])
    op.create_index("ix_jobs_batch_status", "jobs", ["batch_id", "status"])
    op.create_table(
        "batches",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_batches_org_id_organizations"), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("endpoint", sa.String(60), nullable=False),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("input_file_id", sa.String(60), nullable=False),
        sa.Column("completion_window", sa.String(10), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("ending", sa.String(20), nullable=True),
        sa.Column("errors", sa.JSON, nullable=True),
        sa.Column("meta", sa.JSON, nullable=True),
        sa.Column("output_expires_after", sa.Integer, nullable=True),
        sa.Column("output_file_id", sa.String(60), nullable=True),
        sa.Column("error_file_id", sa.String(60), nullable=True),
        sa.Column("total", sa.Integer, nullable=False, server_default="0"),
        sa.Column("completed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("failed", sa.Integer, nullable=False, server_default="0"),
        sa.Column("usage", sa.JSON, nullable=True),
        sa.Column("base_url", sa.String(500), nullable=True),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("expires_at", _T, nullable=False),
        sa.Column("in_progress_at", _T, nullable=True),
        sa.Column("finalizing_at", _T, nullable=True),
        sa.Column("completed_at", _T, nullable=True),
        sa.Column("failed_at", _T, nullable=True),
        sa.Column("expired_at", _T, nullable=True),
        sa.Column("cancelling_at", _T, nullable=True),
        sa.Column("cancelled_at", _T, nullable=True),
        sa.Column("driver_token", sa.String(40), nullable=True),
        sa.Column("driver_expires", _T, nullable=True),
        sa.Column("webhook_status", sa.String(20), nullable=True),
        sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_next_at", _T, nullable=True),
    )
    op.create_index("ix_batches_org_id", "batches", ["org_id", "created_at"])
    op.create_index("ix_batches_status", "batches", ["status"])
    op.create_index("ix_batches_webhook", "batches", ["webhook_status", "webhook_next_at"])


def downgrade() -> None:
    op.drop_table("batches")
    op.drop_index("ix_jobs_batch_status", table_name="jobs")
    op.drop_index("ix_jobs_batch_line", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("batch_line")
        batch.drop_column("batch_id")
