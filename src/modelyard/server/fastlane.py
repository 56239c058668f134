"""The fast lane: hot routes dispatched straight from ASGI, skipping the framework's per-request layers.

FastAPI still owns every route (and documents it); the fast lane only short-cuts exact (method, path) matches to
the same handler functions, with the same error rendering. Everything else, lifespan included, goes to the app.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InternalError, ModelyardError
from ..pipeline.calls import RESPONSE_HEADERS
from .disconnect import ClientGone
from .errors import error_response

log = logging.getLogger(__name__)
_REQUEST_ID = b"x-request-id"
Handler = Callable[[Request], Awaitable[Response]]


class FastLane:
    def __init__(self, app: Any, routes: dict[tuple[str, str], Handler],
                 outer: Callable[[ASGIApp], ASGIApp] | None = None) -> None:
        self.app = app
        self.routes = routes
        # `outer` wraps the whole lane (CORS), so fast and framework routes get the same treatment
        self._entry: ASGIApp = outer(self._dispatch) if outer else self._dispatch

    @property
    def state(self) -> Any:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._entry(scope, receive, send)

    async def _dispatch(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            send = _with_request_id(scope, send)
            handler = self.routes.get((scope["method"], scope["path"]))
            if handler is not None:
                scope["app"] = self.app
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except ClientGone:
                    return  # nobody to answer
                except ModelyardError as exc:
                    response = error_response(request, exc)
                except Exception:
                    log.exception("unhandled error on %s %s", scope["method"], scope["path"])
                    response = error_response(request, InternalError("The server had an error while processing your request."))
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _with_request_id(scope: Scope, send: Send) -> Send:
    """Echo the client's X-Request-Id (if sane) or mint one, on every response, errors included; and add the
    headers the call path published for this request (`pipeline.calls.publish_headers`)."""
    rid = b""
    for name, value in scope["headers"]:
        if name == _REQUEST_ID:
            if 0 < len(value) <= 128 and value.isascii() and value.decode().isprintable():
                rid = value
            break
    if not rid:
        rid = b"req_" + secrets.token_hex(12).encode()
    scope.setdefault("state", {})["request_id"] = rid.decode()

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (_REQUEST_ID, rid)]
            earned = scope.get(RESPONSE_HEADERS)  # what the call path earned (rate limits, who served), encoded
            if earned:
                headers.extend(earned.items())
            message["headers"] = headers
        await send(message)

    return sender
