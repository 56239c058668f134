"""OpenAI Responses wire format: requests as chat requests, chat results and streams as responses and events.

Every backend serves Responses through chat: input items become chat messages (function calls and their outputs
become assistant tool calls and tool messages), and the chat result or stream becomes output items and the
event sequence the official SDK's stream accumulator expects. Pure: no I/O here.
"""

from __future__ import annotations

import copy
import time
from typing import Any, Callable

from pydantic import ValidationError

from ...errors import InvalidRequest, ModelyardError
from .schema import ChatRequest
from .responses import WEB_SEARCH_TYPES, InputItem, ResponsesRequest
from .wire import describe_validation_error, new_id

SEARCH_PREAMBLE = ("Web search results for \"{query}\" (retrieved just now). Use them to answer, and cite the "
                   "URLs you rely on.")


def item_id(prefix: str) -> str:
    return new_id(prefix).replace("-", "_")


# ---------------------------------------------------------------- request checks that need more than one field

def validate(req: ResponsesRequest) -> None:
    """400s naming the field, for rules pydantic cannot place on one field."""
    if req.input is None and req.previous_response_id is None:
        raise InvalidRequest("Invalid value for 'input': is required.", param="input")
    if isinstance(req.input, list) and not req.input:
        raise InvalidRequest("Invalid value for 'input': must not be empty.", param="input")
    if req.background:
        raise InvalidRequest("'background' responses are not supported; use 'async': true (without hosted tools).",
                             param="background", code="unsupported_parameter")
    if req.async_ and req.hosted_tools:
        raise InvalidRequest("'async': true is not supported when hosted tools (web_search) are present.",
                             param="async", code="unsupported_parameter")
    if isinstance(req.tool_choice, dict):
        kind = req.tool_choice.get("type")
        if not isinstance(kind, str):  # a list here is unhashable below: a 400, not a TypeError
            raise InvalidRequest("'tool_choice.type' must be a string: 'function' or 'web_search'.",
                                 param="tool_choice.type")
        if kind == "function":
            function = req.tool_choice.get("function")
            if function is not None and not isinstance(function, dict):
                raise InvalidRequest("'tool_choice.function' must be an object with a 'name'.",
                                     param="tool_choice.function")
            name = req.tool_choice.get("name") or (function or {}).get("name")
            if not isinstance(name, str):
                raise InvalidRequest("'tool_choice' must name a function: 'name' is a string.", param="tool_choice")
            if not name or name not in {t.name for t in req.function_tools}:
                raise InvalidRequest(f"'tool_choice' names function '{name}', which is not in 'tools'.",
                                     param="tool_choice")
        elif kind in WEB_SEARCH_TYPES:
            if not req.hosted_tools:
                raise InvalidRequest("'tool_choice' asks for web_search, which is not in 'tools'.", param="tool_choice")
        else:
            raise InvalidRequest("'tool_choice' object must have type 'function' or 'web_search'.",
                                 param="tool_choice.type")


def wants_search(req: ResponsesRequest) -> bool:
    """The hosted search runs once per turn, before the model answers, unless tool_choice rules it out."""
    if not req.hosted_tools or req.tool_choice == "none":
        return False
    return not (isinstance(req.tool_choice, dict) and req.tool_choice.get("type") == "function")


def search_query(req: ResponsesRequest) -> str | None:
    """The latest user text of this turn; a turn that only returns function outputs searches nothing."""
    for item in reversed(req.input_items):
        if item.type == "message" and item.role == "user" and item.text().strip():
            return item.text().strip()
    return None


# ---------------------------------------------------------------- input items -> chat messages

def _content(item: InputItem, i: int) -> str | list[dict[str, Any]]:
    if isinstance(item.content, str):
        return item.content
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(item.content or []):
        if part.type == "input_image":
            if item.role == "assistant":
                raise InvalidRequest("Assistant messages cannot hold images.", param=f"input[{i}].content[{j}]")
            detail = (part.model_extra or {}).get("detail")
            image = {"url": part.image_url, **({"detail": detail} if detail in ("low", "high", "auto") else {})}
            parts.append({"type": "image_url", "image_url": image})
        elif part.type == "input_file":
            raise InvalidRequest("'input_file' parts are not supported.", param=f"input[{i}].content[{j}]",
                                 code="unsupported_content")
        else:
            parts.append({"type": "text", "text": part.text if part.text is not None else part.refusal or ""})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def messages_from_items(items: list[InputItem], known_calls: set[str]) -> list[dict[str, Any]]:
    """Chat messages for input items. `known_calls` holds call ids from earlier turns (and grows with these)."""
    out: list[dict[str, Any]] = []
    for i, item in enumerate(items):
        if item.type == "message":
            out.append({"role": item.role, "content": _content(item, i)})
        elif item.type == "function_call":
            call = {"id": item.call_id, "type": "function", "function": {"name": item.name, "arguments": item.arguments}}
            known_calls.add(item.call_id or "")
            last = out[-1] if out else None
            if last is not None and last["role"] == "assistant" and not isinstance(last["content"], list):
                # text then calls, or parallel calls, are one assistant turn in chat
                last.setdefault("tool_calls", []).append(call)
            else:
                out.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif item.type == "function_call_output":
            if item.call_id not in known_calls:
                raise InvalidRequest(f"No function call found for function_call_output with call_id '{item.call_id}'.",
                                     param=f"input[{i}].call_id")
            out.append({"role": "tool", "tool_call_id": item.call_id, "content": item.text()})
        # web_search_call items are a record of an earlier turn's search; its results are not replayed
    return out


