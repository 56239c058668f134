"""What every route starts and renders with: the app context, JSON bodies, the headers of an event stream."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..context import AppContext

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "Connection": "keep-alive"}


def app_context(request: Request) -> AppContext:
    """The context `create_app` built, typed."""
    ctx: AppContext = request.app.state.ctx
    return ctx


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json", headers=headers)


def base_url(request: Request) -> str:
    """Where this server is reached from outside: the configured public URL, else what the client called."""
    return app_context(request).settings.public_url or str(request.base_url)
