"""A small upstream that speaks OpenAI's chat protocol and can be told to be slow, fail, rate-limit or stream."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route


# a 1x1 PNG: what the stub's image endpoints answer with, for every image asked for
STUB_PNG_B64 = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg==")


@dataclass
class StubControl:
    """Tests flip these between calls."""

    mode: str = "ok"  # ok | error500 | overloaded | ratelimit | unauthorized | bad_request | garbage | midstream_error
    delay: float = 0.0  # seconds before answering
    chunk_delay: float = 0.0  # seconds between stream chunks
    reply: str = "Hello from the stub upstream"
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    chunk_sent_at: list[float] = field(default_factory=list)
    disconnects: int = 0  # requests whose client (the gateway) hung up before the stub finished
    no_completions: bool = False  # answer /v1/completions with 404, as OpenAI does for chat models
    paths: list[str] = field(default_factory=list)  # which endpoint each request went to
    tool_call: dict[str, Any] | None = None  # {"name", "arguments"}: call it when the request offers tools
    fail_times: int = 0  # answer this many chat requests with a 500 first, whatever the mode (retries, fallbacks)


def create_stub(control: StubControl) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        control.paths.append(request.url.path)
        control.requests.append(body)
        control.headers.append(dict(request.headers))
        if control.fail_times > 0:
            control.fail_times -= 1
            return _failure("error500")  # type: ignore[return-value]
        if control.delay:
            deadline = time.monotonic() + control.delay
            while time.monotonic() < deadline:
                if await request.is_disconnected():
                    control.disconnects += 1
                    return Response(status_code=499)
                await asyncio.sleep(0.02)
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        reply = _reply_to(control, body)
        words = reply.split(" ")
        model = body.get("model")
        call = _call_for(control, body)
        if body.get("stream"):
            return StreamingResponse(_stream(control, model, words, body, call), media_type="text/event-stream")
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
        return JSONResponse({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": message,
                         "finish_reason": "tool_calls" if call else "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
        })

    async def completions(request: Request) -> Response:
        body = await request.json()
        control.requests.append(body)
        control.headers.append(dict(request.headers))
        control.paths.append(request.url.path)
        if control.no_completions:
            return JSONResponse({"error": {"message": "This is a chat model and not supported in the v1/completions "
                                           "endpoint.", "type": "invalid_request_error", "param": "model",
                                           "code": None}}, status_code=404)
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        prompts = [body["prompt"]] if isinstance(body["prompt"], str) else body["prompt"]
        n = int(body.get("n") or 1)
        echo = bool(body.get("echo"))
        words = control.reply.split(" ")
        if body.get("stream"):
            return StreamingResponse(_completion_chunks(body, prompts, n, echo, words), media_type="text/event-stream")
        choices = [{"index": p * n + j, "text": (prompt if echo else "") + control.reply, "logprobs": None,
                    "finish_reason": "stop"} for p, prompt in enumerate(prompts) for j in range(n)]
        return JSONResponse({"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()),
                             "model": body.get("model"), "choices": choices,
                             "usage": {"prompt_tokens": 5 * len(prompts), "completion_tokens": len(words) * len(choices),
                                       "total_tokens": 5 * len(prompts) + len(words) * len(choices)}})

    async def embeddings(request: Request) -> Response:
        body = await request.json()
        control.requests.append(body)
        control.headers.append(dict(request.headers))
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        texts = [body["input"]] if isinstance(body["input"], str) else body["input"]
        data = [{"object": "embedding", "index": i, "embedding": [float(len(t)), 1.0, 0.0]} for i, t in enumerate(texts)]
        return JSONResponse({"object": "list", "data": data, "model": body["model"],
                             "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)}})

    async def speech(request: Request) -> Response:
        body = await request.json()
        control.requests.append(body)
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        # a WAV header and the text as "samples": enough to see the bytes travel untouched
        return Response(b"RIFF\x00\x00\x00\x00WAVE" + body["input"].encode(), media_type="audio/wav")

    async def image_generations(request: Request) -> Response:
        body = await request.json()
        control.paths.append(request.url.path)
        control.requests.append(body)
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        return JSONResponse({"created": int(time.time()),
                             "data": [{"b64_json": STUB_PNG_B64} for _ in range(int(body.get("n") or 1))]})

    async def image_edits(request: Request) -> Response:
        form = await request.form()
        control.paths.append(request.url.path)
        # the fields as sent, and each uploaded file as (file name, its bytes)
        control.requests.append({k: v if isinstance(v, str) else (v.filename, await v.read()) for k, v in form.items()})
        failure = _failure(control.mode)
        if failure is not None:
            return failure
        return JSONResponse({"created": int(time.time()),
                             "data": [{"b64_json": STUB_PNG_B64} for _ in range(int(str(form.get("n") or 1)))]})

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 0,
                                                          "owned_by": "stub"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/completions", completions, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/audio/speech", speech, methods=["POST"]),
                             Route("/v1/images/generations", image_generations, methods=["POST"]),
                             Route("/v1/images/edits", image_edits, methods=["POST"]), Route("/v1/models", models)])


def _failure(mode: str) -> Response | None:
    def err(status: int, message: str, type_: str = "server_error", headers: dict | None = None) -> Response:
        return JSONResponse({"error": {"message": message, "type": type_, "param": None, "code": None}},
                            status_code=status, headers=headers)
    return {
        "error500": lambda: err(500, "stub exploded"),
        "overloaded": lambda: err(503, "stub overloaded"),
        "ratelimit": lambda: err(429, "slow down", "rate_limit_error", {"retry-after": "7"}),
        "unauthorized": lambda: err(401, "bad key", "invalid_request_error"),
        "bad_request": lambda: err(400, "stub does not like 'temperature'", "invalid_request_error"),
        "garbage": lambda: Response(b"<html>not json</html>", status_code=200, media_type="text/html"),
    }.get(mode, lambda: None)()


def _reply_to(control: StubControl, body: dict[str, Any]) -> str:
    """A tool's output comes back in the reply, so tests see that the continuation reached the upstream."""
    last = (body.get("messages") or [{}])[-1]
    if last.get("role") == "tool":
        return f"The tool said: {last.get('content')}"
    return control.reply


