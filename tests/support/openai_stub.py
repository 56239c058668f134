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


def create_stub(control: StubControl) -> Starlette:
    async def chat(request: Request) -> Response:
        body = await request.json()
        control.requests.append(body)
        control.headers.append(dict(request.headers))
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
        words = control.reply.split(" ")
        model = body.get("model")
        if body.get("stream"):
            return StreamingResponse(_stream(control, model, words, body), media_type="text/event-stream")
        return JSONResponse({
            "id": "chatcmpl-stub", "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": control.reply},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)},
        })

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

    async def models(request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [{"id": "stub-model", "object": "model", "created": 0,
                                                          "owned_by": "stub"}]})

    return Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                             Route("/v1/embeddings", embeddings, methods=["POST"]),
                             Route("/v1/audio/speech", speech, methods=["POST"]), Route("/v1/models", models)])


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


async def _stream(control: StubControl, model: str, words: list[str], body: dict[str, Any]):
    finished = False
    try:
        async for piece in _chunks(control, model, words, body):
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
