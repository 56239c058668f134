"""The SQL store: tables, engine, migrations and repositories."""

from .db import Store

__all__ = ["Store"]
