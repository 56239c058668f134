"""Builds the backend object for a deployment from its configured kind."""

from __future__ import annotations

import importlib

from ..catalog import Deployment
from .base import BaseBackend

# kind -> "module:Class", imported only when a deployment uses it (heavy runtimes load lazily)
KINDS = {
    "openai": "upstream_openai:OpenAIUpstream",
    "anthropic": "upstream_anthropic:AnthropicUpstream",
    "gemini": "upstream_gemini:GeminiUpstream",
    "worker": "modelyard.workers.backend:WorkerBackend",  # the workers feature's own
    "llama_cpp": "local.llama:LlamaCppBackend",
    "sentence_transformers": "local.embed:SentenceTransformersBackend",
    "cross_encoder": "local.embed:CrossEncoderBackend",
    "piper": "local.tts:PiperBackend",
    "espeak": "local.tts:EspeakBackend",
    "faster_whisper": "local.stt:FasterWhisperBackend",
    "presidio": "local.pii:PresidioBackend",
    "diffusers": "local.image:DiffusersBackend",
    "echo": "local.echo:EchoBackend",
}


def create_backend(deployment: Deployment, *, shared: dict) -> BaseBackend:
    """`shared` holds resources backends pool across deployments (one HTTP client per upstream)."""
    kind = deployment.config.backend
    if kind not in KINDS:
        raise ValueError(f"unknown backend kind '{kind}' for deployment {deployment.key}")
    module_name, class_name = KINDS[kind].split(":")
    module = module_name if module_name.startswith("modelyard.") else f"{__package__}.{module_name}"
    cls = getattr(importlib.import_module(module), class_name)
    if kind in ("openai", "anthropic", "gemini", "worker"):
        return cls(deployment, shared=shared)
    return cls(deployment)
