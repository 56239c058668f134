"""Renders every error once, in the envelope of the dialect the client spoke."""

from __future__ import annotations

import logging
from typing import Any, Callable

import orjson
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from ..errors import InternalError, InvalidRequest, MethodNotAllowed, ModelyardError, NotFound
from ..protocols.openai import wire as oa
from .disconnect import ClientGone

log = logging.getLogger(__name__)

Renderer = Callable[[ModelyardError], dict[str, Any]]


class Dialects:
    """Which error envelope each path speaks. `create_app` registers every dialect's prefixes; the longest prefix
    wins, and everything else answers in OpenAI's envelope."""

    def __init__(self) -> None:
        self._prefixes: list[tuple[str, Renderer]] = []

    def register(self, renderer: Renderer, prefixes: list[str]) -> None:
        self._prefixes.extend((p, renderer) for p in prefixes)
        self._prefixes.sort(key=lambda item: len(item[0]), reverse=True)

    def renderer(self, path: str) -> Renderer:
        for prefix, renderer in self._prefixes:
            if path.startswith(prefix):
                return renderer
        return oa.error_body


def error_response(request: Request, exc: ModelyardError) -> Response:
    body = request.app.state.dialects.renderer(request.url.path)(exc)
    return Response(orjson.dumps(body), status_code=exc.status, media_type="application/json", headers=exc.headers)


async def _on_modelyard_error(request: Request, exc: ModelyardError) -> Response:
    return error_response(request, exc)


async def _on_http_exception(request: Request, exc: StarletteHTTPException) -> Response:
    if exc.status_code == 404:
        err: ModelyardError = NotFound(f"Unknown route: {request.method} {request.url.path}", code="unknown_route")
    elif exc.status_code == 405:
        err = MethodNotAllowed(f"Method {request.method} is not allowed on {request.url.path}.")
    else:
        err = ModelyardError(str(exc.detail), status=exc.status_code, code=None)
        err.type = "invalid_request_error" if exc.status_code < 500 else "api_error"
    resp = error_response(request, err)
    if exc.headers:
        resp.headers.update(exc.headers)
    return resp


async def _on_validation_error(request: Request, exc: RequestValidationError) -> Response:
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    loc = [p for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = oa.param_from_loc(loc)
    msg = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
    return error_response(request, InvalidRequest(f"Invalid value for '{param}': {msg}" if param else msg, param=param))


def _nul_text(exc: Exception) -> bool:
    """PostgreSQL refuses a NUL character in text (an id, a name): the client sent it, so it is their 400."""
    orig = getattr(exc, "orig", None)
    text = f"{type(orig).__name__} {orig}" if orig is not None else ""
    return "0x00" in text or "UntranslatableCharacter" in text or "\\u0000" in text


async def _on_database_error(request: Request, exc: Exception) -> Response:
    """A database error answered here, not by the server-error middleware (which re-raises after answering, and the
    server then drops the client's keep-alive connection): the client's NUL is its 400, anything else our 500."""
    if _nul_text(exc):
        return error_response(request, InvalidRequest("Text in the request may not contain NUL characters (\\u0000)."))
    return await _on_unexpected(request, exc)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return error_response(request, InternalError("The server had an error while processing your request."))


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    return Response(status_code=499)  # nginx's "client closed request"; nobody reads it


def install(app: Any, dialects: Dialects) -> None:
    app.state.dialects = dialects
    app.add_exception_handler(ClientGone, _on_client_gone)
    app.add_exception_handler(ModelyardError, _on_modelyard_error)
    app.add_exception_handler(StarletteHTTPException, _on_http_exception)
    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DBAPIError, _on_database_error)
    app.add_exception_handler(Exception, _on_unexpected)
