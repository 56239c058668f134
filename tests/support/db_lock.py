"""Holds a database unwritable for a durability test: prints `locked`, then waits until stdin closes.

Run as a script: `python db_lock.py URL` (a SQLite file URL: a write transaction on the file; a PostgreSQL URL: an
exclusive lock on the usage and ledger tables).
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys


def hold_sqlite(path: str) -> None:
    conn = sqlite3.connect(path, timeout=60, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # the write lock: every other writer waits, then gets 'database is locked'
    print("locked", flush=True)
    sys.stdin.read()
    conn.execute("ROLLBACK")
    conn.close()


async def hold_postgres(url: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(url)
    tr = conn.transaction()
    await tr.start()
    await conn.execute("LOCK TABLE usage_records, wallet_ledger IN ACCESS EXCLUSIVE MODE")
    print("locked", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await tr.rollback()
    await conn.close()


if __name__ == "__main__":
    url = sys.argv[1]
    if url.startswith("sqlite"):
        hold_sqlite(url.split(":///", 1)[1])
    else:
        asyncio.run(hold_postgres(url.replace("postgresql+asyncpg://", "postgresql://")))
