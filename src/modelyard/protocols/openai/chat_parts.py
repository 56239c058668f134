"""Pieces of an OpenAI chat request that every provider converter needs: data URLs, tool arguments, finish reasons."""

from __future__ import annotations

import json
import secrets
from typing import Any

from pydantic import ValidationError

from ...errors import InvalidRequest
from .schema import ChatRequest


def split_data_url(url: str, param: str) -> tuple[str, str]:
    """'data:image/png;base64,AAAA' -> ('image/png', 'AAAA')."""
    head, sep, data = url.partition(",")
    if not sep or not head.startswith("data:") or ";base64" not in head:
        raise InvalidRequest("Image data URLs must look like data:image/png;base64,....", param=param)
    return head[5:].split(";", 1)[0] or "application/octet-stream", data


def guess_mime(url: str) -> str:
    lower = url.lower().split("?", 1)[0]
    for ext, mime in ((".png", "image/png"), (".jpg", "image/jpeg"), (".jpeg", "image/jpeg"), (".webp", "image/webp"),
                      (".gif", "image/gif")):
        if lower.endswith(ext):
            return mime
    return "image/jpeg"


def parse_arguments(arguments: str, param: str) -> dict[str, Any]:
    """OpenAI carries tool arguments as a JSON string; the other providers want the object."""
    if not arguments:
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidRequest("Tool call arguments must be a JSON object string.", param=param) from None
    if not isinstance(value, dict):
        raise InvalidRequest("Tool call arguments must be a JSON object.", param=param)
    return value


def call_id() -> str:
    return "call_" + secrets.token_hex(12)


def tool_call(id_: str, name: str, arguments: Any) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, separators=(",", ":"))
    return {"id": id_, "type": "function", "function": {"name": name, "arguments": args}}


def json_instruction(response_format: Any) -> str | None:
    """For providers without a JSON mode: the instruction that asks for one."""
    if response_format is None or response_format.type == "text":
        return None
    if response_format.type == "json_schema":
        schema = json.dumps(response_format.json_schema.get("schema", {}))
        return f"Respond with only a JSON value that matches this JSON schema: {schema}"
    return "Respond with only a valid JSON object."


def data_url(mime: str, data: str) -> str:
    """The inverse of `split_data_url`: how base64 image bytes travel inside an OpenAI chat request."""
    return f"data:{mime or 'application/octet-stream'};base64,{data}"


def loads_object(arguments: str) -> dict[str, Any]:
    """Tool arguments a model produced, as the object other dialects carry; text that is not an object is kept."""
    try:
        value = json.loads(arguments) if arguments else {}
    except ValueError:
        return {"_raw": arguments}  # a small model's broken JSON must still reach the client, not crash the reply
    return value if isinstance(value, dict) else {"_value": value}


def chunk_dict(chunk: Any) -> dict[str, Any]:
    """A chat stream chunk as a dict: upstream chunks travel as their raw JSON bytes."""
    return json.loads(chunk) if isinstance(chunk, (bytes, bytearray)) else chunk


def usage_numbers(usage: dict[str, Any] | None) -> tuple[int, int]:
    """(prompt, completion) tokens from an OpenAI usage object (absent counts are 0)."""
    usage = usage or {}
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)


def validate_chat(body: dict[str, Any], fields: dict[str, str], default: str) -> Any:
    """Validate a converted request as our ChatRequest; a rule only it enforces names the client's own field.

    `fields` maps our top-level field names to the dialect's (stop -> stop_sequences); others blame `default`.
    """
    try:
        return ChatRequest.model_validate(body)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        loc = first.get("loc") or ()
        param = fields.get(str(loc[0]), default) if loc else default
        raise InvalidRequest(f"Invalid value for '{param}': {first['msg'].removeprefix('Value error, ')}",
                             param=param) from None
