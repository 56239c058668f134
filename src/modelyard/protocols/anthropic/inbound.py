"""Inbound Anthropic: clients speak Messages to us. Their request becomes our chat request; our chat reply and chunks
become Messages and its stream events."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any


from ...errors import InvalidRequest
from ..openai.schema import ChatRequest
from ..openai.chat_parts import chunk_dict, loads_object, usage_numbers, validate_chat
from .schema import STOP_OF_FINISH, CountTokensRequest, ImageBlock, MessagesRequest, TextBlock, Tool, ToolChoice, ToolResultBlock, ToolUseBlock




# our chat request's fields, as a Messages client names them (for errors only the converted request reveals)
CHAT_FIELDS = {"stop": "stop_sequences", "max_tokens": "max_tokens", "tools": "tools", "tool_choice": "tool_choice",
               "temperature": "temperature", "top_p": "top_p"}


def _system_text(system: str | list[TextBlock] | None) -> str:
    if system is None:
        return ""
    return system if isinstance(system, str) else "\n\n".join(b.text for b in system)


def _image_part(block: ImageBlock, param: str) -> dict[str, Any]:
    try:
        return {"type": "image_url", "image_url": {"url": block.url()}}
    except ValueError as exc:
        raise InvalidRequest(str(exc), param=param) from None


def _tool_result(block: ToolResultBlock, param: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The tool message, and image parts that must ride along in a user turn (tool messages carry text)."""
    images: list[dict[str, Any]] = []
    if isinstance(block.content, list):
        texts = []
        for k, inner in enumerate(block.content):
            if isinstance(inner, TextBlock):
                texts.append(inner.text)
            else:
                images.append(_image_part(inner, f"{param}.content[{k}]"))
        text = "\n".join(texts)
    else:
        text = block.content or ""
    if block.is_error:
        text = "Error: " + text  # OpenAI-shaped tool messages have no error flag; the model still must know
    return {"role": "tool", "tool_call_id": block.tool_use_id, "content": text}, images


def _user_turn(blocks: list[Any], i: int) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if pending:
            out.append({"role": "user", "content": list(pending)})
            pending.clear()

    for j, block in enumerate(blocks):
        param = f"messages[{i}].content[{j}]"
        if isinstance(block, TextBlock):
            pending.append({"type": "text", "text": block.text})
        elif isinstance(block, ImageBlock):
            pending.append(_image_part(block, param))
        elif isinstance(block, ToolResultBlock):
            flush()  # results answer the previous turn's calls, so they come before anything else the user adds
            message, images = _tool_result(block, param)
            out.append(message)
            pending.extend(images)
        elif isinstance(block, ToolUseBlock):
            raise InvalidRequest("tool_use blocks belong in assistant messages.", param=param)
    flush()
    return out


def _assistant_turn(blocks: list[Any], i: int) -> dict[str, Any]:
    text = []
    calls = []
    for j, block in enumerate(blocks):
        if isinstance(block, TextBlock):
            text.append(block.text)
        elif isinstance(block, ToolUseBlock):
            calls.append({"id": block.id, "type": "function",
                          "function": {"name": block.name, "arguments": json.dumps(block.input, separators=(",", ":"))}})
        elif isinstance(block, (ImageBlock, ToolResultBlock)):
            raise InvalidRequest(f"{block.type} blocks belong in user messages.", param=f"messages[{i}].content[{j}]")
    message: dict[str, Any] = {"role": "assistant", "content": "".join(text) if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return message


def _tools(tools: list[Tool] | None, choice: ToolChoice | None) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for k, tool in enumerate(tools or []):
        if tool.input_schema.get("type", "object") != "object":
            raise InvalidRequest("A tool's input_schema must describe an object.", param=f"tools[{k}].input_schema")
    if tools:
        body["tools"] = [{"type": "function", "function": {
            "name": t.name, **({"description": t.description} if t.description else {}), "parameters": t.input_schema}}
            for t in tools]
    if choice is not None:
        if choice.type == "tool":
            if not choice.name or choice.name not in {t.name for t in tools or []}:
                raise InvalidRequest("tool_choice of type 'tool' must name one of 'tools'.", param="tool_choice.name")
            body["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        elif tools:
            body["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[choice.type]
        if choice.disable_parallel_tool_use and tools:
            body["parallel_tool_calls"] = False
    return body


def messages_to_chat(req: MessagesRequest | CountTokensRequest) -> dict[str, Any]:
    """The internal (OpenAI-shaped) chat request body for a Messages request; validate it with `to_chat_request`."""
    messages: list[dict[str, Any]] = []
    system = _system_text(req.system)
    if system:
        messages.append({"role": "system", "content": system})
    for i, m in enumerate(req.messages):
        if isinstance(m.content, str):
            messages.append({"role": m.role, "content": m.content})
        elif m.role == "user":
            messages.extend(_user_turn(m.content, i))
        else:
            messages.append(_assistant_turn(m.content, i))
    body: dict[str, Any] = {"model": req.model, "messages": messages, **_tools(req.tools, req.tool_choice)}
    if isinstance(req, MessagesRequest):
        body["max_tokens"] = req.max_tokens
        for name in ("temperature", "top_p"):
            if getattr(req, name) is not None:
                body[name] = getattr(req, name)
        if req.stop_sequences:
            body["stop"] = req.stop_sequences
        fmt = req.output_config.format if req.output_config else None
        if fmt is not None:
            body["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": fmt.schema_}}
        user = (req.metadata or {}).get("user_id")
        if isinstance(user, str) and user:
            body["user"] = user
        if req.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}  # message_delta must carry the output tokens
    return body


def to_chat_request(req: MessagesRequest | CountTokensRequest) -> ChatRequest:
    return validate_chat(messages_to_chat(req), CHAT_FIELDS, "messages")


# ---------------------------------------------------------------- internal reply -> Messages


def new_message_id() -> str:
    return "msg_" + secrets.token_hex(12)


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"input_tokens": prompt, "output_tokens": completion, "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0}


def _stop_sequence(choice: dict[str, Any]) -> str | None:
    """The stop sequence that ended a choice: backends that know it say so in vLLM's `stop_reason` field."""
    matched = choice.get("stop_reason")
    return matched if choice.get("finish_reason") == "stop" and isinstance(matched, str) else None


def from_chat_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if message.get("content"):
        content.append({"type": "text", "text": message["content"]})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                        "name": fn.get("name", ""), "input": loads_object(fn.get("arguments") or "")})
    reason = STOP_OF_FINISH.get(choice.get("finish_reason") or "stop", "end_turn")
    matched = _stop_sequence(choice)
    return {"id": new_message_id(), "type": "message", "role": "assistant", "model": model, "content": content,
            "stop_reason": "stop_sequence" if matched is not None else reason, "stop_sequence": matched,
            "usage": _usage(*usage_numbers(data.get("usage")))}


