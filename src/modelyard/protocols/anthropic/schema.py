"""Anthropic Messages as it is on the wire: the request models, the version header rule, the error envelope, and the one
stop-reason table both directions read."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ...errors import InvalidRequest, ModelyardError
from ..openai.chat_parts import data_url


# anthropic-version is a date; later versions only add to the 2023-06-01 wire format we serve, and SDKs send
# their own release's date, so any well-formed date is served the same (a malformed one is refused).
VERSION_PATTERN = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Anthropic's stop reasons and the OpenAI finish reasons they mean, in one table read both ways: converting either
# way takes the first pair that names the value (end_turn -> stop, but stop -> end_turn; tool_use -> tool_calls).
STOP_REASONS = (("end_turn", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
                ("refusal", "content_filter"), ("stop_sequence", "stop"), ("pause_turn", "stop"),
                ("tool_use", "function_call"))
FINISH_OF_STOP = {a: o for a, o in reversed(STOP_REASONS)}  # what an upstream's stop_reason means to a chat client
STOP_OF_FINISH = {o: a for a, o in reversed(STOP_REASONS)}  # what a chat finish_reason means to an Anthropic client


ERROR_TYPE = {400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
              403: "permission_error", 404: "not_found_error", 405: "invalid_request_error",
              413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 504: "timeout_error"}


class _Lenient(BaseModel):
    # unknown fields (cache_control, citations, ...) are accepted and ignored, as the API evolves faster than we do
    model_config = ConfigDict(extra="allow")


class TextBlock(_Lenient):
    type: Literal["text"]
    text: str


class ImageSource(_Lenient):
    type: Literal["base64", "url"]
    media_type: str | None = None
    data: str | None = None
    url: str | None = None


class ImageBlock(_Lenient):
    type: Literal["image"]
    source: ImageSource

    def url(self) -> str:
        src = self.source
        if src.type == "base64":
            if not src.data or not src.media_type:
                raise ValueError("a base64 image source needs 'media_type' and 'data'")
            return data_url(src.media_type, src.data)
        if not src.url:
            raise ValueError("a url image source needs 'url'")
        return src.url


class ToolUseBlock(_Lenient):
    type: Literal["tool_use"]
    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(_Lenient):
    type: Literal["tool_result"]
    tool_use_id: str = Field(min_length=1)
    content: str | list[Annotated[Union[TextBlock, ImageBlock], Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(_Lenient):
    """Reasoning from an earlier turn: clients send it back; no model here consumes it, so it is dropped."""

    type: Literal["thinking", "redacted_thinking"]


Block = Annotated[Union[TextBlock, ImageBlock, ToolUseBlock, ToolResultBlock, ThinkingBlock],
                  Field(discriminator="type")]


class InputMessage(_Lenient):
    role: Literal["user", "assistant"]
    content: str | Annotated[list[Block], Field(min_length=1)]


class Tool(_Lenient):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    description: str | None = None
    input_schema: dict[str, Any]
    type: Literal["custom"] | None = None  # server tools (web_search_..., bash_...) are not offered here


class ToolChoice(_Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class OutputFormat(_Lenient):
    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")


class OutputConfig(_Lenient):
    format: OutputFormat | None = None
    effort: str | None = None  # a reasoning budget; no model here reasons, so it has nothing to steer


class MessagesRequest(_Lenient):
    """POST /v1/messages, as Anthropic defines it."""

    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    stop_sequences: list[str] | None = Field(default=None, max_length=4)
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
    output_config: OutputConfig | None = None
    stream: bool = False

    @field_validator("stop_sequences")
    @classmethod
    def _stops(cls, v: list[str] | None) -> list[str] | None:
        if v and any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
        return v


class CountTokensRequest(_Lenient):
    """POST /v1/messages/count_tokens: a Messages request without max_tokens."""

    model: str = Field(min_length=1)
    messages: list[InputMessage] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None


def check_version(value: str | None) -> None:
    """A missing header is taken as 2023-06-01 (curl users forget it); one that is not a date is refused."""
    if value is not None and not VERSION_PATTERN.match(value.strip()):
        raise InvalidRequest(f"anthropic-version '{value}' is not a version; send a date such as 2023-06-01.",
                             param="anthropic-version")


# ---------------------------------------------------------------- request -> internal chat request


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """Anthropic's envelope; it has no `param`, so the message names the field."""
    kind = ERROR_TYPE.get(exc.status, "api_error" if exc.status >= 500 else "invalid_request_error")
    message = exc.message
    if exc.param and exc.param not in message:
        message = f"{exc.param}: {message}"
    return {"type": "error", "error": {"type": kind, "message": message}}
