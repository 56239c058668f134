"""A minimal, fast OpenAI-shaped upstream for benchmarks: a raw ASGI app with canned replies.

Paths under /sse/ always stream (as the nginx stub does); elsewhere `"stream": true` in the body asks for a stream.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


BODY = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 0, "model": "bench-model",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
}).encode()
CHUNKS = [
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}\n\n',
    *[b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[{"index":0,"delta":{"content":"tok"},"finish_reason":null}]}\n\n'] * 8,
    b'data: {"id":"c","object":"chat.completion.chunk","created":0,"model":"bench-model","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n',
    b"data: [DONE]\n\n",
]


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            msg = await receive()
            if msg["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif msg["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = b""
    while True:
        msg = await receive()
        body += msg.get("body", b"")
        if not msg.get("more_body"):
            break
    if scope["path"].startswith("/sse/") or b'"stream":true' in body.replace(b" ", b""):
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        for c in CHUNKS:
            await send({"type": "http.response.body", "body": c, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="error", access_log=False,
                loop="uvloop", http="httptools")


def nginx_conf(port: int, prefix: Path) -> Path:
    """An nginx config serving the same canned replies: a C stub, so the bench measures the gateway, not the stub."""
    def literal(data: bytes) -> str:
        return data.decode().replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")

    conf = prefix / "nginx.conf"
    conf.write_text(f"""worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log crit;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_buffer_size 64k;
    server {{
        listen 127.0.0.1:{port};
        location /sse/ {{ default_type text/event-stream; return 200 '{literal(b"".join(CHUNKS))}'; }}
        location / {{ default_type application/json; return 200 '{literal(BODY)}'; }}
    }}
}}
""")
    return conf
