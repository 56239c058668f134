"""Accounts: users, their org memberships, one-time invites and server-side console sessions.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_T = sa.Float(precision=53)


def _org_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey("organizations.id", ondelete="CASCADE", name=f"fk_{table}_org_id_organizations")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("username", sa.String(40), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("bio", sa.String(2000), nullable=True),
        sa.Column("location", sa.String(200), nullable=True),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_index("uq_users_email", "users", ["email"], unique=True)
    op.create_index("uq_users_username", "users", ["username"], unique=True)
    op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE",
                                                          name="fk_memberships_user_id_users"), primary_key=True),
        sa.Column("org_id", sa.String(40), _org_fk("memberships"), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_index("ix_memberships_org_id", "memberships", ["org_id"])
    op.create_table(
        "invites",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), _org_fk("invites"), nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("email", sa.String(320), nullable=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("created_by", sa.String(60), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("expires_at", _T, nullable=False),
        sa.Column("used_at", _T, nullable=True),
        sa.Column("used_by", sa.String(40), nullable=True),
    )
    op.create_index("uq_invites_token_hash", "invites", ["token_hash"], unique=True)
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(40), sa.ForeignKey("users.id", ondelete="CASCADE",
                                                          name="fk_sessions_user_id_users"), nullable=True),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("org_id", sa.String(40), _org_fk("sessions"), nullable=False),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("last_seen_at", _T, nullable=False),
        sa.Column("expires_at", _T, nullable=False),
        sa.Column("revoked_at", _T, nullable=True),
        sa.Column("address", sa.String(100), nullable=True),
        sa.Column("user_agent", sa.String(300), nullable=True),
    )
    op.create_index("uq_sessions_token_hash", "sessions", ["token_hash"], unique=True)
    op.create_index("ix_sessions_user_id", "sessions", ["user_id"])


def downgrade() -> None:
    for table in ("sessions", "invites", "memberships", "users"):
        op.drop_table(table)
