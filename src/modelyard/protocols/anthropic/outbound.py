"""Outbound Anthropic: we call an Anthropic upstream. Our chat request becomes a Messages request; its reply and stream
events become chat."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidRequest
from ..openai.schema import ChatRequest
from ..openai import wire as oa
from ..openai.chat_parts import json_instruction, parse_arguments, split_data_url, tool_call
from .schema import FINISH_OF_STOP

API_VERSION = "2023-06-01"


def _image_block(url: str, param: str) -> dict[str, Any]:
    if url.startswith("data:"):
        mime, data = split_data_url(url, param)
        return {"type": "image", "source": {"type": "base64", "media_type": mime, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": url}}


def _content(message: Any, i: int) -> list[dict[str, Any]]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"type": "text", "text": message.content}] if message.content else []
    blocks = []
    for j, part in enumerate(message.content):
        if part.type == "text":
            blocks.append({"type": "text", "text": part.text or ""})
        elif part.type == "image_url":
            blocks.append(_image_block(part.image_url["url"], f"messages[{i}].content[{j}]"))
        else:
            raise InvalidRequest(f"Anthropic models do not take '{part.type}' parts.", param=f"messages[{i}].content[{j}]")
    return blocks


def to_messages_request(req: ChatRequest, upstream_model: str, *, default_max_tokens: int) -> dict[str, Any]:
    if req.n and req.n > 1:
        raise InvalidRequest("Anthropic models return one choice; 'n' must be 1.", param="n")
    system: list[str] = []
    messages: list[dict[str, Any]] = []

    def add(role: str, blocks: list[dict[str, Any]]) -> None:
        if messages and messages[-1]["role"] == role:  # Anthropic wants user/assistant turns to alternate
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})

    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            system.append(m.text())
        elif m.role == "user":
            add("user", _content(m, i))
        elif m.role == "assistant":
            blocks = _content(m, i)
            for k, call in enumerate(m.tool_calls or []):
                blocks.append({"type": "tool_use", "id": call.id, "name": call.function.name,
                               "input": parse_arguments(call.function.arguments, f"messages[{i}].tool_calls[{k}]")})
            add("assistant", blocks)
        else:  # tool / function results come back as the user's turn
            add("user", [{"type": "tool_result", "tool_use_id": m.tool_call_id or m.name or "", "content": m.text()}])
    extra = json_instruction(req.response_format)
    if extra:
        system.append(extra)
    body: dict[str, Any] = {"model": upstream_model, "messages": messages,
                            "max_tokens": req.token_limit or default_max_tokens}
    if system:
        body["system"] = "\n\n".join(s for s in system if s)
    if req.temperature is not None:
        body["temperature"] = min(req.temperature, 1.0)  # Anthropic's range is 0..1
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.stop_list:
        body["stop_sequences"] = req.stop_list
    if req.tools:
        body["tools"] = [{"name": t.function.name, "description": t.function.description or "",
                          "input_schema": t.function.parameters or {"type": "object", "properties": {}}}
                         for t in req.tools]
        choice = req.tool_choice
        if isinstance(choice, dict):
            body["tool_choice"] = {"type": "tool", "name": choice["function"]["name"]}
        elif choice == "required":
            body["tool_choice"] = {"type": "any"}
        elif choice == "none":
            body["tool_choice"] = {"type": "none"}
        if req.parallel_tool_calls is False:
            body.setdefault("tool_choice", {"type": "auto"})["disable_parallel_tool_use"] = True
    if req.user:
        body["metadata"] = {"user_id": req.user}
    if req.stream:
        body["stream"] = True
    return body


def from_messages_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    text = "".join(b.get("text", "") for b in data.get("content", []) if b.get("type") == "text")
    calls = [tool_call(b["id"], b["name"], b.get("input", {})) for b in data.get("content", []) if b.get("type") == "tool_use"]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else ""), "refusal": None}
    if calls:
        message["tool_calls"] = calls
    usage = data.get("usage", {})
    choice = {"index": 0, "message": message, "logprobs": None,
              "finish_reason": FINISH_OF_STOP.get(data.get("stop_reason") or "end_turn", "stop")}
    if data.get("stop_reason") == "stop_sequence" and isinstance(data.get("stop_sequence"), str):
        choice["stop_reason"] = data["stop_sequence"]  # vLLM's field: which stop sequence ended the answer
    return oa.chat_completion(
        id="chatcmpl-" + str(data.get("id", oa.new_id("msg"))), model=model,
        choices=[choice],
        usage=oa.usage(int(usage.get("input_tokens", 0)) + int(usage.get("cache_read_input_tokens") or 0),
                       int(usage.get("output_tokens", 0))))


@dataclass
class StreamState:
    """Turns Anthropic stream events into OpenAI chunks, one event at a time."""

    model: str
    include_usage: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))
    input_tokens: int = 0
    output_tokens: int = 0
    tool_index: dict[int, int] = field(default_factory=dict)  # Anthropic block index -> OpenAI tool_calls index

    def chunk(self, **kw: Any) -> dict[str, Any]:
        return oa.chat_chunk(id=self.id, model=self.model, created=self.created, **kw)

    def feed(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "message_start":
            msg = event.get("message", {})
            self.id = "chatcmpl-" + str(msg.get("id", ""))
            self.input_tokens = int(msg.get("usage", {}).get("input_tokens", 0))
            return [self.chunk(delta={"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            block = event.get("content_block", {})
            if block.get("type") == "tool_use":
                k = self.tool_index.setdefault(event.get("index", 0), len(self.tool_index))
                return [self.chunk(delta={"tool_calls": [{"index": k, "id": block.get("id"), "type": "function",
                                                          "function": {"name": block.get("name"), "arguments": ""}}]})]
            if block.get("text"):
                return [self.chunk(delta={"content": block["text"]})]
            return []
        if kind == "content_block_delta":
            delta = event.get("delta", {})
            if delta.get("type") == "text_delta":
                return [self.chunk(delta={"content": delta.get("text", "")})]
            if delta.get("type") == "input_json_delta":
                k = self.tool_index.get(event.get("index", 0), 0)
                return [self.chunk(delta={"tool_calls": [{"index": k, "function": {"arguments": delta.get("partial_json", "")}}]})]
            return []
        if kind == "message_delta":
            self.output_tokens = int(event.get("usage", {}).get("output_tokens", self.output_tokens))
            delta = event.get("delta") or {}
            reason = delta.get("stop_reason")
            out = [self.chunk(finish_reason=FINISH_OF_STOP.get(reason or "end_turn", "stop"))]
            if reason == "stop_sequence" and isinstance(delta.get("stop_sequence"), str):
                out[0]["choices"][0]["stop_reason"] = delta["stop_sequence"]  # vLLM's field, as in a whole answer
            if self.include_usage:
                out.append(self.chunk(choices=False, usage=oa.usage(self.input_tokens, self.output_tokens)))
            return out
        return []  # ping, content_block_stop, message_stop


def error_message(event: dict[str, Any]) -> str:
    err = event.get("error") or {}
    return str(err.get("message") or json.dumps(err))
