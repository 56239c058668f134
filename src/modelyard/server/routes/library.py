"""The media library: items, share links (and their keyless reads), search, and render."""

from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidRequest, NotFound
from ...jobs.tasks import job_request
from ...library.items import MEDIA_TASKS, TYPES
from ...library.search import search as run_search
from ...pipeline import scopes as sc
from ...pipeline.regions import region_for
from ..body import parse_object
from ..render import app_context, base_url, json_response
from .async_jobs import raise_job_error
from .platform import stored_media

router = APIRouter(tags=["Library"])
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
ITEM = "/api/library/items/{item_id}"
DEFAULT_WAIT, MAX_WAIT = 60.0, 600.0
_SAVE_DOC = {"type": "object", "properties": {
    "url": {"type": "string", "description": "a media link we signed, or any http(s) URL of an image, video or audio"},
    "job_id": {"type": "string", "description": "a completed job whose media to save"},
    "prompt": {"type": "string"}, "model_id": {"type": "string"}, "task": {"type": "string"}}}
_SHARE_DOC = {"type": "object", "properties": {"expires_in_seconds": {"type": "integer", "minimum": 1}}}
_RENDER_DOC = {"type": "object", "required": ["model_id", "task", "payload"], "properties": {
    "model_id": {"type": "string"}, "task": {"type": "string", "enum": list(MEDIA_TASKS)},
    "payload": {"type": "object"}, "wait_seconds": {"type": "number", "minimum": 0, "maximum": MAX_WAIT}}}


def _query(request: Request) -> Any:
    """The query string, refused whole if a value holds a NUL (no database stores one in text)."""
    for name, value in request.query_params.multi_items():
        if "\x00" in value:
            raise InvalidRequest(f"'{name}' must not contain NUL characters.", param=name)
    return request.query_params


def _item(item_id: str) -> str:
    """Ids are ours: anything else names no item (and never reaches a query)."""
    if not _ID.fullmatch(item_id):
        raise NotFound(f"No library item '{item_id[:64]}'.", param="id", code="item_not_found")
    return item_id


def _doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _limit(raw: str | None, default: int = 20) -> int:
    raw = raw or str(default)
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise InvalidRequest("'limit' is an integer from 1 to 100.", param="limit")
    return int(raw)


