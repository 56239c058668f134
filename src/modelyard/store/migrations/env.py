"""Alembic environment: runs on the connection Store.migrate hands over (works for SQLite and PostgreSQL)."""

from alembic import context

from modelyard.store.tables import metadata
import modelyard.store.log_tables  # noqa: F401  (its tables join the same metadata)

connection = context.config.attributes.get("connection")
if connection is None:  # pragma: no cover - the CLI always passes a connection
    raise RuntimeError("run migrations through `modelyard migrate`, which supplies the database connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
