"""A lean streaming response for server-sent events.

Starlette's StreamingResponse runs each stream in an anyio task group with a second task listening for the
client's disconnect; per stream that bookkeeping cost more CPU than relaying the events. Here one small watcher
task (the same one non-streaming calls use) cancels the relay when the client hangs up, which closes the upstream
stream or stops local generation.
"""

from __future__ import annotations

from typing import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .disconnect import ClientGone, watch_disconnect


class EventStream(Response):
    media_type = "text/event-stream"

    def __init__(self, body: AsyncIterator[bytes], *, end: bytes = b"", status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None) -> None:
        """`end` goes out after the last chunk (OpenAI's `data: [DONE]`), in the same write as the stream's end."""
        if media_type is not None:  # Gemini without alt=sse streams one JSON array
            self.media_type = media_type
        self.body_iterator = body
        self.end = end
        self.status_code = status_code
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        try:
            await watch_disconnect(receive, self._relay(send))
        except ClientGone:
            return  # the relay was cancelled: its generator's cleanup closed the upstream
        await send({"type": "http.response.body", "body": self.end, "more_body": False})

    async def _relay(self, send: Send) -> None:
        body = self.body_iterator
        try:
            async for chunk in body:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finally:
            await body.aclose()  # type: ignore[attr-defined]
