"""multipart/form-data parsing for upload routes: size limits, required fields, errors naming the field."""

from __future__ import annotations

from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request

from ..errors import InvalidRequest, PayloadTooLarge


async def read_form(request: Request) -> FormData:
    ctype = request.headers.get("content-type", "")
    if not ctype.startswith("multipart/form-data"):
        raise InvalidRequest("This endpoint takes multipart/form-data (a file upload).", code="invalid_content_type")
    declared = request.headers.get("content-length")
    limit = request.app.state.ctx.settings.max_upload_bytes
    if declared and declared.isdigit() and int(declared) > limit + 64 * 1024:
        raise PayloadTooLarge(f"The upload is larger than the {limit // (1024 * 1024)} MB limit.")
    try:
        return await request.form(max_files=4, max_fields=64)
    except Exception as exc:  # python-multipart's and Starlette's parse errors
        raise InvalidRequest(f"The multipart body could not be parsed: {getattr(exc, 'detail', exc)}") from None


async def file_field(form: FormData, name: str, limit: int, *, required: bool = True) -> tuple[bytes, str] | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"'{name}' is required: upload it as a file.", param=name)
        return None
    if not isinstance(value, UploadFile):
        raise InvalidRequest(f"'{name}' must be a file upload, not a text field.", param=name)
    data = await value.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(f"'{name}' is larger than the {limit // (1024 * 1024)} MB limit.", param=name)
    if not data:
        raise InvalidRequest(f"'{name}' is empty.", param=name)
    return data, value.filename or name


def text_field(form: FormData, name: str, *, required: bool = False, choices: tuple[str, ...] | None = None,
               default: str | None = None) -> str | None:
    value = form.get(name)
    if isinstance(value, UploadFile):
        raise InvalidRequest(f"'{name}' must be a text field.", param=name)
    if value is None or value == "":
        if required:
            raise InvalidRequest(f"'{name}' is required.", param=name)
        return default
    if choices is not None and value not in choices:
        raise InvalidRequest(f"'{name}' must be one of {', '.join(choices)}.", param=name)
    return value


def number_field(form: FormData, name: str, kind: type, *, default: Any, low: float, high: float) -> Any:
    raw = text_field(form, name)
    if raw is None:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise InvalidRequest(f"'{name}' must be a {kind.__name__}.", param=name) from None
    if not low <= value <= high:
        raise InvalidRequest(f"'{name}' must be between {low} and {high}.", param=name)
    return value


def multipart_doc(fields: dict[str, dict[str, Any]], required: list[str]) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": fields, "required": required}}}}}
