"""Keyset paging, newest first: `after` is the (created_at, id) of the previous page's last row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, and_, or_


def newest_first(q: Select[Any], table: Table, after: tuple[float, str] | None, limit: int) -> Select[Any]:
    """The page of `q` after the row `after`, newest first (ties on created_at broken by id)."""
    c = table.c
    if after is not None:
        q = q.where(or_(c.created_at < after[0], and_(c.created_at == after[0], c.id < after[1])))
    return q.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
