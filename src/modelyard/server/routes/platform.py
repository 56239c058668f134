"""Platform routes: model status, voices, and signed media downloads."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import FileResponse, Response, StreamingResponse

from ...errors import NotFound
from ...listing import status_entry
from ...media import StoredMedia
from ...pipeline import scopes as sc
from ...types import Task
from ..render import app_context, json_response

router = APIRouter(tags=["Platform"])


@router.get("/api/model-status", summary="Every model's state (online, warming, standby, offline), tasks and deployments")
async def model_status(request: Request) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    return json_response({"models": [await status_entry(ctx, m) for m in ctx.catalog]})


@router.get("/api/voice/models", summary="Speech models and their voices")
async def voice_models(request: Request) -> Response:
    ctx = app_context(request)
    await ctx.calls.authorize(request, sc.USER_READ)
    out = []
    for model in ctx.catalog:
        if Task.SPEECH not in model.tasks:
            continue
        placed = ctx.router.deployments(model)
        if not placed:
            continue
        backend = ctx.router.backends[placed[0].key]
        list_voices = getattr(backend, "list_voices", None)
        voices = await list_voices() if list_voices is not None else []
        out.append({"model_id": model.id, "status": (await backend.status()).value, "voices": voices,
                    **{k: v for k, v in backend.describe().items() if k != "voices"}})
    return json_response({"models": out})


@router.api_route("/media/{name}", methods=["GET", "HEAD"], include_in_schema=False)
async def media(request: Request, name: str) -> Response:
    """A signed link's bytes: from the disk (with Range support), or streamed from the bucket when it is private."""
    ctx = app_context(request)
    item = ctx.media.open(name, request.query_params.get("expires"), request.query_params.get("sig"))
    return await stored_media(request, item, "private, max-age=300")


async def stored_media(request: Request, item: StoredMedia, cache: str) -> Response:
    """Media bytes from the disk (with Range support), or streamed from the bucket when it is private."""
    ctx = app_context(request)
    headers = {"Cache-Control": cache}
    path = ctx.storage.local_path(item.key)
    if path is not None:
        if not path.is_file():
            raise NotFound("This media no longer exists.")
        return FileResponse(path, media_type=item.content_type, headers=headers)
    size = await ctx.storage.size(item.key)
    if size is None:
        raise NotFound("This media no longer exists.")
    headers["Content-Length"] = str(size)
    if request.method == "HEAD":
        return Response(media_type=item.content_type, headers=headers)
    return StreamingResponse(ctx.storage.get(item.key), media_type=item.content_type, headers=headers)
