"""SQLAlchemy Core tables; Alembic migrations in migrations/ create and evolve them."""

from __future__ import annotations

from sqlalchemy import (JSON, BigInteger, Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String,
                        Table, Text, false, text, true)

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
    # the library's settings (0010): save every media result automatically; keep prompts off share links
    Column("library_autosave", Boolean, nullable=False, default=True, server_default=true()),
    Column("prompts_private", Boolean, nullable=False, default=False, server_default=false()),
    # (0011) request bodies kept in the request log: null/off, or {"bodies": true, "redact": bool}
    Column("request_logging", JSON, nullable=True),
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
    # who made it: "user:<id>" for a signed-in person, a key's id, or null (the CLI, the first start)
    Column("created_by", String(200), nullable=True),
    Index("ix_api_tokens_org_id", "org_id"),
    Index("ix_api_tokens_org_created_by", "org_id", "created_by"),
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

# Async jobs (jobs/queue.py writes them; batches/lines.py parks, releases and ends a batch's lines). Times are unix seconds (double precision): the queue compares
# them in SQL on both dialects, and every face shows unix times anyway.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", String(40), nullable=True),
    Column("model", String(200), nullable=False),
    Column("task", String(40), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("meta", JSON, nullable=False),  # face, fal slug, studio mode, base URL, billing hold
    Column("status", String(20), nullable=False),  # pending running completed failed cancelled dead_letter
    Column("priority", Integer, nullable=False, default=0),
    Column("attempts", Integer, nullable=False, default=0),
    Column("max_attempts", Integer, nullable=False),
    Column("run_after", Float(precision=53), nullable=False),
    Column("lease_owner", String(80), nullable=True),
    Column("lease_token", String(40), nullable=True),
    Column("lease_expires", Float(precision=53), nullable=True),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # final, and its billing hold not yet settled: a crash between the two is finished by a later sweep
    Column("settle_due", Boolean, nullable=False, default=False),
    Column("result", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("region", String(64), nullable=True),
    Column("created_at", Float(precision=53), nullable=False),
    Column("started_at", Float(precision=53), nullable=True),
    Column("finished_at", Float(precision=53), nullable=True),
    Column("webhook_url", String(2000), nullable=True),
    Column("webhook_status", String(20), nullable=True),  # pending delivering delivered failed
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_next_at", Float(precision=53), nullable=True),
    # a batch's line (0008): which batch, which line of its input file (1-based); null for every other job
    Column("batch_id", String(40), nullable=True),
    Column("batch_line", Integer, nullable=True),
    # an agent run's node (0009): which run, which node of its graph, which item of a map node (null otherwise)
    Column("run_id", String(40), nullable=True),
    Column("run_node", String(100), nullable=True),
    Column("run_item", Integer, nullable=True),
    Index("ix_jobs_claim", "status", "priority", "run_after"),
    # what a claim reads (0013): pending rows only, in the order runners take them
    Index("ix_jobs_pending", text("priority DESC"), "run_after", "id", postgresql_where=text("status = 'pending'"),
          sqlite_where=text("status = 'pending'")),
    Index("ix_jobs_org_id", "org_id", "created_at"),
    Index("ix_jobs_webhook", "webhook_status", "webhook_next_at"),
    Index("ix_jobs_settle_due", "settle_due", "finished_at"),
    Index("ix_jobs_batch_line", "batch_id", "batch_line"),
    Index("ix_jobs_batch_status", "batch_id", "status"),
    Index("ix_jobs_run", "run_id", "run_node", "run_item"),
)

# OpenAI batches (0008; batches/repo.py is the only writer). Each line is a job row (jobs.batch_id). Times are unix
# seconds like the jobs'. A driver (batches/driver.py, wherever runners run) holds a batch by a short lease while
# it validates, dispatches or finalizes it.
batches = Table(
    "batches",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", String(40), nullable=True),
    Column("endpoint", String(60), nullable=False),
    Column("model", String(200), nullable=True),  # the first line's model, as OpenAI shows it
    Column("input_file_id", String(60), nullable=False),
    Column("completion_window", String(10), nullable=False),
    Column("status", String(20), nullable=False),
    Column("ending", String(20), nullable=True),  # expired | cancelled: why unfinished lines stop
    Column("errors", JSON, nullable=True),  # validation errors: [{code, message, param, line}]
    Column("meta", JSON, nullable=True),  # the client's metadata (<= 16 pairs)
    Column("output_expires_after", Integer, nullable=True),  # seconds, for the output and error files
    Column("output_file_id", String(60), nullable=True),
    Column("error_file_id", String(60), nullable=True),
    Column("total", Integer, nullable=False, default=0),
    Column("completed", Integer, nullable=False, default=0),  # frozen when final; live counts come from the lines
    Column("failed", Integer, nullable=False, default=0),
    Column("usage", JSON, nullable=True),
    Column("base_url", String(500), nullable=True),
    Column("created_at", Float(precision=53), nullable=False),
    Column("expires_at", Float(precision=53), nullable=False),
    Column("in_progress_at", Float(precision=53), nullable=True),
    Column("finalizing_at", Float(precision=53), nullable=True),
    Column("completed_at", Float(precision=53), nullable=True),
    Column("failed_at", Float(precision=53), nullable=True),
    Column("expired_at", Float(precision=53), nullable=True),
    Column("cancelling_at", Float(precision=53), nullable=True),
    Column("cancelled_at", Float(precision=53), nullable=True),
    Column("driver_token", String(40), nullable=True),
    Column("driver_expires", Float(precision=53), nullable=True),
    Column("webhook_status", String(20), nullable=True),  # pending delivered failed
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_next_at", Float(precision=53), nullable=True),
    Index("ix_batches_org_id", "org_id", "created_at"),
    Index("ix_batches_status", "status"),
    Index("ix_batches_webhook", "webhook_status", "webhook_next_at"),
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

# ---- billing (0003): money is integer micro-dollars; every movement of a wallet is a ledger row

wallets = Table(
    "wallets",
    metadata,
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("balance_micros", BigInteger, nullable=False, default=0),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

wallet_ledger = Table(
    "wallet_ledger",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("kind", String(20), nullable=False),  # top_up | reserve | release | charge | adjustment
    Column("amount_micros", BigInteger, nullable=False),  # signed: what it did to the balance
    Column("ref", String(60), nullable=True),  # the call (ticket) a reserve/release/charge belongs to
    Column("note", String(500), nullable=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_wallet_ledger_org_id", "org_id"),
    Index("uq_wallet_ledger_kind_ref", "kind", "ref", unique=True),  # one release/charge per call
)

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), nullable=False),  # no FK: usage outlives a deleted org's rows for accounting
    Column("token_id", String(40), nullable=True),
    Column("model_id", String(200), nullable=False),
    Column("task", String(40), nullable=False),
    Column("units", JSON, nullable=False),
    Column("input_tokens", BigInteger, nullable=False, default=0),  # out of `units`, so SQL can sum them
    Column("output_tokens", BigInteger, nullable=False, default=0),
    Column("price_micros", BigInteger, nullable=False, default=0),
    Column("status", String(20), nullable=False),  # ok | failed
    Column("latency_ms", Integer, nullable=False, default=0),
    Column("region", String(64), nullable=True),
    Column("flagged", Boolean, nullable=False, default=False),
    Column("day", String(10), nullable=False),  # UTC YYYY-MM-DD: groups the same on every database
    Column("created_at", DateTime(timezone=True), nullable=False),
    # what the call was part of (0009): the job, and the agent run and node that job ran for
    Column("job_id", String(40), nullable=True),
    Column("run_id", String(40), nullable=True),
    Column("run_node", String(100), nullable=True),
    # the call's request-log fields (0016): its X-Request-Id, and the rest as a JSON array [deployment, route,
    # http_status, ttft_ms, trace_id, error_code]. On SQLite they stay here, `request_log` is a view over the rows
    # that have them, and two partial indexes (0016, SQLite only) serve it; on PostgreSQL a trigger moves them into
    # the partitioned request_log table as the row is inserted, and they are NULL here.
    Column("request_id", String(128), nullable=True),
    Column("log_fields", Text, nullable=True),
    Index("ix_usage_records_org_id_day", "org_id", "day"),
    Index("ix_usage_records_run_id", "run_id"),
)

content_filter_policies = Table(
    "content_filter_policies",
    metadata,
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("action", String(10), nullable=False),  # block | flag | log | off
    Column("categories", JSON, nullable=True),  # act on these categories only; null: any flagged category
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)

content_filter_events = Table(
    "content_filter_events",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("token_id", String(40), nullable=True),
    Column("model_id", String(200), nullable=False),
    Column("action", String(10), nullable=False),
    Column("categories", JSON, nullable=False),  # what was flagged; the text itself is not kept
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_content_filter_events_org_id", "org_id"),
)

# ---- write-behind (0006): a batch of increments (token counters) applied once, however often it is replayed
write_receipts = Table(
    "write_receipts",
    metadata,
    Column("id", String(60), primary_key=True),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_write_receipts_created_at", "created_at"),
)

# ---- the Files API (0007): a row per file; the bytes live in object storage under `storage_key`. Times are unix
# seconds like jobs', since OpenAI's file objects show them so and the sweeper compares them in SQL.
files = Table(
    "files",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("purpose", String(40), nullable=False),
    Column("filename", String(1000), nullable=False),
    Column("bytes", BigInteger, nullable=False, default=0),
    # uploading (bytes on their way; invisible) | processed | deleted (invisible; the sweeper removes the bytes)
    Column("status", String(20), nullable=False),
    Column("storage_key", String(500), nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Column("expires_at", Float(precision=53), nullable=True),
    Index("ix_files_org_id", "org_id", "created_at"),
    Index("ix_files_expires_at", "expires_at"),
    Index("ix_files_status", "status", "created_at"),
)

# ---- agents (0009; agents/repo.py is the only writer). A saved graph keeps every version it had (a run pins one);
# a run has a row per node; each node (and each item of a map node) runs as a job (jobs.run_id/run_node/run_item).
agents = Table(
    "agents",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("description", String(2000), nullable=True),
    Column("version", Integer, nullable=False),
    Column("dag", JSON, nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Column("updated_at", Float(precision=53), nullable=False),
    Column("deleted_at", Float(precision=53), nullable=True),  # gone for clients; its runs stay readable
    Index("ix_agents_org_id", "org_id", "created_at"),
)

agent_versions = Table(
    "agent_versions",
    metadata,
    Column("agent_id", String(40), primary_key=True),
    Column("version", Integer, primary_key=True),
    Column("name", String(200), nullable=False),
    Column("dag", JSON, nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
)

agent_runs = Table(
    "agent_runs",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("token_id", String(40), nullable=True),
    Column("agent_id", String(40), nullable=False),
    Column("agent_version", Integer, nullable=False),
    # pending running succeeded failed cancelling cancelled
    Column("status", String(20), nullable=False),
    Column("input_params", JSON, nullable=False),
    Column("outputs", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("repair_of", String(40), nullable=True),  # the run a repair run reuses the results of
    Column("idempotency_key", String(200), nullable=True),
    Column("base_url", String(500), nullable=True),
    Column("created_at", Float(precision=53), nullable=False),
    Column("started_at", Float(precision=53), nullable=True),
    Column("finished_at", Float(precision=53), nullable=True),
    # the engine: one advancer at a time per run (a short lease), and when the run wants looking at next
    Column("due_at", Float(precision=53), nullable=True),
    Column("driver_token", String(40), nullable=True),
    Column("driver_expires", Float(precision=53), nullable=True),
    Column("webhook_url", String(2000), nullable=True),
    Column("webhook_status", String(20), nullable=True),  # pending delivering delivered failed
    Column("webhook_attempts", Integer, nullable=False, default=0),
    Column("webhook_next_at", Float(precision=53), nullable=True),
    Index("ix_agent_runs_org_id", "org_id", "created_at"),
    Index("ix_agent_runs_due", "status", "due_at"),
    Index("ix_agent_runs_idempotency", "org_id", "idempotency_key", unique=True),
    Index("ix_agent_runs_webhook", "webhook_status", "webhook_next_at"),
)

agent_run_nodes = Table(
    "agent_run_nodes",
    metadata,
    Column("run_id", String(40), primary_key=True),
    Column("node_id", String(100), primary_key=True),
    Column("org_id", String(40), nullable=False),
    Column("kind", String(10), nullable=False),  # task | map
    # pending queued running retrying succeeded cached failed skipped cancelled
    Column("state", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("inputs", JSON, nullable=True),  # the resolved payload (a map: the resolved items)
    Column("result", JSON, nullable=True),
    Column("error", JSON, nullable=True),
    Column("errors", JSON, nullable=True),  # a map's failed items: [{index, error}]
    Column("total", Integer, nullable=True),  # a map's items, and how many ended each way
    Column("done", Integer, nullable=True),
    Column("failed", Integer, nullable=True),
    Column("cache_key", String(64), nullable=True),
    Column("reused_from", String(40), nullable=True),  # the run (repair) or node cache this result came from
    Column("started_at", Float(precision=53), nullable=True),
    Column("finished_at", Float(precision=53), nullable=True),
    Index("ix_agent_run_nodes_cache", "org_id", "cache_key"),
)

agent_run_events = Table(
    "agent_run_events",
    metadata,
    Column("id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("run_id", String(40), nullable=False),
    Column("type", String(40), nullable=False),
    Column("data", JSON, nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Index("ix_agent_run_events_run_id", "run_id", "id"),
)

# ---- the media library (0010; library/repo.py is the only writer). An item per media result; its bytes live in the
# media store under the names in `media`. `seq` orders items and keys the full-text index, which the migration
# makes per dialect and this metadata does not declare: an FTS5 table `library_fts` kept by triggers (SQLite), a
# generated tsvector column `search` under a GIN index (PostgreSQL). Times are unix seconds like the jobs'.
library_items = Table(
    "library_items",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(40), nullable=False),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("type", String(10), nullable=False),  # image | video | audio
    Column("model_id", String(200), nullable=False),
    Column("task", String(40), nullable=False),
    Column("prompt", Text, nullable=True),
    Column("params", JSON, nullable=False),
    Column("media", JSON, nullable=False),  # [{name, content_type, bytes, width, height, duration_seconds}]
    Column("width", Integer, nullable=True),
    Column("height", Integer, nullable=True),
    Column("duration_seconds", Float, nullable=True),
    Column("bytes", BigInteger, nullable=False, default=0),
    Column("source_route", String(40), nullable=False),  # openai | jobs | fal | studio | batch | agent | render | save
    Column("job_id", String(40), nullable=True),
    Column("run_id", String(40), nullable=True),
    Column("embedding", JSON, nullable=True),  # the prompt's MiniLM vector, computed after saving
    Column("embed_due", Boolean, nullable=False, default=False),  # has a prompt, no embedding yet
    Column("created_at", Float(precision=53), nullable=False),
    Index("uq_library_items_id", "id", unique=True),
    Index("ix_library_items_org_id", "org_id", "seq"),
    Index("ix_library_items_job_id", "job_id"),
    Index("ix_library_items_embed_due", "embed_due", "seq"),
)

# One live share link per item; only the token's sha256 is kept. Revoking deletes the row.
library_shares = Table(
    "library_shares",
    metadata,
    Column("item_id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Column("expires_at", Float(precision=53), nullable=True),
    Index("uq_library_shares_token_hash", "token_hash", unique=True),
)

# People (0012, docs/accounts.md): users sign in to the console; keys stay how programs authenticate.
# Emails are stored lowercased; passwords only as argon2id hashes.
users = Table(
    "users",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("email", String(320), nullable=False),
    Column("username", String(40), nullable=False),
    Column("password_hash", String(200), nullable=False),
    Column("bio", String(2000), nullable=True),
    Column("location", String(200), nullable=True),
    Column("created_at", Float(precision=53), nullable=False),
    Index("uq_users_email", "email", unique=True),
    Index("uq_users_username", "username", unique=True),
)

# A user's role in an org: owner | admin | member.
memberships = Table(
    "memberships",
    metadata,
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Index("ix_memberships_org_id", "org_id"),
)

# One-time invite links; only the token's sha256 is kept.
invites = Table(
    "invites",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False),
    Column("email", String(320), nullable=True),  # when set, only this address may accept
    Column("role", String(20), nullable=False),
    Column("created_by", String(60), nullable=False),  # the principal's token_id (user:<id> or a key)
    Column("created_at", Float(precision=53), nullable=False),
    Column("expires_at", Float(precision=53), nullable=False),
    Column("used_at", Float(precision=53), nullable=True),
    Column("used_by", String(40), nullable=True),
    Index("uq_invites_token_hash", "token_hash", unique=True),
)

# Server-side console sessions: the cookie holds a random token, the row its sha256. A session is a user's (user_id)
# or an operator's signed in with an admin key (token_id, scopes copied from the key).
sessions = Table(
    "sessions",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("token_hash", String(64), nullable=False),
    Column("user_id", String(40), ForeignKey("users.id", ondelete="CASCADE"), nullable=True),
    Column("token_id", String(40), nullable=True),
    Column("org_id", String(40), ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", Float(precision=53), nullable=False),
    Column("last_seen_at", Float(precision=53), nullable=False),
    Column("expires_at", Float(precision=53), nullable=False),  # the absolute limit; idle expiry is from last_seen_at
    Column("revoked_at", Float(precision=53), nullable=True),
    Column("address", String(100), nullable=True),
    Column("user_agent", String(300), nullable=True),
    Index("uq_sessions_token_hash", "token_hash", unique=True),
    Index("ix_sessions_user_id", "user_id"),
)
