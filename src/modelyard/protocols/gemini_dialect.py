"""Gemini generateContent as a client dialect: Gemini request -> internal chat request; chat reply/chunks -> Gemini."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

from ..errors import InvalidRequest, ModelyardError
from .openai.schema import ChatRequest
from .openai.chat_parts import chunk_dict, data_url, loads_object, usage_numbers, validate_chat

FINISH_REASON = {"stop": "STOP", "length": "MAX_TOKENS", "tool_calls": "STOP", "function_call": "STOP",
                 "content_filter": "SAFETY"}
# our chat request's fields, as a Gemini client names them (for errors only the converted request reveals)
CHAT_FIELDS = {"stop": "generationConfig.stopSequences", "max_tokens": "generationConfig.maxOutputTokens",
               "n": "generationConfig.candidateCount", "temperature": "generationConfig.temperature",
               "top_p": "generationConfig.topP", "response_format": "generationConfig", "tools": "tools",
               "tool_choice": "toolConfig"}
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


def _text_response(response: dict[str, Any]) -> str:
    """What a function returned, as the tool message's text: a lone string value as itself, else JSON."""
    if len(response) == 1:
        (value,) = response.values()
        if isinstance(value, str):
            return value
    return json.dumps(response, separators=(",", ":"))


def _contents(contents: list[Content], base: str) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    open_calls: list[tuple[str, str]] = []  # (name, id) of calls not yet answered, oldest first
    count = 0
    for i, c in enumerate(contents):
        if c.role == "model":
            texts, calls = [], []
            for p in c.parts:
                if p.thought:
                    continue
                if p.text is not None:
                    texts.append(p.text)
                elif p.function_call is not None:
                    count += 1
                    cid = p.function_call.id or f"call_{count}"
                    open_calls.append((p.function_call.name, cid))
                    calls.append({"id": cid, "type": "function", "function": {
                        "name": p.function_call.name, "arguments": json.dumps(p.function_call.args, separators=(",", ":"))}})
                else:
                    raise InvalidRequest("Model turns carry text and function calls only.", param=f"{base}[{i}].parts")
            message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts or not calls else None}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
            continue
        pending: list[dict[str, Any]] = []
        for j, p in enumerate(c.parts):
            param = f"{base}[{i}].parts[{j}]"
            if p.function_response is not None:
                fr = p.function_response
                match = next((k for k, (name, cid) in enumerate(open_calls)
                              if (fr.id and cid == fr.id) or (not fr.id and name == fr.name)), None)
                if match is None:
                    raise InvalidRequest(f"functionResponse '{fr.name}' answers no earlier functionCall.", param=param)
                _, cid = open_calls.pop(match)
                messages.append({"role": "tool", "tool_call_id": cid, "content": _text_response(fr.response)})
            elif p.text is not None:
                if not p.thought:
                    pending.append({"type": "text", "text": p.text})
            elif p.inline_data is not None:
                if not p.inline_data.mime_type.startswith("image/"):
                    raise InvalidRequest(f"Only image data is accepted here, not '{p.inline_data.mime_type}'.",
                                         param=param + ".inlineData.mimeType")
                pending.append({"type": "image_url", "image_url": {"url": data_url(p.inline_data.mime_type,
                                                                                    p.inline_data.data)}})
            elif p.file_data is not None:
                if p.file_data.mime_type and not p.file_data.mime_type.startswith("image/"):
                    raise InvalidRequest(f"Only image files are accepted here, not '{p.file_data.mime_type}'.",
                                         param=param + ".fileData.mimeType")
                pending.append({"type": "image_url", "image_url": {"url": p.file_data.file_uri}})
            else:
                raise InvalidRequest("Function calls belong in model turns.", param=param)
        if pending:
            messages.append({"role": "user", "content": pending})
    return messages


def _tools(req: GenerateContentRequest) -> dict[str, Any]:
    decls = [d for t in req.tools or [] for d in t.function_declarations or []]
    body: dict[str, Any] = {}
    if decls:
        body["tools"] = [{"type": "function", "function": {
            "name": d.name, **({"description": d.description} if d.description else {}),
            "parameters": d.parameters_json_schema or schema_to_json_schema(d.parameters or {"type": "object",
                                                                                              "properties": {}})}}
            for d in decls]
    cfg = req.tool_config.function_calling_config if req.tool_config else None
    if cfg is not None and decls:
        names = {d.name for d in decls}
        allowed = cfg.allowed_function_names or []
        for k, name in enumerate(allowed):
            if name not in names:
                raise InvalidRequest(f"'{name}' is not a declared function.",
                                     param=f"toolConfig.functionCallingConfig.allowedFunctionNames[{k}]")
        if cfg.mode == "NONE":
            body["tool_choice"] = "none"
        elif cfg.mode == "ANY":
            body["tool_choice"] = ({"type": "function", "function": {"name": allowed[0]}} if len(allowed) == 1
                                   else "required")
    return body


