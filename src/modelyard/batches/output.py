"""The output and error files: one JSON line per input line, streamed from the lines' rows into the file store."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, AsyncIterator

import orjson

from .lines import BatchLines, Ended

if TYPE_CHECKING:
    from ..context import AppContext
    from .repo import Batch

FLUSH_BYTES = 64 * 1024  # what one chunk handed to the file store holds
NEVER_RAN = {"expired": ("batch_expired", "This request could not be executed before the completion window "
                                          "expired."),
             "cancelled": ("batch_cancelled", "This request was not executed because the batch was cancelled.")}


@dataclass
class Totals:
    input_tokens: int = 0
    output_tokens: int = 0
    lines: int = field(default=0)

    def usage(self) -> dict[str, Any]:
        """OpenAI's batch `usage`: the sum of what each completed line was settled on."""
        return {"input_tokens": self.input_tokens, "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens, "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens}


def render(line: Ended, ending: str | None) -> dict[str, Any]:
    """OpenAI's request output object. A call that answered (2xx, or a 4xx/5xx, refusals at admission included)
    has `response`; a line that never ran (cancelled, expired, its runner lost) has `error`."""
    out: dict[str, Any] = {"id": "batch_req_" + line.id.removeprefix("job_"), "custom_id": line.meta.get("custom_id"),
                           "response": None, "error": None}
    if line.status == "completed":
        out["response"] = {"status_code": 200, "request_id": line.id, "body": line.result}
        return out
    err = line.error or {}
    status = err.get("status")
    if isinstance(status, int):
        out["response"] = {"status_code": status, "request_id": line.id, "body": {"error": {
            "message": err.get("message"), "type": err.get("type"), "param": err.get("param"),
            "code": err.get("code")}}}
        return out
    code, message = err.get("code") or "batch_failed", err.get("message") or "The request did not run."
    if line.status == "cancelled" and ending in NEVER_RAN:
        code, message = NEVER_RAN[ending]
    out["error"] = {"code": code, "message": message}
    return out


async def _jsonl(lines: AsyncIterator[Ended], ending: str | None, totals: Totals) -> AsyncIterator[bytes]:
    buf = bytearray()
    async for line in lines:
        totals.lines += 1
        units = line.meta.get("settle_units") if line.status == "completed" else None
        if units:
            totals.input_tokens += int(units.get("input_tokens") or 0)
            totals.output_tokens += int(units.get("output_tokens") or 0)
        buf += orjson.dumps(render(line, ending)) + b"\n"
        if len(buf) >= FLUSH_BYTES:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def write(ctx: AppContext, lines: BatchLines, batch: Batch, *, completed: bool,
                totals: Totals) -> str:
    """Stream the batch's completed lines (or the others) into a `batch_output` file; returns its id."""
    suffix = "output" if completed else "error"
    chunks = _jsonl(lines.ended(batch.id, completed=completed), batch.ending, totals)
    created = await ctx.files.create(batch.org_id, purpose="batch_output", filename=f"{batch.id}_{suffix}.jsonl",
                                     chunks=chunks, expires_after_seconds=batch.output_expires_after)
    return created.id


async def usage_only(lines: BatchLines, batch: Batch) -> Totals:
    """The usage of a batch whose output file an earlier (interrupted) finalization already wrote."""
    totals = Totals()
    async for _ in _jsonl(lines.ended(batch.id, completed=True), batch.ending, totals):
        pass
    return totals


async def _never_validated(source: AsyncIterator[tuple[int, bytes]], counted: list[int]) -> AsyncIterator[bytes]:
    """Each request of an input file as `batch_cancelled` (its custom_id as written, null where the line has none)."""
    code, message = NEVER_RAN["cancelled"]
    buf = bytearray()
    async for _, raw in source:
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            obj = None
        custom_id = obj.get("custom_id") if isinstance(obj, dict) else None
        counted[0] += 1
        buf += orjson.dumps({"id": "batch_req_" + secrets.token_hex(12),
                             "custom_id": custom_id if isinstance(custom_id, str) else None,
                             "response": None, "error": {"code": code, "message": message}}) + b"\n"
        if len(buf) >= FLUSH_BYTES:
            yield bytes(buf)
            buf.clear()
    if buf:
        yield bytes(buf)


async def write_cancelled_input(ctx: AppContext, batch: Batch, max_line_bytes: int) -> tuple[str | None, int]:
    """The error file of a batch cancelled before its validation finished, streamed from its input file: every
    request `batch_cancelled`, as OpenAI accounts for them. (its id, None without requests; the request count)"""
    counted = [0]
    chunks = _never_validated(ctx.files.lines(batch.org_id, batch.input_file_id, max_line_bytes=max_line_bytes),
                              counted)
    first = await anext(chunks, None)
    if first is None:
        return None, 0

    async def all_chunks() -> AsyncIterator[bytes]:
        yield first
        async for chunk in chunks:
            yield chunk
    created = await ctx.files.create(batch.org_id, purpose="batch_output", filename=f"{batch.id}_error.jsonl",
                                     chunks=all_chunks(), expires_after_seconds=batch.output_expires_after)
    return created.id, counted[0]