def _call_for(control: StubControl, body: dict[str, Any]) -> dict[str, Any] | None:
    if control.tool_call is None or not body.get("tools") or body.get("tool_choice") == "none":
        return None
    if (body.get("messages") or [{}])[-1].get("role") == "tool":
        return None
    return {"id": "call_stub1", "type": "function",
            "function": {"name": control.tool_call["name"], "arguments": control.tool_call["arguments"]}}


async def _stream(control: StubControl, model: str, words: list[str], body: dict[str, Any],
                  call: dict[str, Any] | None = None):
    finished = False
    try:
        async for piece in (_call_chunks(model, call, body) if call else _chunks(control, model, words, body)):
            yield piece
        finished = True
    finally:
        if not finished:
            control.disconnects += 1


async def _chunks(control: StubControl, model: str, words: list[str], body: dict[str, Any]):
    created = int(time.time())
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model}
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}
    yield f"data: {json.dumps(first)}\n\n"
    for i, word in enumerate(words):
        if control.chunk_delay:
            await asyncio.sleep(control.chunk_delay)
        if control.mode == "midstream_error" and i == 1:
            yield f"data: {json.dumps({'error': {'message': 'stub broke mid-stream', 'type': 'server_error'}})}\n\n"
            return
        piece = word if i == 0 else " " + word
        control.chunk_sent_at.append(time.monotonic())
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'stop'}]})}\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


async def _completion_chunks(body: dict[str, Any], prompts: list[str], n: int, echo: bool, words: list[str]):
    base = {"id": "cmpl-stub", "object": "text_completion", "created": int(time.time()), "model": body.get("model")}
    for p, prompt in enumerate(prompts):
        for j in range(n):
            index = p * n + j
            pieces = ([prompt] if echo else []) + [w if i == 0 else " " + w for i, w in enumerate(words)]
            for piece in pieces:
                choice = {"index": index, "text": piece, "logprobs": None, "finish_reason": None}
                yield f"data: {json.dumps({**base, 'choices': [choice]})}\n\n"
            done = {"index": index, "text": "", "logprobs": None, "finish_reason": "stop"}
            yield f"data: {json.dumps({**base, 'choices': [done]})}\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        count = len(prompts) * n
        usage = {"prompt_tokens": 5 * len(prompts), "completion_tokens": len(words) * count,
                 "total_tokens": 5 * len(prompts) + len(words) * count}
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"


async def _call_chunks(model: str, call: dict[str, Any], body: dict[str, Any]):
    base = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": int(time.time()), "model": model}
    args = call["function"]["arguments"]
    half = len(args) // 2
    deltas = [{"role": "assistant", "content": None,
               "tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                               "function": {"name": call["function"]["name"], "arguments": ""}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": args[:half]}}]},
              {"tool_calls": [{"index": 0, "function": {"arguments": args[half:]}}]}]
    for delta in deltas:
        yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': delta, 'finish_reason': None}]})}\n\n"
    yield f"data: {json.dumps({**base, 'choices': [{'index': 0, 'delta': {}, 'finish_reason': 'tool_calls'}]})}\n\n"
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n"
    yield "data: [DONE]\n\n"
