"""Validating a batch's input file, line by line as it streams: OpenAI's rules, each failure naming its line."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator, Awaitable, Callable

import orjson

from ..errors import ModelyardError
from .endpoints import Endpoint, check_model, model_name

if TYPE_CHECKING:
    from ..context import AppContext

MAX_ERRORS = 100  # a failed batch lists this many problems at most: enough to fix a file, bounded in the row
# (line, custom_id, model, task, body), handed over in chunks as they validate
Row = tuple[int, str, str, str, dict[str, Any]]


@dataclass
class Outcome:
    lines: int = 0
    model: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    def error(self, code: str, message: str, line: int | None = None, param: str | None = None) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


async def validate(ctx: AppContext, endpoint: Endpoint, plan: str, source: AsyncIterator[tuple[int, bytes]],
                   accept: Callable[[list[Row]], Awaitable[None]], *, chunk: int = 500) -> Outcome:
    """Check every line; valid rows go to `accept` a chunk at a time (they are discarded by the caller if any line
    fails). Memory holds one chunk and the set of custom_ids, whatever the file's size."""
    s = ctx.settings
    out = Outcome()
    seen: set[str] = set()
    pending: list[Row] = []
    size = 0
    async for n, raw in source:
        size += len(raw) + 1
        if not raw.strip():
            continue  # a trailing newline's empty line is not a request
        out.lines += 1
        if out.lines > s.batch_max_lines:
            out.error("too_many_requests", f"A batch holds at most {s.batch_max_lines} requests.", n)
            break
        if size > s.batch_max_input_bytes:
            out.error("file_too_large", f"A batch's input file is at most {s.batch_max_input_bytes} bytes.", n)
            break
        row = _check(ctx, endpoint, plan, n, raw, seen, out)
        if row is None or out.errors:
            continue
        if out.model is None:
            out.model = row[2]
        pending.append(row)
        if len(pending) >= chunk:
            await accept(pending)
            pending = []
    if not out.errors and out.lines == 0:
        out.error("empty_file", "The input file has no requests.")
    if pending and not out.errors:
        await accept(pending)
    return out


def _check(ctx: AppContext, endpoint: Endpoint, plan: str, n: int, raw: bytes, seen: set[str],
           out: Outcome) -> Row | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        out.error("invalid_json_line", f"Line {n} is not valid JSON.", n)
        return None
    if not isinstance(obj, dict):
        out.error("invalid_json_line", f"Line {n} is not a JSON object.", n)
        return None
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        out.error("missing_required_parameter", "Every request needs a 'custom_id' string.", n, "custom_id")
        return None
    if custom_id in seen:
        out.error("duplicate_custom_id", f"The custom_id '{custom_id[:64]}' appears more than once.", n, "custom_id")
        return None
    seen.add(custom_id)
    if obj.get("method") != "POST":
        out.error("invalid_method", "'method' must be 'POST'.", n, "method")
        return None
    if obj.get("url") != endpoint.url:
        out.error("invalid_url", f"'url' must be the batch's endpoint, '{endpoint.url}'.", n, "url")
        return None
    body = obj.get("body")
    if not isinstance(body, dict):
        out.error("missing_required_parameter", "'body' must be a JSON object.", n, "body")
        return None
    name = model_name(body)
    try:
        check_model(ctx, endpoint, name, plan)
    except ModelyardError as exc:
        out.error(exc.code or "invalid_request", exc.message, n, exc.param)
        return None
    return n, custom_id, name or "", endpoint.task.value, body
