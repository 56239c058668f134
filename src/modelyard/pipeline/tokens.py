"""Prompt token counts for countTokens / count_tokens: the local tokenizer, the provider's count, or an estimate."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from ..errors import ModelyardError
from ..protocols.openai.schema import ChatRequest

log = logging.getLogger(__name__)

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
    """(tokens, how): how is `tokenizer` (a local model's own), `upstream` (the provider counted), or `estimate`.

    A deployment that cannot count (an OpenAI-compatible upstream, a worker, a provider that fails) leaves the
    count to the next one, and finally to the estimate: counting must not fail because a provider lacks it.
    """
    for d in router.deployments(model):
        backend = router.backends.get(d.key)
        counter = getattr(backend, "count_tokens", None)
        available = getattr(backend, "available", None)
        if counter is None or (available is not None and not available()):
            continue
        try:
            return await counter(req), "upstream" if available is None else "tokenizer"
        except ModelyardError as exc:
            log.info("token count on %s failed, estimating instead: %s", d.key, exc)
    return estimate_tokens(req), "estimate"


async def stream_input_tokens(router: Any, deployment: Any, req: ChatRequest) -> int:
    """A stream's input tokens before its first byte (Anthropic's message_start carries them): the serving
    deployment's own tokenizer when the model runs here (exact), else the estimate. A provider's count would add a
    round trip before the first byte; its real figure still arrives with the final usage (message_delta)."""
    backend = router.backends.get(deployment.key)
    counter = getattr(backend, "count_tokens", None)
    available = getattr(backend, "available", None)
    if counter is not None and available is not None and available():
        try:
            return await counter(req)
        except Exception as exc:  # the call is admitted and streaming: a count must never break it
            log.info("token count on %s failed, estimating instead: %s", deployment.key, exc)
    return estimate_tokens(req)
