"""OpenAI's Files API: upload (streamed to storage), list, retrieve, delete, download; all scoped to the caller's org."""

from __future__ import annotations

import asyncio
from typing import AsyncIterator
from urllib.parse import quote

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from ...errors import InvalidRequest, NotFound, PayloadTooLarge
from ...files.service import MAX_EXPIRY, MIN_EXPIRY, UPLOAD_PURPOSES, Upload, check_purpose
from ...pipeline import scopes as sc
from ..forms import multipart_doc
from ..render import app_context, json_response
from ..upload import stream_form

router = APIRouter(tags=["OpenAI"])
FORM_SLACK = 64 * 1024  # the form's own bytes around the file: boundaries, headers, purpose, expires_after

_FIELDS = {
    "file": {"type": "string", "format": "binary", "description": "The file (batch inputs: .jsonl)"},
    "purpose": {"type": "string", "enum": list(UPLOAD_PURPOSES)},
    "expires_after[anchor]": {"type": "string", "enum": ["created_at"]},
    "expires_after[seconds]": {"type": "integer", "minimum": MIN_EXPIRY, "maximum": MAX_EXPIRY},
}


@router.post("/files", summary="Upload a file", openapi_extra=multipart_doc(_FIELDS, ["file", "purpose"]))
async def create_file(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    files = ctx.files
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > files.max_bytes + FORM_SLACK:
        raise PayloadTooLarge(f"The file is larger than the {files.max_bytes // (1024 * 1024)} MB limit.",
                              param="file")
    uploads: list[Upload] = []

    async def on_file(filename: str, chunks: AsyncIterator[bytes], fields: dict[str, str]) -> Upload:
        purpose = fields.get("purpose")
        if purpose is not None:  # known already: refuse a bad one before a byte is stored
            check_purpose(purpose, filename)
        upload = await files.begin(principal.org_id, filename)
        uploads.append(upload)
        await files.receive(upload, chunks, purpose=purpose)
        return upload

    try:
        fields, upload = await stream_form(request, "file", on_file)
        if upload is None:
            raise InvalidRequest("'file' is required: upload it as a file.", param="file")
        purpose = fields.get("purpose")
        check_purpose(purpose, upload.filename)
        assert purpose is not None
        created = await files.commit(upload, purpose=purpose, expires_after_seconds=_expires_after(fields))
    except BaseException:
        for upload in uploads:
            await asyncio.shield(files.abort(upload))
        raise
    return json_response(created.public())


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor, seconds = fields.get("expires_after[anchor]"), fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise InvalidRequest("expires_after[anchor] must be 'created_at'.", param="expires_after[anchor]")
    if seconds is None or not seconds.strip().isdigit():
        raise InvalidRequest("expires_after[seconds] must be a whole number of seconds.",
                             param="expires_after[seconds]")
    value = int(seconds)
    if not MIN_EXPIRY <= value <= MAX_EXPIRY:
        raise InvalidRequest(f"expires_after[seconds] must be between {MIN_EXPIRY} (1 hour) and {MAX_EXPIRY} "
                             "(30 days).", param="expires_after[seconds]")
    return value


@router.get("/files", summary="List the organization's files (?purpose=&limit=&order=&after=)")
async def list_files(request: Request) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    q = request.query_params
    purpose = q.get("purpose") or None
    raw_limit = q.get("limit", "10000")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 10_000:
        raise InvalidRequest("limit must be an integer between 1 and 10000.", param="limit")
    order = q.get("order", "desc")
    if order not in ("asc", "desc"):
        raise InvalidRequest("order must be 'asc' or 'desc'.", param="order")
    page = await ctx.files.list(principal.org_id, purpose=purpose, limit=int(raw_limit), order=order,  # type: ignore[arg-type]
                                after=q.get("after") or None)
    return json_response(page.public())


@router.get("/files/{file_id}", summary="Retrieve a file object")
async def retrieve_file(request: Request, file_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    return json_response((await ctx.files.get(principal.org_id, file_id)).public())


@router.delete("/files/{file_id}", summary="Delete a file")
async def delete_file(request: Request, file_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_WRITE)
    if not await ctx.files.delete(principal.org_id, file_id):
        raise NotFound(f"No such File object: {file_id}", param="file_id")
    return json_response({"id": file_id, "object": "file", "deleted": True})


@router.get("/files/{file_id}/content", summary="Download a file's bytes")
async def file_content(request: Request, file_id: str) -> Response:
    ctx = app_context(request)
    principal = await ctx.calls.authorize(request, sc.USER_READ)
    file = await ctx.files.get(principal.org_id, file_id)
    return StreamingResponse(ctx.files.stream(file), media_type="application/octet-stream", headers={
        "Content-Length": str(file.bytes),
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(file.filename)}"})

