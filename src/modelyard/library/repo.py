"""The library's tables: items (with their full-text index, kept by the database), share links, embeddings."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, column, delete, func, literal_column, select, table, update

from ..store.billing_repo import insert_new
from ..store.db import Store
from ..store.tables import library_items, library_shares, organizations
from .items import Item, item_from_row

_WORDS = re.compile(r"\w+", re.UNICODE)
_FTS = table("library_fts", column("rowid"))  # SQLite's FTS5 index (made by migration 0010)
_PG_SEARCH = literal_column("library_items.search")  # PostgreSQL's generated tsvector column (0010)
COLUMNS = [c for c in library_items.c]


@dataclass(frozen=True)
class Share:
    item_id: str
    org_id: str
    token_hash: str
    created_at: float
    expires_at: float | None


def fts5_query(q: str) -> str | None:
    """Free text as an FTS5 query that cannot be malformed: every word quoted, all of them required."""
    words = _WORDS.findall(q)
    return " ".join('"' + w.replace('"', '""') + '"' for w in words) or None


class LibraryRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine
        self.is_sqlite = store.is_sqlite

    # ---------------------------------------------------------------- items

    async def insert(self, rows: list[dict[str, Any]]) -> None:
        """Insert items, skipping ids already there (a job's item recorded twice, a replayed spool)."""
        async with self.engine.begin() as conn:
            await insert_new(conn, library_items, rows)

    async def autosave(self, org_ids: set[str]) -> dict[str, bool]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(organizations.c.id, organizations.c.library_autosave).where(
                organizations.c.id.in_(org_ids)))).all()
        return {r[0]: bool(r[1]) for r in rows}

    async def get(self, org_id: str, item_id: str) -> Item | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(*COLUMNS).where(
                library_items.c.id == item_id, library_items.c.org_id == org_id))).mappings().first()
        return item_from_row(row) if row else None

    async def seq_of(self, org_id: str, item_id: str) -> int | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(select(library_items.c.seq).where(
                library_items.c.id == item_id, library_items.c.org_id == org_id))).scalar()

    def _matches(self, q: str) -> Any:
        """The condition `q`'s words put on library_items, in the database's own full-text engine."""
        if self.is_sqlite:
            return library_items.c.seq.in_(select(_FTS.c.rowid).where(
                literal_column("library_fts").op("MATCH")(fts5_query(q) or '""')))
        return _PG_SEARCH.op("@@")(func.websearch_to_tsquery("english", q))

    async def list(self, org_id: str, *, type: str | None = None, model: str | None = None,
                   since: float | None = None, until: float | None = None, q: str | None = None,
                   before_seq: int | None = None, limit: int = 20) -> list[Item]:
        """Newest first; `before_seq` is the cursor (the last item of the previous page)."""
        where = [library_items.c.org_id == org_id]
        if type:
            where.append(library_items.c.type == type)
        if model:
            where.append(library_items.c.model_id == model)
        if since is not None:
            where.append(library_items.c.created_at >= since)
        if until is not None:
            where.append(library_items.c.created_at < until)
        if q:
            where.append(self._matches(q))
        if before_seq is not None:
            where.append(library_items.c.seq < before_seq)
        query = select(*COLUMNS).where(and_(*where)).order_by(library_items.c.seq.desc()).limit(limit)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [item_from_row(r) for r in rows]

    async def search(self, org_id: str, q: str, *, limit: int, offset: int) -> list[tuple[Item, float]]:
        """Ranked by the engine: bm25 over prompt (weighted most), model and task on SQLite; ts_rank on PostgreSQL.
        Scores are made larger-is-better on both."""
        if self.is_sqlite:
            match = fts5_query(q)
            if match is None:
                return []
            score = literal_column("bm25(library_fts, 10.0, 2.0, 1.0)")
            query = (select(*COLUMNS, (-score).label("score"))
                     .select_from(library_items.join(_FTS, _FTS.c.rowid == library_items.c.seq))
                     .where(library_items.c.org_id == org_id, literal_column("library_fts").op("MATCH")(match))
                     .order_by(score, library_items.c.seq.desc()))
        else:
            tsq = func.websearch_to_tsquery("english", q)
            rank = func.ts_rank(_PG_SEARCH, tsq)
            query = (select(*COLUMNS, rank.label("score"))
                     .where(library_items.c.org_id == org_id, _PG_SEARCH.op("@@")(tsq))
                     .order_by(rank.desc(), library_items.c.seq.desc()))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query.limit(limit).offset(offset))).mappings().all()
        return [(item_from_row(r), float(r["score"])) for r in rows]

    async def delete(self, org_id: str, item_id: str) -> Item | None:
        """The item and its share, in one transaction; the caller removes the bytes."""
        item = await self.get(org_id, item_id)
        if item is None:
            return None
        async with self.engine.begin() as conn:
            await conn.execute(delete(library_shares).where(library_shares.c.item_id == item_id,
                                                            library_shares.c.org_id == org_id))
            done = await conn.execute(delete(library_items).where(library_items.c.id == item_id,
                                                                  library_items.c.org_id == org_id))
        return item if done.rowcount else None

    # ---------------------------------------------------------------- embeddings

    async def due_embeddings(self, limit: int) -> list[tuple[str, str]]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(library_items.c.id, library_items.c.prompt).where(
                library_items.c.embed_due.is_(True)).order_by(library_items.c.seq).limit(limit))).all()
        return [(r[0], r[1] or "") for r in rows]

    async def set_embeddings(self, vectors: dict[str, list[float] | None]) -> None:
        async with self.engine.begin() as conn:
            for item_id, vector in vectors.items():
                await conn.execute(update(library_items).where(library_items.c.id == item_id).values(
                    embedding=vector, embed_due=False))

    async def embedded(self, org_id: str, limit: int) -> list[Item]:
        """The org's newest items that have an embedding (semantic search ranks these in Python)."""
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(*COLUMNS).where(
                library_items.c.org_id == org_id, library_items.c.embedding.is_not(None))
                .order_by(library_items.c.seq.desc()).limit(limit))).mappings().all()
        return [item_from_row(r) for r in rows if r["embedding"]]

    # ---------------------------------------------------------------- shares

    async def put_share(self, share: Share) -> None:
        """The item's one link: a new one replaces the old, which stops working at once."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(library_shares).where(library_shares.c.item_id == share.item_id))
            await conn.execute(library_shares.insert().values(
                item_id=share.item_id, org_id=share.org_id, token_hash=share.token_hash,
                created_at=share.created_at, expires_at=share.expires_at))

    async def get_share(self, org_id: str, item_id: str) -> Share | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(library_shares).where(
                library_shares.c.item_id == item_id, library_shares.c.org_id == org_id))).mappings().first()
        return Share(**row) if row else None

    async def delete_share(self, org_id: str, item_id: str) -> bool:
        async with self.engine.begin() as conn:
            done = await conn.execute(delete(library_shares).where(
                library_shares.c.item_id == item_id, library_shares.c.org_id == org_id))
        return bool(done.rowcount)

    async def by_token(self, token_hash: str) -> tuple[Share, Item, bool] | None:
        """(share, item, the org keeps prompts private) for a token's hash."""
        query = (select(*COLUMNS, library_shares.c.created_at.label("share_created_at"),
                        library_shares.c.expires_at.label("share_expires_at"), organizations.c.prompts_private)
                 .select_from(library_shares.join(library_items, library_items.c.id == library_shares.c.item_id)
                              .join(organizations, organizations.c.id == library_shares.c.org_id))
                 .where(library_shares.c.token_hash == token_hash,
                        library_items.c.org_id == library_shares.c.org_id))
        async with self.engine.connect() as conn:
            row = (await conn.execute(query)).mappings().first()
        if row is None:
            return None
        share = Share(row["id"], row["org_id"], token_hash, row["share_created_at"], row["share_expires_at"])
        return share, item_from_row(row), bool(row["prompts_private"])
