"""Streaming multipart/form-data: small text fields collected, one file field handed on chunk by chunk as it arrives
(Starlette's `request.form()` spools the whole body first; uploads of hundreds of MB must not wait for that)."""

from __future__ import annotations

from typing import AsyncIterator, Awaitable, Callable, TypeVar

import python_multipart
from python_multipart.multipart import parse_options_header
from starlette.requests import ClientDisconnect, Request

from ..errors import InvalidRequest
from .disconnect import ClientGone

T = TypeVar("T")
MAX_FIELDS = 64
MAX_FIELD_BYTES = 64 * 1024
Event = tuple[str, object]


async def _events(request: Request, boundary: bytes) -> AsyncIterator[Event]:
    """("headers", {name: value}) / ("data", bytes) / ("end", None) per part, as the body arrives."""
    pending: list[Event] = []
    header: dict[str, bytearray] = {"field": bytearray(), "value": bytearray()}
    headers: dict[str, str] = {}

    def on_header_end() -> None:
        headers[header["field"].decode("latin-1").lower()] = header["value"].decode("latin-1")
        header["field"].clear()
        header["value"].clear()

    def on_headers_finished() -> None:
        pending.append(("headers", dict(headers)))
        headers.clear()

    parser = python_multipart.MultipartParser(boundary, {
        "on_header_field": lambda data, start, end: header["field"].extend(data[start:end]),
        "on_header_value": lambda data, start, end: header["value"].extend(data[start:end]),
        "on_header_end": on_header_end,
        "on_headers_finished": on_headers_finished,
        "on_part_data": lambda data, start, end: pending.append(("data", bytes(data[start:end]))),
        "on_part_end": lambda: pending.append(("end", None)),
    })
    try:
        async for chunk in request.stream():
            try:
                parser.write(chunk)
            except Exception as exc:  # python-multipart's parse errors
                raise InvalidRequest(f"The multipart body could not be parsed: {exc}") from None
            for event in pending:
                yield event
            pending.clear()
    except ClientDisconnect:
        raise ClientGone() from None  # hung up while sending: nobody to answer
    parser.finalize()
    for event in pending:
        yield event


async def stream_form(request: Request, file_field: str,
                      on_file: Callable[[str, AsyncIterator[bytes], dict[str, str]], Awaitable[T]],
                      ) -> tuple[dict[str, str], T | None]:
    """Parse the form; `on_file(filename, chunks, fields so far)` consumes the file part while it streams in.
    Returns the text fields and what `on_file` returned (None when the form had no such file)."""
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidRequest("This endpoint takes multipart/form-data (a file upload).", code="invalid_content_type")
    events = _events(request, boundary)
    fields: dict[str, str] = {}
    result: T | None = None
    seen_file = False

    async def part_data() -> AsyncIterator[bytes]:
        async for kind, value in events:
            if kind == "data":
                yield value  # type: ignore[misc]
            elif kind == "end":
                return
        raise InvalidRequest(f"The multipart body ended inside '{file_field}'.", param=file_field)

    async for kind, value in events:
        if kind != "headers":
            continue
        _, disp = parse_options_header(value.get("content-disposition", ""))  # type: ignore[union-attr]
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        if name == file_field:
            if seen_file:
                raise InvalidRequest(f"Send one '{file_field}', not several.", param=file_field)
            if filename is None:
                raise InvalidRequest(f"'{file_field}' must be a file upload, not a text field.", param=file_field)
            seen_file = True
            result = await on_file(filename.decode("utf-8", "replace"), part_data(), dict(fields))
            continue
        if len(fields) >= MAX_FIELDS:
            raise InvalidRequest(f"The form has more than {MAX_FIELDS} fields.")
        buf = bytearray()
        async for kind2, data in events:
            if kind2 == "end":
                break
            buf += data  # type: ignore[operator]
            if len(buf) > MAX_FIELD_BYTES:
                raise InvalidRequest(f"'{name}' is longer than {MAX_FIELD_BYTES} bytes.", param=name)
        fields[name] = buf.decode("utf-8", "replace")
    return fields, result
