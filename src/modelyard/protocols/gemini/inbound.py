"""Inbound Gemini: clients speak generateContent to us. Their request becomes our chat request; our chat reply and
chunks become Gemini responses."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any


from ...errors import InvalidRequest
from ..openai.schema import ChatRequest
from ..openai.chat_parts import chunk_dict, data_url, loads_object, usage_numbers, validate_chat
from .schema import GEMINI_OF_FINISH, Content, EmbedContentRequest, GenerateContentRequest, GenerationConfig, schema_to_json_schema




# our chat request's fields, as a Gemini client names them (for errors only the converted request reveals)
CHAT_FIELDS = {"stop": "generationConfig.stopSequences", "max_tokens": "generationConfig.maxOutputTokens",
               "n": "generationConfig.candidateCount", "temperature": "generationConfig.temperature",
               "top_p": "generationConfig.topP", "response_format": "generationConfig", "tools": "tools",
               "tool_choice": "toolConfig"}


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
                           "finishReason": GEMINI_OF_FINISH.get(choice.get("finish_reason") or "stop", "OTHER"),
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
                self.finished[index] = GEMINI_OF_FINISH.get(choice["finish_reason"], "OTHER")
        return out

    def finish(self) -> list[dict[str, Any]]:
        candidates = []
        for index in sorted(set(self.finished) | set(self.calls)):
            calls = [self.calls.get(index, {})[k] for k in sorted(self.calls.get(index, {}))]
            parts = _call_parts(calls) if calls else [{"text": ""}]
            candidates.append({"content": {"role": "model", "parts": parts},
                               "finishReason": self.finished.get(index, "STOP"), "index": index})
        return [self._response(candidates, usageMetadata=usage_metadata(*(self.usage or (0, 0))))]
