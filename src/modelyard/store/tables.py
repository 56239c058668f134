"""SQLAlchemy Core tables; Alembic migrations in migrations/ create and evolve them."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, DateTime, ForeignKey, Index, MetaData, String, Table

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

organizations = Table(
    "organizations",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("name", String(200), nullable=False, unique=True),
    Column("plan", String(40), nullable=False, default="free"),
    Column("status", String(20), nullable=False, default="active"),
    Column("profile", JSON, nullable=False, default=dict),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    # sha256 of the whole secret: secrets are 256-bit random, so a slow hash adds nothing but latency
    Column("secret_hash", String(64), nullable=False, unique=True),
    Column("display", String(40), nullable=False),
    Column("scopes", JSON, nullable=False),
    Column("status", String(20), nullable=False, default="active"),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("request_count", BigInteger, nullable=False, default=0),
    Index("ix_api_tokens_org_id", "org_id"),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("url", String(500), nullable=False),
    Column("region", String(64), nullable=True),
    Column("models", JSON, nullable=False),  # [{id, type, tasks, state}]
    Column("secret", String(200), nullable=False),  # the worker's serving key, which the gateway presents to it
    Column("status", String(20), nullable=False),  # online | offline
    Column("registered_at", DateTime(timezone=True), nullable=False),
    Column("last_heartbeat", DateTime(timezone=True), nullable=False),
    Index("uq_workers_org_id_name", "org_id", "name", unique=True),
)

responses = Table(
    "responses",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(20), nullable=False),
    Column("body", JSON, nullable=False),  # the response object, as GET /v1/responses/{id} returns it
    Column("history", JSON, nullable=False),  # the conversation as chat messages, for previous_response_id
    Column("input", JSON, nullable=False),  # this turn's input items, for GET /v1/responses/{id}/input_items
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_responses_org_id", "org_id"),
)
