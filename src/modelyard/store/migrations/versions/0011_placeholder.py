"""Placeholder for the usagelog branch's 0011, so 0012 has its parent here; dropped at merge.

Revision ID: 0011
Revises: 0010
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