@dataclass
class StreamEncoder:
    """Turns internal chat chunks into Anthropic's event sequence, one chunk at a time.

    message_start, ping, then for each content block content_block_start / *_delta / content_block_stop, then
    message_delta (stop_reason, usage) and message_stop. `input_tokens` is what message_start reports (the route
    counts the prompt before the first byte); output tokens are only known at the end.
    """

    model: str
    input_tokens: int = 0
    id: str = field(default_factory=new_message_id)
    index: int = -1  # the open block's index; -1 before the first
    open_kind: str | None = None  # "text" | "tool_use" | None
    tool_block: dict[int, int] = field(default_factory=dict)  # OpenAI tool_calls index -> our block index
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    usage: tuple[int, int] | None = None

    def start(self) -> list[tuple[str, dict[str, Any]]]:
        message = {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
                   "stop_reason": None, "stop_sequence": None, "usage": _usage(self.input_tokens, 0)}
        return [("message_start", {"type": "message_start", "message": message}), ("ping", {"type": "ping"})]

    def _close_block(self) -> list[tuple[str, dict[str, Any]]]:
        if self.open_kind is None:
            return []
        self.open_kind = None
        return [("content_block_stop", {"type": "content_block_stop", "index": self.index})]

    def _open_block(self, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        out = self._close_block()
        self.index += 1
        self.open_kind = block["type"]
        out.append(("content_block_start", {"type": "content_block_start", "index": self.index, "content_block": block}))
        return out

    def feed(self, chunk: Any) -> list[tuple[str, dict[str, Any]]]:
        data = chunk_dict(chunk)
        if data.get("usage"):
            self.usage = usage_numbers(data["usage"])
        out: list[tuple[str, dict[str, Any]]] = []
        for choice in data.get("choices") or []:
            if choice.get("index", 0) != 0:
                continue  # Messages has one answer per request
            delta = choice.get("delta") or {}
            if delta.get("content"):
                if self.open_kind != "text":
                    out += self._open_block({"type": "text", "text": ""})
                out.append(("content_block_delta", {"type": "content_block_delta", "index": self.index,
                                                    "delta": {"type": "text_delta", "text": delta["content"]}}))
            for call in delta.get("tool_calls") or []:
                k = call.get("index", 0)
                fn = call.get("function") or {}
                if k not in self.tool_block:
                    out += self._open_block({"type": "tool_use", "id": call.get("id") or "toolu_" + secrets.token_hex(12),
                                             "name": fn.get("name", ""), "input": {}})
                    self.tool_block[k] = self.index
                if fn.get("arguments"):
                    out.append(("content_block_delta", {"type": "content_block_delta", "index": self.tool_block[k],
                                                        "delta": {"type": "input_json_delta",
                                                                  "partial_json": fn["arguments"]}}))
            if choice.get("finish_reason"):
                self.stop_sequence = _stop_sequence(choice)
                self.stop_reason = "stop_sequence" if self.stop_sequence is not None else \
                    STOP_OF_FINISH.get(choice["finish_reason"], "end_turn")
        return out

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        prompt, completion = self.usage or (self.input_tokens, 0)
        out = self._close_block()
        out.append(("message_delta", {"type": "message_delta",
                                      "delta": {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence},
                                      "usage": {"input_tokens": prompt, "output_tokens": completion}}))
        out.append(("message_stop", {"type": "message_stop"}))
        return out
