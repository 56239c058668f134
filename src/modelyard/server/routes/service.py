"""Service routes: health, readiness, and the offline API reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, Response

from ...errors import NotFound
from ...pipeline import scopes as sc
from ...telemetry.metrics import CONTENT_TYPE
from ..metrics import render as render_metrics
from ..render import app_context, json_response

router = APIRouter(include_in_schema=False)

_ASSETS = {"swagger-ui.css", "swagger-ui-bundle.js", "swagger-ui-standalone-preset.js", "favicon-32x32.png"}

_REFERENCE_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Modelyard API reference</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/reference/assets/swagger-ui.css">
<link rel="icon" href="/reference/assets/favicon-32x32.png"></head>
<body><div id="reference"></div>
<script src="/reference/assets/swagger-ui-bundle.js"></script>
<script>
window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#reference", deepLinking: true,
  persistAuthorization: true, tryItOutEnabled: true});
</script></body></html>"""


def _swagger_static() -> Path | None:
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@router.get("/healthz")
async def healthz() -> Response:
    return json_response({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    ctx = app_context(request)
    checks: dict[str, str] = {}
    try:
        await ctx.store.ping()
        checks["database"] = "ok"
    except Exception as exc:  # readiness reports, it does not raise
        checks["database"] = f"error: {type(exc).__name__}"
    draining = ctx.shutdown is not None and ctx.shutdown.draining
    if draining:  # a load balancer must stop sending here while in-flight work finishes (docs/deployment.md)
        checks["shutdown"] = "draining"
    ready = all(v == "ok" for v in checks.values()) and ctx.router is not None
    # a degraded rate limiter (Redis gone) still serves, on local limits: reported, not failed
    limiter = ctx.gate.describe()
    # the off-path writer's backlog is reported, not failed on: a lagging database still serves (records spool)
    writer = ctx.gate.writer.stats() if ctx.gate.writer is not None else None
    return json_response({"status": "ready" if ready else "draining" if draining else "not_ready", "checks": checks,
                          "models": len(ctx.catalog), **({"rate_limits": limiter} if limiter else {}),
                          **({"write_behind": writer} if writer is not None else {})},
                         status=200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    ctx = app_context(request)
    if ctx.metrics is None:
        raise NotFound("Metrics are off on this server (metrics_enabled: false).")
    if not ctx.settings.metrics_public:
        await ctx.calls.authorize(request, sc.ADMIN_READ)
    return Response(await render_metrics(ctx), media_type=CONTENT_TYPE)


@router.get("/reference")
async def reference() -> Response:
    return HTMLResponse(_REFERENCE_HTML)


@router.get("/reference/assets/{name}")
async def reference_asset(name: str) -> Response:
    folder = _swagger_static()
    if name not in _ASSETS or folder is None or not (folder / name).exists():
        raise NotFound(f"No such asset: {name}")
    return FileResponse(folder / name, headers={"Cache-Control": "public, max-age=86400"})