def _when(raw: str | None, name: str) -> float | None:
    """Unix seconds, or an ISO-8601 date or time (UTC unless it says otherwise)."""
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(value):
            raise InvalidRequest(f"'{name}' is unix seconds or an ISO-8601 date.", param=name)
        return value
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidRequest(f"'{name}' is unix seconds or an ISO-8601 date.", param=name) from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _str(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is not None and (not isinstance(value, str) or not value.strip() or "\x00" in value):
        raise InvalidRequest(f"'{name}' must be a non-empty string (without NUL characters).", param=name)
    return value


# ---------------------------------------------------------------- items

@router.get("/api/library/items", summary="List your library items (newest first; filter by type, model, dates, q)")
async def list_items(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    q = _query(request)
    kind = q.get("type") or None
    if kind is not None and kind not in TYPES:
        raise InvalidRequest(f"'type' is one of {', '.join(TYPES)}.", param="type")
    items, more = await ctx.library.list(
        principal, limit=_limit(q.get("limit")), after=q.get("after") or None, type=kind,
        model=q.get("model") or None, since=_when(q.get("since"), "since"), until=_when(q.get("until"), "until"),
        q=(q.get("q") or "").strip() or None)
    data = [ctx.library.public(i, base_url(request)) for i in items]
    return json_response({"object": "list", "data": data, "has_more": more,
                          "last_id": data[-1]["id"] if data else None})


@router.post("/api/library/items", summary="Save media to the library: a job's result or a URL", status_code=201,
             openapi_extra=_doc(_SAVE_DOC))
async def save_item(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    body = await parse_object(request)
    url, job_id = _str(body, "url"), _str(body, "job_id")
    if (url is None) == (job_id is None):
        raise InvalidRequest("Send exactly one of 'url' and 'job_id'.", param="url" if url is None else "job_id")
    created = True
    if job_id is not None:
        item, created = await ctx.library.save_job(principal, job_id)
    else:
        item = await ctx.library.save_url(principal, url or "", prompt=_str(body, "prompt"),
                                          model_id=_str(body, "model_id"), task=_str(body, "task"))
    return json_response(ctx.library.public(item, base_url(request)), status=201 if created else 200)


@router.get(ITEM, summary="A library item, with freshly signed media URLs")
async def get_item(request: Request, item_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(ctx.library.public(await ctx.library.get(principal, _item(item_id)), base_url(request)))


@router.delete(ITEM, summary="Delete a library item, its media bytes and its share link")
async def delete_item(request: Request, item_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    item = await ctx.library.delete(principal, _item(item_id))
    return json_response({"id": item.id, "object": "library.item", "deleted": True})


# ---------------------------------------------------------------- share links

@router.post(ITEM + "/share", summary="Create a share link (the token is shown once)", status_code=201,
             openapi_extra=_doc(_SHARE_DOC))
async def create_share(request: Request, item_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    body = await parse_object(request) if await request.body() else {}
    expires = body.get("expires_in_seconds")
    if expires is not None and (isinstance(expires, bool) or not isinstance(expires, int)
                                or not 1 <= expires <= 365 * 24 * 3600):
        raise InvalidRequest("'expires_in_seconds' is an integer from 1 to 31536000.", param="expires_in_seconds")
    link = await ctx.library.shares.create(principal, _item(item_id), expires, base_url(request))
    return json_response(link, status=201)


@router.get(ITEM + "/share", summary="The item's share link: when it was made and when it expires")
async def get_share(request: Request, item_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response(await ctx.library.shares.get(principal, _item(item_id)))


@router.delete(ITEM + "/share", summary="Revoke the item's share link (at once)")
async def delete_share(request: Request, item_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    return json_response(await ctx.library.shares.revoke(principal, _item(item_id)))


def _address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@router.get("/api/shares/{token}", summary="A shared item, by its token (no key; rate limited per address)")
async def fetch_share(request: Request, token: str) -> Response:
    ctx = app_context(request)
    headers = await ctx.library.shares.admit(_address(request))
    body = await ctx.library.shares.fetch(token, base_url(request))
    return json_response(body, headers={**headers, "Cache-Control": "no-store"})


@router.api_route("/api/shares/{token}/media/{index}", methods=["GET", "HEAD"], include_in_schema=False)
async def share_media(request: Request, token: str, index: str) -> Response:
    ctx = app_context(request)
    await ctx.library.shares.admit(_address(request))
    if not index.isdigit():
        raise InvalidRequest("The media index is a number.", param="index")
    item = await ctx.library.shares.media(token, int(index), request.query_params.get("expires"),
                                          request.query_params.get("sig"))
    return await stored_media(request, item, "no-store")  # a revoked share's media must not linger in caches


# ---------------------------------------------------------------- search and render

@router.get("/api/search", summary="Search models and your library (full-text; mode=semantic ranks by meaning)")
async def search(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    q = _query(request)
    text = (q.get("q") or "").strip()
    if not text:
        raise InvalidRequest("'q' is required.", param="q")
    if len(text) > 500:
        raise InvalidRequest("'q' is longer than 500 characters.", param="q")
    return json_response(await run_search(ctx.library, principal, q=text, kind=q.get("type") or "all",
                                          limit=_limit(q.get("limit"), 10), after=q.get("after") or None,
                                          mode=q.get("mode") or "fts", base_url=base_url(request)))


@router.post("/api/render", summary="Run one generation and keep it in the library (200 item, or 202 while it runs)",
             openapi_extra=_doc(_RENDER_DOC))
async def render(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)
    body = await parse_object(request)
    if not isinstance(body.get("payload"), dict):
        raise InvalidRequest("'payload' must be an object.", param="payload")
    model, task, payload = job_request(body, ctx.catalog)
    if task.value not in MEDIA_TASKS:
        raise InvalidRequest(f"Render makes media: 'task' is one of {', '.join(MEDIA_TASKS)}.", param="task",
                             code="unsupported_task")
    wait = body.get("wait_seconds", DEFAULT_WAIT)
    if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait <= MAX_WAIT:
        raise InvalidRequest(f"'wait_seconds' is a number from 0 to {MAX_WAIT:g}.", param="wait_seconds")
    job = await ctx.jobs.submit(principal, model, task, payload, face="render", base_url=base_url(request),
                                client=request, region=region_for(request, ctx.settings.region_hosts),
                                extra_meta={"library": "render"}, payload_prefix="payload.")
    if wait > 0:
        job = await ctx.jobs.wait(job, float(wait))
    if not job.final:
        return json_response({"job_id": job.id, "item_id": None, "status": job.status}, status=202)
    if job.status != "completed":
        raise_job_error(job)
    item = await ctx.library.render_item(job)
    return json_response({**ctx.library.public(item, base_url(request)), "job_id": job.id})