def input_listing(items: list[InputItem]) -> list[dict[str, Any]]:
    """This turn's input items as GET .../input_items lists them: each with an id and a status, text as parts."""
    out: list[dict[str, Any]] = []
    for item in items:
        data = item.model_dump(mode="json", exclude_none=True, exclude={"status"})
        if item.type == "message":
            if isinstance(item.content, str):
                part = "output_text" if item.role == "assistant" else "input_text"
                data["content"] = [{"type": part, "text": item.content}]
            data.setdefault("id", item_id("msg"))
        else:
            data.setdefault("id", item_id("fc" if item.type == "function_call" else "fco"))
        out.append({**data, "type": item.type, "status": "completed"})
    return out


def list_page(items: list[dict[str, Any]], *, limit: int, order: str, after: str | None) -> dict[str, Any]:
    """A cursor page, as OpenAI lists input items (newest first unless order=asc)."""
    ordered = list(reversed(items)) if order == "desc" else list(items)
    if after is not None:
        ids = [i["id"] for i in ordered]
        if after not in ids:
            raise InvalidRequest(f"No input item with id '{after}' in this response.", param="after")
        ordered = ordered[ids.index(after) + 1:]
    page = ordered[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(ordered) > limit}


def calls_in(history: list[dict[str, Any]]) -> set[str]:
    return {c["id"] for m in history for c in m.get("tool_calls") or []}


def search_context(query: str, hits: list[dict[str, str]]) -> str:
    lines = [SEARCH_PREAMBLE.format(query=query)]
    if not hits:
        lines.append("(no results)")
    for k, hit in enumerate(hits, 1):
        lines.append(f"[{k}] {hit.get('title') or hit['url']}\n{hit['url']}\n{hit.get('content') or ''}".rstrip())
    return "\n\n".join(lines)


def chat_request(req: ResponsesRequest, turn: list[dict[str, Any]], *, search: str | None = None) -> ChatRequest:
    """The chat request for one turn: instructions (and search results) as the system message, then `turn`
    (the stored conversation so far plus this input, as chat messages)."""
    system = "\n\n".join(s for s in (req.instructions, search) if s)
    messages = ([{"role": "system", "content": system}] if system else []) + turn
    body: dict[str, Any] = {"model": req.model, "messages": messages, "stream": req.stream}
    if req.stream:
        body["stream_options"] = {"include_usage": True}
    for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("max_output_tokens", "max_tokens"),
                         ("parallel_tool_calls", "parallel_tool_calls"), ("user", "user")):
        value = getattr(req, ours)
        if value is not None:
            body[theirs] = value
    functions = req.function_tools
    if functions:
        body["tools"] = [{"type": "function", "function": {k: v for k, v in {
            "name": t.name, "description": t.description, "parameters": t.parameters, "strict": t.strict}.items()
            if v is not None}} for t in functions]
        if req.tool_choice in ("none", "auto", "required"):
            body["tool_choice"] = req.tool_choice
        elif isinstance(req.tool_choice, dict) and req.tool_choice.get("type") == "function":
            name = req.tool_choice.get("name") or req.tool_choice["function"]["name"]
            body["tool_choice"] = {"type": "function", "function": {"name": name}}
    fmt = req.text.format if req.text else None
    if fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    elif fmt is not None and fmt.type == "json_schema":
        body["response_format"] = {"type": "json_schema", "json_schema": {
            "name": fmt.name or "response", "schema": fmt.schema_, **({"strict": fmt.strict} if fmt.strict else {})}}
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        message, _ = describe_validation_error(exc)
        raise InvalidRequest(f"The input cannot be served: {message}", param="input") from None


# ---------------------------------------------------------------- response objects

