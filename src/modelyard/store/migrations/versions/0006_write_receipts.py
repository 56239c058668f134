"""Write receipts: batches of non-idempotent updates (token counters) the write-behind has applied, by batch id.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "write_receipts",
        sa.Column("id", sa.String(60), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_write_receipts_created_at", "write_receipts", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_write_receipts_created_at", table_name="write_receipts")
    op.drop_table("write_receipts")
