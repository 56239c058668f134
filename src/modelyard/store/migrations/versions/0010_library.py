"""Library: an item per media result (with full-text search per dialect), share links, and two org settings.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_T = sa.Float(precision=53)

# SQLite: an FTS5 index over the items' searchable text, kept by triggers (so every writer keeps it true). It reads
# its rows from library_items by `seq`, an INTEGER PRIMARY KEY, whose values VACUUM never renumbers.
_SQLITE = [
    "CREATE VIRTUAL TABLE library_fts USING fts5(prompt, model_id, task, content='library_items', "
    "content_rowid='seq', tokenize='porter unicode61')",
    "CREATE TRIGGER library_items_fts_insert AFTER INSERT ON library_items BEGIN "
    "INSERT INTO library_fts(rowid, prompt, model_id, task) VALUES (new.seq, new.prompt, new.model_id, new.task); END",
    "CREATE TRIGGER library_items_fts_delete AFTER DELETE ON library_items BEGIN "
    "INSERT INTO library_fts(library_fts, rowid, prompt, model_id, task) "
    "VALUES ('delete', old.seq, old.prompt, old.model_id, old.task); END",
]
# PostgreSQL: a generated tsvector column (computed by the database on every write) under a GIN index.
_POSTGRES = [
    "ALTER TABLE library_items ADD COLUMN search tsvector GENERATED ALWAYS AS (to_tsvector('english', "
    "coalesce(prompt, '') || ' ' || coalesce(model_id, '') || ' ' || coalesce(task, ''))) STORED",
    "CREATE INDEX ix_library_items_search ON library_items USING gin (search)",
]


def upgrade() -> None:
    with op.batch_alter_table("organizations") as batch:
        batch.add_column(sa.Column("library_autosave", sa.Boolean, nullable=False, server_default=sa.true()))
        batch.add_column(sa.Column("prompts_private", sa.Boolean, nullable=False, server_default=sa.false()))
    op.create_table(
        "library_items",
        sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("id", sa.String(40), nullable=False),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_library_items_org_id_organizations"),
                  nullable=False),
        sa.Column("type", sa.String(10), nullable=False),
        sa.Column("model_id", sa.String(200), nullable=False),
        sa.Column("task", sa.String(40), nullable=False),
        sa.Column("prompt", sa.Text, nullable=True),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("media", sa.JSON, nullable=False),
        sa.Column("width", sa.Integer, nullable=True),
        sa.Column("height", sa.Integer, nullable=True),
        sa.Column("duration_seconds", sa.Float, nullable=True),
        sa.Column("bytes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("source_route", sa.String(40), nullable=False),
        sa.Column("job_id", sa.String(40), nullable=True),
        sa.Column("run_id", sa.String(40), nullable=True),
        sa.Column("embedding", sa.JSON, nullable=True),
        sa.Column("embed_due", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("created_at", _T, nullable=False),
    )
    op.create_index("uq_library_items_id", "library_items", ["id"], unique=True)
    op.create_index("ix_library_items_org_id", "library_items", ["org_id", "seq"])
    op.create_index("ix_library_items_job_id", "library_items", ["job_id"])
    op.create_index("ix_library_items_embed_due", "library_items", ["embed_due", "seq"])
    op.create_table(
        "library_shares",
        sa.Column("item_id", sa.String(40), primary_key=True),
        sa.Column("org_id", sa.String(40), sa.ForeignKey("organizations.id", ondelete="CASCADE",
                                                         name="fk_library_shares_org_id_organizations"),
                  nullable=False),
        sa.Column("token_hash", sa.String(64), nullable=False),
        sa.Column("created_at", _T, nullable=False),
        sa.Column("expires_at", _T, nullable=True),
    )
    op.create_index("uq_library_shares_token_hash", "library_shares", ["token_hash"], unique=True)
    for statement in _SQLITE if op.get_bind().dialect.name == "sqlite" else _POSTGRES:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS library_items_fts_delete")
        op.execute("DROP TRIGGER IF EXISTS library_items_fts_insert")
        op.execute("DROP TABLE IF EXISTS library_fts")
    op.drop_table("library_shares")
    op.drop_table("library_items")
    with op.batch_alter_table("organizations") as batch:
        batch.drop_column("prompts_private")
        batch.drop_column("library_autosave")
