"""Builds the backend object for a deployment from its configured kind."""

from __future__ import annotations

from ..catalog import Deployment
from .base import BaseBackend


def create_backend(deployment: Deployment, *, shared: dict) -> BaseBackend:
    """`shared` holds resources backends pool across deployments (one HTTP client per upstream)."""
    kind = deployment.config.backend
    if kind == "openai":
        from .upstream_openai import OpenAIUpstream

        return OpenAIUpstream(deployment, shared=shared)
    if kind == "llama_cpp":
        from .local.llama import LlamaCppBackend

        return LlamaCppBackend(deployment)
    raise ValueError(f"unknown backend kind '{kind}' for deployment {deployment.key}")