def _generation(cfg: GenerationConfig | None) -> dict[str, Any]:
    if cfg is None:
        return {}
    body: dict[str, Any] = {}
    for ours, value in (("temperature", cfg.temperature), ("top_p", cfg.top_p), ("seed", cfg.seed),
                        ("max_tokens", cfg.max_output_tokens), ("n", cfg.candidate_count),
                        ("presence_penalty", cfg.presence_penalty), ("frequency_penalty", cfg.frequency_penalty)):
        if value is not None:
            body[ours] = value
    if cfg.stop_sequences:
        body["stop"] = cfg.stop_sequences
    schema = cfg.response_json_schema or (schema_to_json_schema(cfg.response_schema) if cfg.response_schema else None)
    if cfg.response_mime_type == "application/json" or schema:
        body["response_format"] = ({"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
                                   if schema else {"type": "json_object"})
    elif cfg.response_mime_type not in (None, "text/plain"):
        raise InvalidRequest(f"responseMimeType '{cfg.response_mime_type}' is not supported; use text/plain or "
                             "application/json.", param="generationConfig.responseMimeType")
    return body


def generate_to_chat(req: GenerateContentRequest, model: str, *, stream: bool = False) -> dict[str, Any]:
    """The internal (OpenAI-shaped) chat request body for a generateContent request."""
    messages: list[dict[str, Any]] = []
    if req.system_instruction is not None:
        system = "\n".join(p.text for p in req.system_instruction.parts if p.text)
        if system:
            messages.append({"role": "system", "content": system})
    messages += _contents(req.contents, "contents")
    body: dict[str, Any] = {"model": model, "messages": messages, **_generation(req.generation_config), **_tools(req)}
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}  # the last chunk carries usageMetadata
    return body


def to_chat_request(req: GenerateContentRequest, model: str, *, stream: bool = False) -> ChatRequest:
    return validate_chat(generate_to_chat(req, model, stream=stream), CHAT_FIELDS, "contents")


def embed_texts(req: EmbedContentRequest, param: str) -> str:
    """The text of one embed request's content; `param` names that content for errors."""
    texts = []
    for j, p in enumerate(req.content.parts):
        if p.text is None:
            raise InvalidRequest("Embedding takes text parts only.", param=f"{param}.parts[{j}]")
        texts.append(p.text)
    text = "\n".join(texts)
    if not text.strip():
        raise InvalidRequest("There is no text to embed.", param=f"{param}.parts")
    return text


# ---------------------------------------------------------------- internal reply -> Gemini

def new_response_id() -> str:
    return secrets.token_urlsafe(16)


def usage_metadata(prompt: int, completion: int) -> dict[str, int]:
    return {"promptTokenCount": prompt, "candidatesTokenCount": completion, "totalTokenCount": prompt + completion}


def _call_parts(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts = []
    for call in calls:
        fn = call.get("function") or {}
        part: dict[str, Any] = {"name": fn.get("name", ""), "args": loads_object(fn.get("arguments") or "")}
        if call.get("id"):
            part["id"] = call["id"]
        parts.append({"functionCall": part})
    return parts


def from_chat_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    candidates = []
    for i, choice in enumerate(data.get("choices") or []):
        message = choice.get("message") or {}
        parts: list[dict[str, Any]] = []
        if message.get("content") or not message.get("tool_calls"):
            parts.append({"text": message.get("content") or ""})
        parts += _call_parts(message.get("tool_calls") or [])
        candidates.append({"content": {"role": "model", "parts": parts},
                           "finishReason": FINISH_REASON.get(choice.get("finish_reason") or "stop", "OTHER"),
                           "index": choice.get("index", i)})
    return {"candidates": candidates, "usageMetadata": usage_metadata(*usage_numbers(data.get("usage"))),
            "modelVersion": model, "responseId": new_response_id()}


@dataclass
class StreamEncoder:
    """Turns internal chat chunks into partial GenerateContentResponses.

    Text goes out as it comes. A function call is only sent whole (Gemini has no partial-arguments form), so its
    pieces are gathered until the candidate finishes; finish reasons wait for the usage that follows them, so
    the last response carries finishReason and usageMetadata together, as Gemini's does.
    """

    model: str
    id: str = field(default_factory=new_response_id)
    calls: dict[int, dict[int, dict[str, Any]]] = field(default_factory=dict)  # candidate -> tool index -> call
    finished: dict[int, str] = field(default_factory=dict)
    usage: tuple[int, int] | None = None

    def _response(self, candidates: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {"candidates": candidates, **extra, "modelVersion": self.model, "responseId": self.id}

    def feed(self, chunk: Any) -> list[dict[str, Any]]:
        data = chunk_dict(chunk)
        if data.get("usage"):
            self.usage = usage_numbers(data["usage"])
        out = []
        for choice in data.get("choices") or []:
            index = choice.get("index", 0)
            delta = choice.get("delta") or {}
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(index, {}).setdefault(call.get("index", 0), {
                    "id": None, "function": {"name": "", "arguments": ""}})
                fn = call.get("function") or {}
                slot["id"] = call.get("id") or slot["id"]
                slot["function"]["name"] += fn.get("name") or ""
                slot["function"]["arguments"] += fn.get("arguments") or ""
            if delta.get("content"):
                out.append(self._response([{"content": {"role": "model", "parts": [{"text": delta["content"]}]},
                                            "index": index}]))
            if choice.get("finish_reason"):
                self.finished[index] = FINISH_REASON.get(choice["finish_reason"], "OTHER")
        return out

    def finish(self) -> list[dict[str, Any]]:
        candidates = []
        for index in sorted(set(self.finished) | set(self.calls)):
            calls = [self.calls.get(index, {})[k] for k in sorted(self.calls.get(index, {}))]
            parts = _call_parts(calls) if calls else [{"text": ""}]
            candidates.append({"content": {"role": "model", "parts": parts},
                               "finishReason": self.finished.get(index, "STOP"), "index": index})
        return [self._response(candidates, usageMetadata=usage_metadata(*(self.usage or (0, 0))))]


def error_body(exc: ModelyardError) -> dict[str, Any]:
    error: dict[str, Any] = {"code": exc.status, "message": exc.message,
                             "status": STATUS.get(exc.status, "INTERNAL" if exc.status >= 500 else "INVALID_ARGUMENT")}
    if exc.param:
        error["details"] = [{"@type": "type.googleapis.com/google.rpc.BadRequest",
                             "fieldViolations": [{"field": exc.param, "description": exc.message}]}]
    return {"error": error}
