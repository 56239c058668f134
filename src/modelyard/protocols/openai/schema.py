"""OpenAI's chat request as clients send it: validated at the edge, unknown fields kept for pass-through upstreams.

`Open` is the one base of every OpenAI wire schema here (chat, completions, media, Responses).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


MessageRole = Literal["system", "developer", "user", "assistant", "tool", "function"]


class Open(BaseModel):
    """Keeps fields we do not model, so they reach upstreams unchanged."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class FunctionDef(Open):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Open):
    type: Literal["function"] = "function"
    function: FunctionDef


class ToolCallFunction(Open):
    name: str
    arguments: str = ""


class ToolCall(Open):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(Open):
    type: Literal["text", "image_url", "input_audio", "file", "refusal"]
    text: str | None = None
    image_url: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _needs_payload(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs 'text'")
        if self.type == "image_url" and not (self.image_url and isinstance(self.image_url.get("url"), str)):
            raise ValueError("an image_url part needs 'image_url.url'")
        return self


class ChatMessage(Open):
    role: MessageRole
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @model_validator(mode="after")
    def _content_rules(self) -> ChatMessage:
        if self.content is None and self.role not in ("assistant",):
            raise ValueError(f"'content' is required for role '{self.role}'")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs 'tool_call_id'")
        return self

    def text(self) -> str:
        """The message's text, parts joined; non-text parts are the caller's concern."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class ResponseFormat(Open):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_needed(self) -> ResponseFormat:
        if self.type == "json_schema" and not (self.json_schema and isinstance(self.json_schema.get("schema"), dict)):
            raise ValueError("response_format of type 'json_schema' needs 'json_schema.schema'")
        return self


class StreamOptions(Open):
    include_usage: bool = False


def check_stop(v: str | list[str] | None) -> str | list[str] | None:
    """OpenAI's rule for `stop`, shared by chat and completions."""
    if isinstance(v, list):
        if len(v) > 4:
            raise ValueError("at most 4 stop sequences are allowed")
        if any(not s for s in v):
            raise ValueError("stop sequences must not be empty")
    return v


class GenerationOptions:
    """What chat and completions requests share beyond their fields: stop sequences and stream usage."""

    stop: str | list[str] | None
    stream_options: StreamOptions | None

    @property
    def stop_list(self) -> list[str]:
        if self.stop is None:
            return []
        return [self.stop] if isinstance(self.stop, str) else list(self.stop)

    @property
    def wants_usage_in_stream(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatRequest(GenerationOptions, Open):
    """POST /v1/chat/completions, as OpenAI defines it."""

    # the client's body as it arrived: pass-through upstreams forward it rather than re-serializing the model
    _raw: bytes | None = PrivateAttr(default=None)

    model: str = Field(min_length=1)
    messages: list[ChatMessage] = Field(min_length=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=16)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    response_format: ResponseFormat | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stop_rules(cls, v: str | list[str] | None) -> str | list[str] | None:
        return check_stop(v)

    @model_validator(mode="after")
    def _cross_field(self) -> ChatRequest:
        if self.stream_options is not None and not self.stream:
            raise ValueError("'stream_options' is only allowed when 'stream' is true")
        if isinstance(self.tool_choice, dict):
            name = (self.tool_choice.get("function") or {}).get("name")
            if not name:
                raise ValueError("'tool_choice' object needs 'function.name'")
            if not self.tools or name not in {t.function.name for t in self.tools}:
                raise ValueError(f"'tool_choice' names function '{name}' that is not in 'tools'")
        return self


    @property
    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens
