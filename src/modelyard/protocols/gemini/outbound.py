"""Outbound Gemini: we call a Gemini upstream. Our chat request becomes generateContent; its responses and stream chunks
become chat."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...errors import InvalidRequest
from ..openai.schema import ChatRequest
from ..openai import wire as oa
from ..openai.chat_parts import call_id, guess_mime, parse_arguments, split_data_url, tool_call
from .schema import FINISH_OF_GEMINI



def _parts(message: Any, i: int) -> list[dict[str, Any]]:
    if message.content is None:
        return []
    if isinstance(message.content, str):
        return [{"text": message.content}] if message.content else []
    parts = []
    for j, part in enumerate(message.content):
        if part.type == "text":
            parts.append({"text": part.text or ""})
        elif part.type == "image_url":
            url = part.image_url["url"]
            if url.startswith("data:"):
                mime, data = split_data_url(url, f"messages[{i}].content[{j}]")
                parts.append({"inlineData": {"mimeType": mime, "data": data}})
            else:
                parts.append({"fileData": {"mimeType": guess_mime(url), "fileUri": url}})
        else:
            raise InvalidRequest(f"Gemini models do not take '{part.type}' parts here.", param=f"messages[{i}].content[{j}]")
    return parts


def to_generate_request(req: ChatRequest) -> dict[str, Any]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call_id -> function name, for functionResponse parts

    def add(role: str, parts: list[dict[str, Any]]) -> None:
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        elif parts:
            contents.append({"role": role, "parts": parts})

    for i, m in enumerate(req.messages):
        if m.role in ("system", "developer"):
            system.append({"text": m.text()})
        elif m.role == "user":
            add("user", _parts(m, i))
        elif m.role == "assistant":
            parts = _parts(m, i)
            for k, call in enumerate(m.tool_calls or []):
                call_names[call.id] = call.function.name
                parts.append({"functionCall": {"name": call.function.name, "args": parse_arguments(
                    call.function.arguments, f"messages[{i}].tool_calls[{k}]")}})
            add("model", parts)
        else:
            name = call_names.get(m.tool_call_id or "", m.name or "")
            if not name:
                raise InvalidRequest("A tool message must answer a tool call made earlier in 'messages'.",
                                     param=f"messages[{i}].tool_call_id")
            add("user", [{"functionResponse": {"name": name, "response": {"content": m.text()}}}])
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    config: dict[str, Any] = {}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "topP"), ("seed", "seed"),
                         ("presence_penalty", "presencePenalty"), ("frequency_penalty", "frequencyPenalty")):
        value = getattr(req, ours)
        if value is not None:
            config[theirs] = value
    if req.token_limit:
        config["maxOutputTokens"] = req.token_limit
    if req.stop_list:
        config["stopSequences"] = req.stop_list
    if req.n and req.n > 1:
        config["candidateCount"] = req.n
    if req.response_format is not None and req.response_format.type != "text":
        config["responseMimeType"] = "application/json"
        if req.response_format.type == "json_schema":
            config["responseJsonSchema"] = req.response_format.json_schema["schema"]  # type: ignore[index]
    if config:
        body["generationConfig"] = config
    if req.tools:
        body["tools"] = [{"functionDeclarations": [
            {k: v for k, v in (("name", t.function.name), ("description", t.function.description),
                               ("parameters", t.function.parameters)) if v is not None} for t in req.tools]}]
        choice = req.tool_choice
        if isinstance(choice, dict):
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY",
                                                            "allowedFunctionNames": [choice["function"]["name"]]}}
        elif choice in ("required", "none"):
            body["toolConfig"] = {"functionCallingConfig": {"mode": "ANY" if choice == "required" else "NONE"}}
    return body


def _message(candidate: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    parts = (candidate.get("content") or {}).get("parts") or []
    text = "".join(p.get("text", "") for p in parts if "text" in p and not p.get("thought"))
    calls = [tool_call(call_id(), p["functionCall"].get("name", ""), p["functionCall"].get("args", {}))
             for p in parts if "functionCall" in p]
    return {"text": text}, calls


def _finish(candidate: dict[str, Any], has_calls: bool) -> str | None:
    reason = candidate.get("finishReason")
    if reason is None:
        return None
    return "tool_calls" if has_calls and reason == "STOP" else FINISH_OF_GEMINI.get(reason, "stop")


def _usage(data: dict[str, Any]) -> dict[str, int]:
    meta = data.get("usageMetadata") or {}
    prompt = int(meta.get("promptTokenCount", 0))
    total = int(meta.get("totalTokenCount", 0))
    completion = int(meta.get("candidatesTokenCount", max(total - prompt, 0)))
    return oa.usage(prompt, completion)


def from_generate_response(data: dict[str, Any], model: str) -> dict[str, Any]:
    choices = []
    for i, cand in enumerate(data.get("candidates") or []):
        msg, calls = _message(cand)
        message: dict[str, Any] = {"role": "assistant", "content": msg["text"] or (None if calls else ""), "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": cand.get("index", i), "message": message, "logprobs": None,
                        "finish_reason": _finish(cand, bool(calls)) or "stop"})
    if not choices:
        reason = (data.get("promptFeedback") or {}).get("blockReason", "no candidates")
        choices.append({"index": 0, "message": {"role": "assistant", "content": "", "refusal": str(reason)},
                        "logprobs": None, "finish_reason": "content_filter"})
    return oa.chat_completion(id=oa.new_id("chatcmpl"), model=model, choices=choices, usage=_usage(data))


@dataclass
class StreamState:
    """Turns Gemini stream responses (each a partial GenerateContentResponse) into OpenAI chunks."""

    model: str
    include_usage: bool
    id: str = field(default_factory=lambda: oa.new_id("chatcmpl"))
    created: int = field(default_factory=lambda: int(time.time()))
    started: set[int] = field(default_factory=set)
    tool_count: dict[int, int] = field(default_factory=dict)
    usage: dict[str, int] | None = None

    def chunk(self, **kw: Any) -> dict[str, Any]:
        return oa.chat_chunk(id=self.id, model=self.model, created=self.created, **kw)

    def feed(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for i, cand in enumerate(data.get("candidates") or []):
            index = cand.get("index", i)
            if index not in self.started:
                self.started.add(index)
                out.append(self.chunk(index=index, delta={"role": "assistant", "content": ""}))
            msg, calls = _message(cand)
            if msg["text"]:
                out.append(self.chunk(index=index, delta={"content": msg["text"]}))
            if calls:
                base = self.tool_count.get(index, 0)
                self.tool_count[index] = base + len(calls)
                out.append(self.chunk(index=index, delta={"tool_calls": [{"index": base + k, **c} for k, c in enumerate(calls)]}))
            finish = _finish(cand, bool(self.tool_count.get(index)))
            if finish:
                out.append(self.chunk(index=index, finish_reason=finish))
        if data.get("usageMetadata"):
            self.usage = _usage(data)
        return out

    def close(self) -> list[dict[str, Any]]:
        if self.include_usage and self.usage is not None:
            return [self.chunk(choices=False, usage=self.usage)]
        return []
