"""Core types every layer shares: the tasks, a model's states, and how chat results travel inside the gateway.

The wire schemas clients send (OpenAI's chat, completions, media and Responses requests) live in
`protocols/openai/`."""

from __future__ import annotations

from enum import Enum
from typing import Any


class Task(str, Enum):
    CHAT = "chat"
    COMPLETION = "completion"
    EMBEDDING = "embedding"
    RERANK = "rerank"
    SCORE = "score"
    MODERATION = "moderation"
    PII = "pii"
    SPEECH = "speech"
    TRANSCRIPTION = "transcription"
    TRANSLATION = "translation"
    TEXT_TO_IMAGE = "text-to-image"
    IMAGE_TO_IMAGE = "image-to-image"
    TEXT_TO_VIDEO = "text-to-video"
    IMAGE_TO_VIDEO = "image-to-video"


class ModelState(str, Enum):
    OFFLINE = "offline"  # cannot serve (missing runtime or weights, upstream unreachable)
    STANDBY = "standby"  # available, not loaded
    WARMING = "warming"  # loading
    ONLINE = "online"  # loaded / reachable


# A chat completion and its stream chunks travel as OpenAI-shaped JSON objects (dicts) inside the gateway;
# upstream chunks that need no change travel as their original bytes (RawJSON) to skip a re-serialize.
ChatResponse = dict[str, Any]


class RawJSON(bytes):
    """Already-serialized JSON that the edge writes as it is."""


class RawSSE(bytes):
    """One or more complete, already-framed server-sent events (`data: ...\n\n`), relayed as they are."""
