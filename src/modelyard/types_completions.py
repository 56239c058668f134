"""The legacy OpenAI Completions request (POST /v1/completions), validated at the edge, unknown fields kept."""

from __future__ import annotations

from typing import Any

from pydantic import Field, PrivateAttr, field_validator, model_validator

from .types import StreamOptions, _GenerationOptions, _Open, check_stop


class CompletionRequest(_GenerationOptions, _Open):
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