def skeleton(req: ResponsesRequest, *, id: str, model: str, created: int | None = None) -> dict[str, Any]:
    """The response as it stands before any output: what `response.created` carries."""
    fmt = req.text.format.model_dump(mode="json", by_alias=True, exclude_none=True) if req.text and req.text.format \
        else {"type": "text"}
    return {
        "id": id, "object": "response", "created_at": created or int(time.time()), "status": "in_progress",
        "background": False, "error": None, "incomplete_details": None, "instructions": req.instructions,
        "max_output_tokens": req.max_output_tokens, "model": model, "output": [],
        "parallel_tool_calls": req.parallel_tool_calls if req.parallel_tool_calls is not None else True,
        "previous_response_id": req.previous_response_id, "reasoning": {"effort": None, "summary": None},
        "store": req.store, "temperature": req.temperature if req.temperature is not None else 1.0,
        "text": {"format": fmt}, "tool_choice": req.tool_choice or "auto",
        "tools": [_tool_echo(t) for t in req.tools or []],
        "top_p": req.top_p if req.top_p is not None else 1.0, "truncation": req.truncation or "disabled",
        "usage": None, "user": req.user, "metadata": req.metadata or {},
    }


def _tool_echo(tool: Any) -> dict[str, Any]:
    """A tool as the response object lists it: function tools in the flat Responses shape, whichever was sent."""
    if tool.type != "function":
        return tool.model_dump(mode="json", exclude_none=True)
    return {"type": "function", "name": tool.name, "description": tool.description, "parameters": tool.parameters,
            "strict": tool.strict}


