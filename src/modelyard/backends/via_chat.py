"""Completions served through chat, for backends (or upstreams) that have no raw-prompt completion.

Each prompt becomes a one-message chat; the chat answers become the completion's choices (see
protocols/openai_completions.py for the field mapping). The route uses this with the router's chat, and the OpenAI
upstream with its own chat when the upstream has no /completions.
"""

from __future__ import annotations

import time
from typing import Any, AsyncIterator, Awaitable, Callable

import orjson

from ..protocols.openai import wire as oa
from ..protocols.openai import completions as oc
from ..protocols.openai.schema import ChatRequest
from ..protocols.openai.completions import CompletionRequest

ChatFn = Callable[[ChatRequest], Awaitable[dict[str, Any]]]
OpenChatStream = Callable[[ChatRequest], Awaitable[AsyncIterator[Any]]]


async def complete_via_chat(req: CompletionRequest, model: str, chat: ChatFn) -> dict[str, Any]:
    prompts = oc.refuse_unsupported(req, through_chat=True)
    answers = [await chat(oc.chat_request_for(req, prompt)) for prompt in prompts]
    return oc.completion_from_chats(req, prompts, answers, id=oa.new_id("cmpl"), model=model)


async def stream_via_chat(req: CompletionRequest, model: str, open_stream: OpenChatStream
                          ) -> AsyncIterator[dict[str, Any]]:
    """Completion chunks from one chat stream per prompt, in turn; usage summed into one final chunk."""
    prompts = oc.refuse_unsupported(req, through_chat=True)
    n = req.n or 1
    cid, created = oa.new_id("cmpl"), int(time.time())
    prompt_tokens = completion_tokens = 0
    for p, prompt in enumerate(prompts):
        stream = await open_stream(oc.chat_request_for(req, prompt))
        try:
            if req.echo:
                yield oc.chunk(id=cid, model=model, created=created,
                               choices=[oc.choice(p * n + j, prompt, None) for j in range(n)])
            async for raw in stream:
                data = orjson.loads(bytes(raw)) if isinstance(raw, (bytes, bytearray)) else raw
                out, usage = oc.chunk_from_chat(data, prompt_index=p, n=n, id=cid, model=model, created=created)
                if usage:
                    prompt_tokens += int(usage.get("prompt_tokens") or 0)
                    completion_tokens += int(usage.get("completion_tokens") or 0)
                if out is not None:
                    yield out
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()
    if req.wants_usage_in_stream:
        yield oc.chunk(id=cid, model=model, created=created, choices=[],
                       usage=oa.usage(prompt_tokens, completion_tokens))
