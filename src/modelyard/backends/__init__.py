"""Backends: one object per deployment, one async method per task it serves."""

from .base import Backend, BaseBackend
from .factory import create_backend

__all__ = ["Backend", "BaseBackend", "create_backend"]