def web_search_item(query: str, hits: list[dict[str, str]], *, id: str | None = None) -> dict[str, Any]:
    return {"id": id or item_id("ws"), "type": "web_search_call", "status": "completed",
            "action": {"type": "search", "query": query,
                       "sources": [{"type": "url", "url": h["url"]} for h in hits]}}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    return {"input_tokens": prompt_tokens, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
            "output_tokens": completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": prompt_tokens + completion_tokens}


def chunk_from_chat(chat: dict[str, Any]) -> dict[str, Any]:
    """A whole chat completion as one stream chunk, so both paths build output the same way."""
    first = (chat.get("choices") or [{}])[0]
    message = first.get("message") or {}
    delta: dict[str, Any] = {"content": message.get("content")}
    if message.get("tool_calls"):
        delta["tool_calls"] = [{"index": k, **c} for k, c in enumerate(message["tool_calls"])]
    return {"choices": [{"index": 0, "delta": delta, "finish_reason": first.get("finish_reason")}],
            "usage": chat.get("usage")}


def history_from_output(output: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The assistant's turn, as the chat message a later turn (previous_response_id) replays."""
    text = "".join(p.get("text", "") for item in output if item["type"] == "message" for p in item["content"])
    calls = [{"id": item["call_id"], "type": "function", "function": {"name": item["name"],
                                                                      "arguments": item["arguments"]}}
             for item in output if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    elif not text:
        message["content"] = ""
    return [message]


def citations(text: str, sources: list[dict[str, str]]) -> list[dict[str, Any]]:
    """url_citation annotations for the search results an answer cites, by URL or by its [n] marker."""
    found: list[dict[str, Any]] = []
    for n, hit in enumerate(sources, 1):
        for needle in (hit["url"], f"[{n}]"):
            start = text.find(needle)
            while start >= 0:
                found.append({"type": "url_citation", "start_index": start, "end_index": start + len(needle),
                              "url": hit["url"], "title": hit.get("title") or hit["url"]})
                start = text.find(needle, start + len(needle))
    return sorted(found, key=lambda a: (a["start_index"], a["end_index"]))


def error_event(exc: ModelyardError, sequence_number: int) -> dict[str, Any]:
    return {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param,
            "sequence_number": sequence_number}


class ResponseBuilder:
    """Turns chat chunks into Responses output items and stream events; `finish()` gives the final response.

    Events carry increasing `sequence_number`s; items open with `output_item.added` and close with
    `output_item.done`, text through content parts, function calls through argument deltas.
    """

    def __init__(self, response: dict[str, Any], *, ids: Callable[[str], str] = item_id) -> None:
        self.response = response
        self.ids = ids  # item ids by prefix (msg, fc, call); golden tests pass a deterministic one
        self.seq = 0
        self._text: int | None = None  # output index of the open message item
        self._calls: dict[int, int] = {}  # chat tool-call index -> output index
        self._finish: str | None = None
        self._usage: dict[str, Any] | None = None
        self._sources: list[dict[str, str]] = []  # search hits the answer may cite

    @property
    def output(self) -> list[dict[str, Any]]:
        return self.response["output"]

    def _event(self, type_: str, **fields: Any) -> dict[str, Any]:
        event = {"type": type_, **fields, "sequence_number": self.seq}
        self.seq += 1
        return event

    def start(self) -> list[dict[str, Any]]:
        snapshot = copy.deepcopy(self.response)
        return [self._event("response.created", response=snapshot),
                self._event("response.in_progress", response=copy.deepcopy(snapshot))]

    def web_search(self, item: dict[str, Any], hits: list[dict[str, str]] | None = None) -> list[dict[str, Any]]:
        """A hosted search that already ran: its item and the in_progress / searching / completed events."""
        self._sources += hits or []
        index = len(self.output)
        self.output.append(item)
        ref = {"output_index": index, "item_id": item["id"]}
        return [self._event("response.output_item.added", output_index=index, item={**item, "status": "in_progress"}),
                self._event("response.web_search_call.in_progress", **ref),
                self._event("response.web_search_call.searching", **ref),
                self._event("response.web_search_call.completed", **ref),
                self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item))]

    def _open_text(self) -> list[dict[str, Any]]:
        index = len(self.output)
        item = {"id": self.ids("msg"), "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        self.output.append(item)
        self._text = index
        part = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
        item["content"].append(part)
        return [self._event("response.output_item.added", output_index=index, item={**item, "content": []}),
                self._event("response.content_part.added", item_id=item["id"], output_index=index, content_index=0,
                            part=dict(part))]

    def feed(self, chunk: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for c in chunk.get("choices") or []:
            if int(c.get("index", 0)) != 0:
                continue  # Responses have one answer
            delta = c.get("delta") or {}
            text = delta.get("content") or ""
            if text:
                if self._text is None:
                    events += self._open_text()
                item = self.output[self._text]  # type: ignore[index]
                item["content"][0]["text"] += text
                events.append(self._event("response.output_text.delta", item_id=item["id"], output_index=self._text,
                                          content_index=0, delta=text, logprobs=[]))
            for call in delta.get("tool_calls") or []:
                events += self._call_delta(call)
            if c.get("finish_reason"):
                self._finish = c["finish_reason"]
        return events

    def _call_delta(self, call: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        k = int(call.get("index", 0))
        fn = call.get("function") or {}
        if k not in self._calls:
            index = len(self.output)
            item = {"id": self.ids("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": call.get("id") or self.ids("call"), "name": fn.get("name") or "", "arguments": ""}
            self.output.append(item)
            self._calls[k] = index
            events.append(self._event("response.output_item.added", output_index=index, item=dict(item)))
        index = self._calls[k]
        item = self.output[index]
        if fn.get("name") and not item["name"]:
            item["name"] = fn["name"]
        if fn.get("arguments"):
            item["arguments"] += fn["arguments"]
            events.append(self._event("response.function_call_arguments.delta", item_id=item["id"],
                                      output_index=index, delta=fn["arguments"]))
        return events

    def finish(self) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Close every open item; the final event (completed or incomplete) and the final response."""
        events: list[dict[str, Any]] = []
        if not self.output or all(i["type"] == "web_search_call" for i in self.output):
            events += self._open_text()  # an empty answer is still a message, so output_text reads ""
        for index, item in enumerate(self.output):
            if item["status"] != "in_progress":
                continue
            item["status"] = "completed"
            if item["type"] == "message":
                part = item["content"][0]
                part["annotations"] = citations(part["text"], self._sources)
                events += [self._event("response.output_text.annotation.added", item_id=item["id"],
                                       output_index=index, content_index=0, annotation_index=k, annotation=a)
                           for k, a in enumerate(part["annotations"])]
                events += [self._event("response.output_text.done", item_id=item["id"], output_index=index,
                                       content_index=0, text=part["text"], logprobs=[]),
                           self._event("response.content_part.done", item_id=item["id"], output_index=index,
                                       content_index=0, part=dict(part))]
            else:
                events.append(self._event("response.function_call_arguments.done", item_id=item["id"],
                                          output_index=index, name=item["name"], arguments=item["arguments"]))
            events.append(self._event("response.output_item.done", output_index=index, item=copy.deepcopy(item)))
        u = self._usage or {}
        self.response["usage"] = usage(int(u.get("prompt_tokens") or 0), int(u.get("completion_tokens") or 0))
        if self._finish == "length":
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "max_output_tokens"}
        elif self._finish == "content_filter":
            self.response["status"] = "incomplete"
            self.response["incomplete_details"] = {"reason": "content_filter"}
        else:
            self.response["status"] = "completed"
        final = "response.completed" if self.response["status"] == "completed" else "response.incomplete"
        events.append(self._event(final, response=copy.deepcopy(self.response)))
        return events, self.response
