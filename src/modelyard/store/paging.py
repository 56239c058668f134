"""Keyset paging, newest first: `after` is the (created_at, id) of the previous page's last row."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, Table, and_, or_


def newest_first(q: Select[Any], table: Table, after: tuple[Any, str] | None, limit: int,
                 time: str = "created_at") -> Select[Any]:
    """The page of `q` after the row `after`, newest first by the `time` column (ties broken by id)."""
    at, row_id = table.c[time], table.c.id
    if after is not None:
        q = q.where(or_(at < after[0], and_(at == after[0], row_id < after[1])))
    return q.order_by(at.desc(), row_id.desc()).limit(limit)
