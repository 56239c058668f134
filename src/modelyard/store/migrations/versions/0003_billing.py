"""Wallets, their ledger, usage records, content-filter policies and audit events.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def _org_fk(table: str) -> sa.ForeignKey:
    return sa.ForeignKey("organizations.id", ondelete="CASCADE", name=f"fk_{table}_org_id_organizations")


def upgrade() -> None:
    op.create_table(
        "wallets",
        sa.Column("org_id", sa.String(40), _org_fk("wallets"), primary_key=True),
        sa.Column("balance_micros", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        # the one rule no code path may break, enforced where no code path can skip it
        sa.CheckConstraint("balance_micros >= 0", name="ck_wallets_balance_nonnegative"),
    )
    op.create_table(
        "wallet_ledger",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), _org_fk("wallet_ledger"), nullable=False),
        sa.Column("kind", sa.String(20), nullable=False),
        sa.Column("amount_micros", sa.BigInteger, nullable=False),
        sa.Column("ref", sa.String(60), nullable=True),
        sa.Column("note", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_wallet_ledger_org_id", "wallet_ledger", ["org_id"])
    # one reserve, one release, one charge per call: a job settled twice (its runner died between settling and
    # marking the job settled) cannot move the money twice
    op.create_index("uq_wallet_ledger_kind_ref", "wallet_ledger", ["kind", "ref"], unique=True)
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("units", sa.JSON, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("price_micros", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("latency_ms", sa.Integer, nullable=False),
        sa.Column("region", sa.String(64), nullable=True),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_usage_records_org_id_day", "usage_records", ["org_id", "day"])
    op.create_table(
        "content_filter_policies",
        sa.Column("org_id", sa.String(40), _org_fk("content_filter_policies"), primary_key=True),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("categories", sa.JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "content_filter_events",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), nullable=False),
        sa.Column("token_id", sa.String(40), nullable=True),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("action", sa.String(10), nullable=False),
        sa.Column("categories", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_content_filter_events_org_id", "content_filter_events", ["org_id"])


def downgrade() -> None:
    op.drop_index("ix_content_filter_events_org_id", table_name="content_filter_events")
    op.drop_table("content_filter_events")
    op.drop_table("content_filter_policies")
    op.drop_index("ix_usage_records_org_id_day", table_name="usage_records")
    op.drop_table("usage_records")
    op.drop_index("uq_wallet_ledger_kind_ref", table_name="wallet_ledger")
    op.drop_index("ix_wallet_ledger_org_id", table_name="wallet_ledger")
    op.drop_table("wallet_ledger")
    op.drop_table("wallets")
