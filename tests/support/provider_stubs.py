"""Local stand-ins for Anthropic's Messages API and Gemini's generateContent, with canned behaviour on command."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


@dataclass
class ProviderControl:
    mode: str = "ok"  # ok | ratelimit | overloaded | error500
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)


async def _record(request: Request) -> tuple[ProviderControl, dict[str, Any]]:
    """Keep what the gateway sent, for the tests to inspect."""
    control: ProviderControl = request.app.state.control
    body = await request.json()
    control.requests.append(body)
    control.headers.append(dict(request.headers))
    control.paths.append(request.url.path + ("?" + request.url.query if request.url.query else ""))
    return control, body


def _sse(events: list[tuple[str | None, dict[str, Any]]]):
    async def gen():
        for name, data in events:
            yield (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"
    return StreamingResponse(gen(), media_type="text/event-stream")


# ---------------------------------------------------------------- Anthropic

def _anthropic_reply(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    """(text, tool_use) the stub answers with."""
    last = body["messages"][-1]
    blocks = last["content"] if isinstance(last["content"], list) else [{"type": "text", "text": last["content"]}]
    text = " ".join(b.get("text", "") for b in blocks if b.get("type") == "text")
    if any(b.get("type") == "tool_result" for b in blocks):
        return "Tool said: " + "; ".join(str(b.get("content")) for b in blocks if b.get("type") == "tool_result"), None
    choice = body.get("tool_choice") or {}
    if body.get("tools") and (choice.get("type") in ("tool", "any") or "weather" in text.lower()):
        name = choice.get("name") or body["tools"][0]["name"]
        return None, {"type": "tool_use", "id": "toolu_01", "name": name, "input": {"city": "Paris"}}
    image = any(b.get("type") == "image" for b in blocks)
    return "Echo: " + text + (" [image]" if image else ""), None


def _anthropic_error(mode: str) -> Response | None:
    spec = {"ratelimit": (429, "rate_limit_error"), "overloaded": (529, "overloaded_error"), "error500": (500, "api_error")}
    if mode not in spec:
        return None
    status, kind = spec[mode]
    return JSONResponse({"type": "error", "error": {"type": kind, "message": f"stub {kind}"}}, status_code=status,
                        headers={"retry-after": "3"} if status == 429 else None)


async def anthropic_messages(request: Request) -> Response:
    control, body = await _record(request)
    failure = _anthropic_error(control.mode)
    if failure is not None:
        return failure
    text, tool = _anthropic_reply(body)
    usage = {"input_tokens": 11, "output_tokens": 3}
    # as Anthropic does: the text ends before the first stop sequence in it, and the answer names the sequence
    stop = min((s for s in body.get("stop_sequences") or [] if text and s in text), key=lambda s: text.index(s),
               default=None)
    if stop is not None:
        text = text[:text.index(stop)]
    reason = "tool_use" if tool else "stop_sequence" if stop is not None else "end_turn"
    if not body.get("stream"):
        content = [tool] if tool else [{"type": "text", "text": text}]
        return JSONResponse({"id": "msg_01", "type": "message", "role": "assistant", "model": body["model"],
                             "content": content, "stop_reason": reason, "stop_sequence": stop, "usage": usage})
    events: list[tuple[str | None, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": {"id": "msg_01", "type": "message", "role": "assistant",
                                                                "content": [], "model": body["model"],
                                                                "usage": {"input_tokens": 11, "output_tokens": 1}}}),
        ("ping", {"type": "ping"})]
    if tool:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {
            "type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}}))
        for piece in ('{"city"', ': "Par', 'is"}'):
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "input_json_delta", "partial_json": piece}}))
    else:
        events.append(("content_block_start", {"type": "content_block_start", "index": 0,
                                               "content_block": {"type": "text", "text": ""}}))
        for i, word in enumerate(text.split(" ")):  # type: ignore[union-attr]
            events.append(("content_block_delta", {"type": "content_block_delta", "index": 0,
                                                   "delta": {"type": "text_delta", "text": word if i == 0 else " " + word}}))
    events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
               ("message_delta", {"type": "message_delta", "delta": {"stop_reason": reason, "stop_sequence": stop},
                                  "usage": {"output_tokens": 3}}),
               ("message_stop", {"type": "message_stop"})]
    return _sse(events)


# ---------------------------------------------------------------- Gemini

def _gemini_reply(body: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
    parts = body["contents"][-1]["parts"]
    text = " ".join(p.get("text", "") for p in parts if "text" in p)
    responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
    if responses:
        return "Tool said: " + "; ".join(f"{r['name']}={r['response'].get('content')}" for r in responses), None
    cfg = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
    if body.get("tools") and (cfg.get("mode") == "ANY" or "weather" in text.lower()):
        names = cfg.get("allowedFunctionNames") or [body["tools"][0]["functionDeclarations"][0]["name"]]
        return None, {"functionCall": {"name": names[0], "args": {"city": "Paris"}}}
    image = any("inlineData" in p or "fileData" in p for p in parts)
    return "Echo: " + text + (" [image]" if image else ""), None


def _gemini_error(mode: str) -> Response | None:
    spec = {"ratelimit": (429, "RESOURCE_EXHAUSTED"), "overloaded": (503, "UNAVAILABLE"), "error500": (500, "INTERNAL")}
    if mode not in spec:
        return None
    status, kind = spec[mode]
    return JSONResponse({"error": {"code": status, "message": f"stub {kind}", "status": kind}}, status_code=status)


async def gemini_generate(request: Request) -> Response:
    control, body = await _record(request)
    failure = _gemini_error(control.mode)
    if failure is not None:
        return failure
    if request.path_params["method"] == "countTokens":  # a recognisable number: 40 + one per content
        return JSONResponse({"totalTokens": 40 + len(body["generateContentRequest"]["contents"])})
    text, call = _gemini_reply(body)
    usage = {"promptTokenCount": 9, "candidatesTokenCount": 4, "totalTokenCount": 13}
    if not request.path_params["method"].startswith("streamGenerateContent"):
        part = call or {"text": text}
        return JSONResponse({"candidates": [{"index": 0, "content": {"role": "model", "parts": [part]},
                                             "finishReason": "STOP"}], "usageMetadata": usage})
    if call:
        chunks = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [call]}, "finishReason": "STOP"}],
                   "usageMetadata": usage}]
    else:
        words = text.split(" ")  # type: ignore[union-attr]
        chunks = [{"candidates": [{"index": 0, "content": {"role": "model", "parts": [{"text": w if i == 0 else " " + w}]}}]}
                  for i, w in enumerate(words)]
        chunks[-1]["candidates"][0]["finishReason"] = "STOP"
        chunks[-1]["usageMetadata"] = usage
    return _sse([(None, c) for c in chunks])


async def anthropic_count_tokens(request: Request) -> Response:
    control, body = await _record(request)
    failure = _anthropic_error(control.mode)
    if failure is not None:
        return failure
    return JSONResponse({"input_tokens": 30 + len(body["messages"])})  # recognisable: 30 + one per message


def create_provider_stub(control: ProviderControl) -> Starlette:
    app = Starlette(routes=[
        Route("/v1/messages/count_tokens", anthropic_count_tokens, methods=["POST"]),
        Route("/v1/messages", anthropic_messages, methods=["POST"]),
        Route("/v1beta/models/{model}:{method}", gemini_generate, methods=["POST"]),
    ])
    app.state.control = control
    return app


def moderation_stub() -> Starlette:
    """An OpenAI-compatible moderation upstream: flags any text containing 'forbidden' as violence."""
    async def moderations(request: Request) -> JSONResponse:
        body = await request.json()
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        return JSONResponse({"id": "modr-1", "model": body.get("model"), "results": [
            {"flagged": "forbidden" in t, "categories": {"violence": "forbidden" in t, "hate": False}}
            for t in texts]})
    return Starlette(routes=[Route("/v1/moderations", moderations, methods=["POST"])])
