"""Gemini generateContent as it is on the wire: the request models (camelCase), Schema to JSON Schema, the error
envelope, and the one finish-reason table both directions read."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ...errors import ModelyardError


# Gemini's finish reasons and the OpenAI finish reasons they mean, in one table read both ways: converting either
# way takes the first pair that names the value (STOP -> stop; tool_calls -> STOP; content_filter -> SAFETY).
FINISH_REASONS = (("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"),
                  ("RECITATION", "content_filter"), ("BLOCKLIST", "content_filter"),
                  ("PROHIBITED_CONTENT", "content_filter"), ("SPII", "content_filter"), ("STOP", "tool_calls"),
                  ("STOP", "function_call"))
FINISH_OF_GEMINI = {g: o for g, o in reversed(FINISH_REASONS)}  # an upstream's finishReason, to a chat client
GEMINI_OF_FINISH = {o: g for g, o in reversed(FINISH_REASONS)}  # a chat finish_reason, to a Gemini client
STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 402: "FAILED_PRECONDITION", 403: "PERMISSION_DENIED",
          404: "NOT_FOUND", 405: "UNIMPLEMENTED", 409: "ABORTED", 413: "INVALID_ARGUMENT", 429: "RESOURCE_EXHAUSTED",
          499: "CANCELLED", 500: "INTERNAL", 501: "UNIMPLEMENTED", 502: "UNAVAILABLE", 503: "UNAVAILABLE",
          504: "DEADLINE_EXCEEDED"}


class _Camel(BaseModel):
    # Gemini's JSON is camelCase, but its REST surface also takes the proto's snake_case names; accept both.
    # Unknown fields (safetySettings, labels, thoughtSignature, ...) are accepted and ignored.
    model_config = ConfigDict(extra="allow", alias_generator=to_camel, populate_by_name=True)


class Blob(_Camel):
    mime_type: str = Field(min_length=1)
    data: str


class FileData(_Camel):
    mime_type: str | None = None
    file_uri: str = Field(min_length=1)


class FunctionCall(_Camel):
    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class FunctionResponse(_Camel):
    name: str = Field(min_length=1)
    response: dict[str, Any] = Field(default_factory=dict)
    id: str | None = None


class Part(_Camel):
    text: str | None = None
    inline_data: Blob | None = None
    file_data: FileData | None = None
    function_call: FunctionCall | None = None
    function_response: FunctionResponse | None = None
    thought: bool | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Part:
        kinds = [k for k in ("text", "inline_data", "file_data", "function_call", "function_response")
                 if getattr(self, k) is not None]
        if not kinds:
            extra = sorted(self.model_extra or {})
            raise ValueError(f"part kind {extra[0]!r} is not supported here" if extra else
                             "a part needs one of text, inlineData, fileData, functionCall, functionResponse")
        if len(kinds) > 1:
            raise ValueError(f"a part holds exactly one kind of data, not {', '.join(kinds)}")
        return self


class Content(_Camel):
    role: Literal["user", "model", "function", "tool"] | None = None
    parts: list[Part] = Field(min_length=1)


class FunctionDeclaration(_Camel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-:]*$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    parameters_json_schema: dict[str, Any] | None = None


class Tool(_Camel):
    function_declarations: list[FunctionDeclaration] | None = None

    @model_validator(mode="after")
    def _function_tools_only(self) -> Tool:
        hosted = sorted(self.model_extra or {})
        if hosted:  # googleSearch, codeExecution, urlContext: hosted tools this server does not run
            raise ValueError(f"tool {hosted[0]!r} is not available here; declare functions instead")
        return self


class FunctionCallingConfig(_Camel):
    mode: Literal["AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"] = "AUTO"
    allowed_function_names: list[str] | None = None


class ToolConfig(_Camel):
    function_calling_config: FunctionCallingConfig | None = None


class GenerationConfig(_Camel):
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    top_k: float | None = Field(default=None, ge=0)
    max_output_tokens: int | None = Field(default=None, ge=1)
    stop_sequences: list[str] | None = Field(default=None, max_length=4)
    candidate_count: int | None = Field(default=None, ge=1, le=8)
    seed: int | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    response_mime_type: str | None = None
    response_schema: dict[str, Any] | None = None
    response_json_schema: dict[str, Any] | None = None


class GenerateContentRequest(_Camel):
    """The body of models/{model}:generateContent (and :streamGenerateContent, :countTokens)."""

    contents: list[Content] = Field(min_length=1)
    system_instruction: Content | None = None
    generation_config: GenerationConfig | None = None
    tools: list[Tool] | None = None
    tool_config: ToolConfig | None = None
    model: str | None = None  # countTokens' generateContentRequest names the model again
    cached_content: str | None = None

    @field_validator("cached_content")
    @classmethod
    def _no_cache(cls, v: str | None) -> str | None:
        if v is not None:  # ignoring it would answer without the context the client cached
            raise ValueError("cached content is not available here; send the contents in full")
        return v


class CountTokensRequest(_Camel):
    contents: list[Content] | None = None
    generate_content_request: GenerateContentRequest | None = None

    @model_validator(mode="after")
    def _something(self) -> CountTokensRequest:
        if not self.contents and self.generate_content_request is None:
            raise ValueError("send 'contents' or 'generateContentRequest'")
        return self


class EmbedContentRequest(_Camel):
    content: Content
    model: str | None = None
    task_type: str | None = None
    title: str | None = None
    output_dimensionality: int | None = Field(default=None, ge=1)


class BatchEmbedContentsRequest(_Camel):
    requests: list[EmbedContentRequest] = Field(min_length=1, max_length=2048)


# ---------------------------------------------------------------- request -> internal chat request


def schema_to_json_schema(schema: Any) -> Any:
    """Gemini's OpenAPI-subset Schema (types in upper case, `nullable`, snake_case names) as plain JSON Schema."""
    if isinstance(schema, list):
        return [schema_to_json_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if "_" in key and not key.startswith(("$", "_")):
            key = to_camel(key)  # the proto's snake_case field names (max_length, any_of) as JSON Schema's
        if key == "type" and isinstance(value, str):
            out["type"] = value.lower()
        elif key == "nullable":
            continue
        elif key in ("properties", "$defs", "definitions") and isinstance(value, dict):
            out[key] = {k: schema_to_json_schema(v) for k, v in value.items()}
        elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
            out[key] = schema_to_json_schema(value)
        elif key == "propertyOrdering":
            continue
        else:
            out[key] = value
    if schema.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


def error_body(exc: ModelyardError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.status, "message": exc.message,
                             "status": STATUS.get(exc.status, "INTERNAL" if exc.status >= 500 else "INVALID_ARGUMENT")}
    if exc.param:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                             "fieldViolations": [{"field": exc.param, "description": exc.message}]}]
    return {"error": error}
