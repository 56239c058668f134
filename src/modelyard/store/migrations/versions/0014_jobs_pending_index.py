"""The job queue's claim index: pending jobs only, in the order runners take them.

A claim asks for the few most urgent due jobs (priority DESC, run_after, id). The old index (status, priority,
run_after) matches neither the direction of priority nor the id tie-break, so each claim sorted every pending job;
this partial index holds pending rows alone (a job leaves it when claimed) in exactly that order, so a claim reads
about as many entries as it takes, however long the backlog.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.create_index("ix_jobs_pending", "jobs", [sa.text("priority DESC"), "run_after", "id"],
                    postgresql_where=_PENDING, sqlite_where=_PENDING)


def downgrade() -> None:
    op.drop_index("ix_jobs_pending", table_name="jobs")
