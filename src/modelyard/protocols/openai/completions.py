"""OpenAI's legacy Completions API: the request (validated at the edge, unknown fields kept), its wire format, and
its mapping onto chat for backends that have no raw-prompt completion."""

from __future__ import annotations

import time
from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from ...errors import InvalidRequest
from .schema import ChatRequest, GenerationOptions, Open, StreamOptions, check_stop

class CompletionRequest(GenerationOptions, Open):
    """POST /v1/completions, as OpenAI defines it (max_tokens defaults to 16 there, and here)."""

    # the client's body as it arrived: pass-through upstreams forward it rather than re-serializing the model
    _raw: bytes | None = PrivateAttr(default=None)

    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]] = Field(min_length=1)
    suffix: str | None = None
    max_tokens: int | None = Field(default=16, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=16)
    best_of: int | None = Field(default=None, ge=1, le=20)
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    stop: str | list[str] | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    seed: int | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_rules(cls, v: str | list[str] | None) -> str | list[str] | None:
        return check_stop(v)

    @field_validator("prompt")
    @classmethod
    def _prompt_rules(cls, v: Any) -> Any:
        if isinstance(v, list) and v and isinstance(v[0], list) and any(not p for p in v):
            raise ValueError("token-id prompts must not be empty")
        return v

    @model_validator(mode="after")
    def _cross_field(self) -> CompletionRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        if self.best_of is not None and self.best_of < (self.n or 1):
            raise ValueError("'best_of' must be greater than or equal to 'n'")
        return self

    @property
    def prompts(self) -> list[str] | None:
        """The prompts as text; None when the client sent token ids (only upstreams that tokenize alike take those)."""
        if isinstance(self.prompt, str):
            return [self.prompt]
        if all(isinstance(p, str) for p in self.prompt):
            return list(self.prompt)  # type: ignore[arg-type]
        return None


# Sampling fields that mean the same in both APIs and travel unchanged when a completion is served through chat.
_SHARED = ("temperature", "top_p", "n", "stop", "presence_penalty", "frequency_penalty", "logit_bias", "seed", "user")


def completion(*, id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int],
               created: int | None = None) -> dict[str, Any]:
    return {"id": id, "object": "text_completion", "created": created or int(time.time()), "model": model,
            "choices": choices, "usage": usage, "system_fingerprint": None}


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "logprobs": None, "finish_reason": finish_reason}


def chunk(*, id: str, model: str, created: int, choices: list[dict[str, Any]],
          usage: dict[str, int] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"id": id, "object": "text_completion", "created": created, "model": model,
                           "choices": choices, "system_fingerprint": None}
    if usage is not None:
        out["usage"] = usage
    return out


def finish_from_chat(reason: str | None) -> str | None:
    """Completions know stop, length and content_filter; a chat model's tool call ends the text like a stop."""
    if reason in (None, "stop", "length", "content_filter"):
        return reason
    return "stop"


# ---------------------------------------------------------------- served through chat

def refuse_unsupported(req: CompletionRequest, *, through_chat: bool) -> list[str]:
    """The prompts as text, or a 400 naming the field this serving path cannot honour.

    Through chat there is no raw prompt to continue: `suffix` (insertion) and `logprobs` have no chat equivalent,
    and token-id prompts cannot be turned back into text without the model's tokenizer.
    """
    prompts = req.prompts
    if prompts is None:
        raise InvalidRequest(f"Model '{req.model}' takes prompts as text here; token-id prompts are not supported.",
                             param="prompt", code="unsupported_parameter")
    if req.suffix is not None:
        why = "is served through chat" if through_chat else "has no fill-in-the-middle support"
        raise InvalidRequest(f"'suffix' is not supported: model '{req.model}' {why}.", param="suffix",
                             code="unsupported_parameter")
    if req.logprobs is not None:
        raise InvalidRequest(f"'logprobs' is not supported for model '{req.model}'.", param="logprobs",
                             code="unsupported_parameter")
    if req.best_of is not None and req.best_of != (req.n or 1):
        raise InvalidRequest(f"'best_of' other than 'n' is not supported for model '{req.model}'.", param="best_of",
                             code="unsupported_parameter")
    return prompts


def chat_request_for(req: CompletionRequest, prompt: str) -> ChatRequest:
    """One prompt as a one-message chat: the prompt is the user's turn, the completion the assistant's answer."""
    body: dict[str, Any] = {"model": req.model, "messages": [{"role": "user", "content": prompt}],
                            "max_tokens": req.max_tokens, "stream": req.stream}
    for name in _SHARED:
        value = getattr(req, name)
        if value is not None:
            body[name] = value
    if req.stream:
        body["stream_options"] = {"include_usage": True}  # summed into the completion's own usage
    return ChatRequest.model_validate(body)


def completion_from_chats(req: CompletionRequest, prompts: list[str], chats: list[dict[str, Any]], *, id: str,
                          model: str, created: int | None = None) -> dict[str, Any]:
    """Chat completions (one per prompt) as one text completion; choice index = prompt index * n + choice."""
    n = req.n or 1
    choices: list[dict[str, Any]] = []
    prompt_tokens = completion_tokens = 0
    for p, (prompt, chat) in enumerate(zip(prompts, chats)):
        for c in chat.get("choices") or []:
            text = (c.get("message") or {}).get("content") or ""
            choices.append(choice(p * n + int(c.get("index", 0)), (prompt if req.echo else "") + text,
                                  finish_from_chat(c.get("finish_reason"))))
        usage = chat.get("usage") or {}
        prompt_tokens += int(usage.get("prompt_tokens") or 0)
        completion_tokens += int(usage.get("completion_tokens") or 0)
    choices.sort(key=lambda c: c["index"])
    return completion(id=id, model=model, created=created, choices=choices,
                      usage={"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens})


def chunk_from_chat(chat_chunk: dict[str, Any], *, prompt_index: int, n: int, id: str, model: str,
                    created: int) -> tuple[dict[str, Any] | None, dict[str, int] | None]:
    """One chat stream chunk as a completion chunk (None when it carries no text or finish), plus its usage."""
    choices = []
    for c in chat_chunk.get("choices") or []:
        text = (c.get("delta") or {}).get("content") or ""
        finish = finish_from_chat(c.get("finish_reason"))
        if text or finish:
            choices.append(choice(prompt_index * n + int(c.get("index", 0)), text, finish))
    out = chunk(id=id, model=model, created=created, choices=choices) if choices else None
    return out, chat_chunk.get("usage")
