"""Async jobs: the queue runners claim from.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

_T = sa.Float(precision=53)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_jobs_org_id_organizations"), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("meta", sa.JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("run_after", _T, nullable=False),
        sa.Column("lease_owner", sa.String(80), nullable=True),
        sa.Column("lease_token", sa.String(40), nullable=True),
        sa.Column("lease_expires", _T, nullable=True),
        sa.Column("cancel_requested", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("settle_due", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("result", sa.JSON, nullable=True),
        sa.Column("error", sa.JSON, nullable=True),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("started_at", _T, nullable=True),
        sa.Column("finished_at", _T, nullable=True),
        sa.Column("webhook_url", sa.String(2000), nullable=True),
        sa.Column("webhook_status", sa.String(20), nullable=True),
        sa.Column("webhook_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("webhook_next_at", _T, nullable=True),
    )
    op.create_index("ix_jobs_claim", "jobs", ["status", "priority", "run_after"])
    op.create_index("ix_jobs_org_id", "jobs", ["org_id", "created_at"])
    op.create_index("ix_jobs_webhook", "jobs", ["webhook_status", "webhook_next_at"])
    op.create_index("ix_jobs_settle_due", "jobs", ["settle_due", "finished_at"])


def downgrade() -> None:
    op.drop_index("ix_jobs_settle_due", table_name="jobs")
    op.drop_index("ix_jobs_webhook", table_name="jobs")
    op.drop_index("ix_jobs_org_id", table_name="jobs")
    op.drop_index("ix_jobs_claim", table_name="jobs")
    op.drop_table("jobs")
