"""Prompt token counts for countTokens / count_tokens: the model's own tokenizer when local, else an estimate."""

from __future__ import annotations

import json
import math
from typing import Any

from ..types import ChatRequest

# The estimate for models whose tokenizer we do not hold (upstreams, workers): English text runs about four
# characters a token for the BPE vocabularies in use; each message adds a few tokens of role framing; an image
# counts as Gemini's fixed 258 tokens (Anthropic's real figure depends on the image's size, which we do not read).
CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 4
TOKENS_PER_IMAGE = 258


def estimate_tokens(req: ChatRequest) -> int:
    chars = 0
    images = 0
    for m in req.messages:
        chars += len(m.text())
        if isinstance(m.content, list):
            images += sum(1 for p in m.content if p.type == "image_url")
        for call in m.tool_calls or []:
            chars += len(call.function.name) + len(call.function.arguments)
    for tool in req.tools or []:
        chars += len(json.dumps(tool.function.model_dump(exclude_none=True)))
    return math.ceil(chars / CHARS_PER_TOKEN) + TOKENS_PER_MESSAGE * len(req.messages) + TOKENS_PER_IMAGE * images


async def count_tokens(router: Any, model: Any, req: ChatRequest) -> tuple[int, str]:
    """(tokens, how): `tokenizer` when a deployment of the model can count exactly, `estimate` otherwise."""
    for d in model.deployments:
        backend = router.backends.get(d.key)
        counter = getattr(backend, "count_tokens", None)
        available = getattr(backend, "available", None)
        if counter is not None and (available is None or available()):
            return await counter(req), "tokenizer"
    return estimate_tokens(req), "estimate"
