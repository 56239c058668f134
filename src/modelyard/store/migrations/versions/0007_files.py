"""Files: uploaded files, batch inputs and outputs, whose bytes live in object storage.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "files",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_files_org_id_organizations"), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("filename", sa.String(1000), nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("storage_key", sa.String(500), nullable=False),
        sa.Column("created_at", sa.Float(precision=53), nullable=False),
        sa.Column("expires_at", sa.Float(precision=53), nullable=True),
    )
    op.create_index("ix_files_org_id", "files", ["org_id", "created_at"])
    op.create_index("ix_files_expires_at", "files", ["expires_at"])
    op.create_index("ix_files_status", "files", ["status", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_files_status", table_name="files")
    op.drop_index("ix_files_expires_at", table_name="files")
    op.drop_index("ix_files_org_id", table_name="files")
    op.drop_table("files")
