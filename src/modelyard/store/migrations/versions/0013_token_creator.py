"""Who made each API token: a signed-in person sees and revokes the tokens they made (and loses them on leaving).

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_tokens", sa.Column("created_by", sa.String(200), nullable=True))
    op.create_index("ix_api_tokens_org_created_by", "api_tokens", ["org_id", "created_by"])


def downgrade() -> None:
    op.drop_index("ix_api_tokens_org_created_by", table_name="api_tokens")
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_column("created_by")
