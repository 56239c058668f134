"""Prompt tools: rewriting a prompt for a task through a text model."""

from .rewrite import RewriteRequest, rewrite

__all__ = ["RewriteRequest", "rewrite"]
