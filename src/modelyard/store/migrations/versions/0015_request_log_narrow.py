"""The request log keeps only what it adds to a call's usage row.

A call's usage row (`usage_records`) already holds its key, model, task, status, latency, tokens, price and job; the
request log held a second copy of each. Its rows now hold the call's id (the usage row's), time and org, and what
only the log knows: deployment, route, HTTP status, time to first token, request and trace ids, error code. Reads
join the usage row by id. Half the columns to bind and store per call: on SQLite writing a log row took ~20% fewer
instructions (docs/performance.md, "One copy of each fact").

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# the usage row's copies, in the order 0011 made them
MOVED = (("token_id", sa.String(40)), ("model_id", sa.String(200)), ("task", sa.String(40)),
         ("status", sa.String(20)), ("latency_ms", sa.Integer), ("input_tokens", sa.BigInteger),
         ("output_tokens", sa.BigInteger), ("price_micros", sa.BigInteger), ("job_id", sa.String(40)))


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name, _ in MOVED:  # on the partitioned parent: PostgreSQL drops it from every partition
            op.drop_column("request_log", name)
        return
    with op.batch_alter_table("request_log") as batch:  # SQLite: the table is rebuilt once, indexes with it
        for name, _ in MOVED:
            batch.drop_column(name)


def downgrade() -> None:
    """The columns come back filled from the usage rows (nullable: a log row whose usage row is gone has none)."""
    if op.get_bind().dialect.name == "postgresql":
        for name, kind in MOVED:
            op.add_column("request_log", sa.Column(name, kind, nullable=True))
    else:
        with op.batch_alter_table("request_log") as batch:
            for name, kind in MOVED:
                batch.add_column(sa.Column(name, kind, nullable=True))
    names = [name for name, _ in MOVED]
    op.execute(f"UPDATE request_log SET {', '.join(f'{n} = u.{n}' for n in names)} "
               "FROM usage_records u WHERE u.id = request_log.id")
