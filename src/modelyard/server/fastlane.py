"""The fast lane: hot routes dispatched straight from ASGI, skipping the framework's per-request layers.

FastAPI still owns every route (and documents it); the fast lane only short-cuts exact (method, path) matches to
the same handler functions, with the same error rendering. Everything else, lifespan included, goes to the app.

Every HTTP request passes here: it gets its request id (and the log context that carries it), its ≥ 500 answer is
logged once, and with tracing on it gets its server span (chosen when the lane is built: off costs nothing here).
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InternalError, ModelyardError
from ..logs import REQUEST, RequestInfo
from ..pipeline.calls import RESPONSE_HEADERS
from .disconnect import ClientGone
from .errors import error_response

log = logging.getLogger(__name__)
_REQUEST_ID = b"x-request-id"
Handler = Callable[[Request], Awaitable[Response]]

if TYPE_CHECKING:
    from ..tracing import Tracing


class FastLane:
    def __init__(self, app: Any, routes: dict[tuple[str, str], Handler],
                 outer: Callable[[ASGIApp], ASGIApp] | None = None, tracing: Tracing | None = None) -> None:
        self.app = app
        self.routes = routes
        self.tracing = tracing
        inner: ASGIApp = self._traced if tracing is not None else self._dispatch
        # `outer` wraps the whole lane (CORS), so fast and framework routes get the same treatment
        self._entry: ASGIApp = outer(inner) if outer else inner

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

    async def _traced(self, scope: Scope, receive: Receive, send: Send) -> None:
        """`_dispatch` inside the request's server span (continuing an incoming `traceparent`)."""
        if scope["type"] != "http":
            await self._dispatch(scope, receive, send)
            return
        tracing: Tracing = self.tracing  # type: ignore[assignment]
        span, token = tracing.server_span(scope)
        status = 0

        async def sender(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        fixed = (scope["method"], scope["path"]) in self.routes
        try:
            await self._dispatch(scope, receive, sender)
        except BaseException as exc:
            tracing.end_server(span, token, scope, status, fixed_path=fixed, exc=exc)
            raise
        tracing.end_server(span, token, scope, status, fixed_path=fixed)


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
        # time first (microseconds, hex), then 48 random bits: ids sort by when they were made, so the request
        # log's index on request_id grows at its end rather than on random pages
        rid = f"req_{time.time_ns() // 1000:013x}{secrets.token_hex(6)}".encode()
    info = RequestInfo(rid.decode())
    scope.setdefault("state", {})["request_id"] = info.request_id
    REQUEST.set(info)  # each request runs in a task of its own: no reset needed

    async def sender(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [*message.get("headers", ()), (_REQUEST_ID, rid)]
            earned = scope.get(RESPONSE_HEADERS)  # what the call path earned (rate limits, who served), encoded
            if earned:
                headers.extend(earned.items())
            message["headers"] = headers
            if message["status"] >= 500:
                _log_failure(scope, message["status"], info)
        await send(message)

    return sender


def _log_failure(scope: Scope, status: int, info: RequestInfo) -> None:
    """The one line an operator reads for an answer of ours ≥ 500: what was asked, and where it failed upstream."""
    where = ""
    if info.deployment is not None:
        where = (f" (model {info.model}, deployment {info.deployment}, upstream status "
                 f"{info.upstream_status or 'none'}, attempt {info.attempt})")
    log.error("answered %d to %s %s%s", status, scope["method"], scope["path"], where,
              extra={"status": status, "method": scope["method"], "path": scope["path"], "model": info.model,
                     "deployment": info.deployment, "upstream_status": info.upstream_status,
                     "attempt": info.attempt})
