"""OpenAI wire format: error envelope, validation-error wording, chat completion and chunk shapes."""

from __future__ import annotations

import secrets
import time
from typing import Any, Iterable

from pydantic import ValidationError

from ...errors import ModelyardError

_TYPE_SEGMENTS = {"str", "int", "float", "bool", "dict", "list", "none", "literal"}


def error_body(exc: ModelyardError) -> dict[str, Any]:
    return {"error": {"message": exc.message, "type": exc.type, "param": exc.param, "code": exc.code}}


def _field_parts(loc: Iterable[Any]) -> list[int | str]:
    # union members and validators appear in locations as type names; they are not fields
    return [p for p in loc if isinstance(p, int) or not (
        "[" in str(p) or "(" in str(p) or str(p).lower() in _TYPE_SEGMENTS or str(p).startswith("function-"))]


def param_from_loc(loc: Iterable[Any]) -> str | None:
    """Turn pydantic's error location into OpenAI's `param` form: messages[0].content."""
    out = ""
    for part in _field_parts(loc):
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or None


def describe_validation_error(exc: ValidationError) -> tuple[str, str | None]:
    """The first error, worded for a person, and the field it concerns."""
    errors = exc.errors(include_url=False)
    # prefer the error at the deepest real field: unions report one error per member
    first = max(errors, key=lambda e: len(_field_parts(e["loc"])))
    param = param_from_loc(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        msg = "is required"
    elif first["type"] == "extra_forbidden":
        msg = "is not a recognized field"
    text = f"Invalid value for '{param}': {msg}" if param else msg
    if len(errors) > 1 and first["type"] != "missing":
        text += f" ({len(errors) - 1} more problem(s) in the request)"
    return text, param


def new_id(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(12)}"


def model_object(model_id: str, *, created: int, owned_by: str, type_: str, **extra: Any) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, "type": type_, **extra}


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def chat_completion(
    *, id: str, model: str, choices: list[dict[str, Any]], usage: dict[str, int], created: int | None = None
) -> dict[str, Any]:
    return {
        "id": id,
        "object": "chat.completion",
        "created": created or int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }


def chat_chunk(
    *,
    id: str,
    model: str,
    created: int,
    index: int = 0,
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
    choices: bool = True,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": (
            [{"index": index, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
            if choices
            else []
        ),
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk
