"""Request body parsing: size limit, one JSON parse straight into the pydantic model, errors naming the field."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import ClientDisconnect, Request

from ..errors import InvalidRequest, PayloadTooLarge
from .disconnect import ClientGone
from ..protocols.openai.wire import describe_validation_error

M = TypeVar("M", bound=BaseModel)


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"Request body is larger than the {limit} byte limit.")
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"Request body is larger than the {limit} byte limit.")
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone() from None  # hung up while sending: nobody to answer
    return b"".join(chunks)


async def parse_json(request: Request, model: type[M]) -> M:
    body = await read_body(request, request.app.state.ctx.settings.max_body_bytes)
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        parsed = model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid":
            raise InvalidRequest(
                f"We could not parse the JSON body of your request: {errors[0]['msg']}.", code="invalid_json"
            ) from None
        if errors and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
            raise InvalidRequest("The request body must be a JSON object.") from None
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param=param) from None
    if "_raw" in getattr(parsed, "__private_attributes__", ()):
        parsed._raw = body  # type: ignore[attr-defined]
    return parsed


async def parse_object(request: Request) -> dict:
    """A JSON object body for routes whose fields are checked by hand (fal arguments, studio generate)."""
    import orjson

    body = await read_body(request, request.app.state.ctx.settings.max_body_bytes)
    if not body.strip():
        raise InvalidRequest("The request body is empty; send a JSON object.")
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"We could not parse the JSON body of your request: {exc}.", code="invalid_json") from None
    if not isinstance(data, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    return data
