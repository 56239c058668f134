"""Log lines: human-readable text or one JSON object per line, each with its request id (and trace id when tracing),
and every known secret masked on its way out.

The server sets `REQUEST` at the start of every HTTP request (`server/fastlane.py`); what happens under it — the
router's failed upstream attempts, the ≥ 500 answer — writes into that one object, so each line can say which
request, model, deployment, upstream status and attempt it is about. Masking is defense in depth: no code logs a key
on purpose; the formatter still masks our key formats (`myd_…`, `whsec_…`), bearer credentials, `?key=` query values
and every secret the settings hold (admin key, upstream API keys and headers, webhook and media secrets, storage
keys) in whatever reaches a handler, tracebacks included.
"""

from __future__ import annotations

import logging
import re
import sys
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Iterable

import orjson

from .tracing import current_ids

if TYPE_CHECKING:
    from .config import Settings


class RequestInfo:
    """What log lines of one request share: its id, and what the router learned when an upstream failed. Made for
    every request, so making one sets the id alone (the rest are class defaults until a failure sets them)."""

    model: str | None = None
    deployment: str | None = None
    upstream_status: int | None = None
    attempt: int | None = None

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id


REQUEST: ContextVar[RequestInfo | None] = ContextVar("modelyard_request", default=None)

MASK = "***"
# our API keys and worker serving keys (store/repo.new_secret), webhook signing secrets (jobs/webhooks.org_secret),
# an Authorization header's credential, and a key in a query string (Gemini's ?key=)
_PATTERNS = [r"myd_[A-Za-z0-9_\-]{16,}", r"whsec_[A-Za-z0-9+/=]{16,}",
             r"(?P<bearer>[Bb]earer )[^\s'\"<>]{8,}",
             r"(?P<query>[?&](?:key|api_key|api-key|token|access_token)=)[^&\s'\"]+"]
MIN_LITERAL = 6  # a configured secret shorter than this is not masked as a literal (it would mask ordinary words)
# LogRecord's own attributes: anything else on a record came through `extra=` and goes into the JSON object
_RESERVED = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}


class Redactor:
    """Masks secrets in finished log text."""

    def __init__(self, literals: Iterable[str | None] = ()) -> None:
        known = {s for s in literals if s and len(s) >= MIN_LITERAL}
        known |= {orjson.dumps(s).decode()[1:-1] for s in known}  # as it reads inside a JSON line
        ordered = sorted(known, key=len, reverse=True)  # a secret containing another is masked whole
        self._pattern = re.compile("|".join([*(re.escape(s) for s in ordered), *_PATTERNS]))

    def __call__(self, text: str) -> str:
        return self._pattern.sub(_masked, text)


def _masked(match: re.Match[str]) -> str:
    """The secret masked; what introduced it (`Bearer `, `?key=`) kept, so the line still reads."""
    return (match["bearer"] or match["query"] or "") + MASK


def settings_secrets(settings: Settings) -> list[str | None]:
    """Every secret the settings hold."""
    found: list[str | None] = [settings.admin_key, settings.webhook_secret, settings.media_secret,
                               settings.storage.secret_access_key, settings.storage.access_key_id]
    if settings.worker is not None:
        found.append(settings.worker.token)
    for model in settings.models:
        for d in model.deployments:
            found.append(d.api_key)
            found.extend(d.headers.values())  # custom auth headers (x-api-key, api-key, ...)
    return found


def _context(record: logging.LogRecord) -> tuple[RequestInfo | None, tuple[str, str] | None]:
    return REQUEST.get(), current_ids()


class TextFormatter(logging.Formatter):
    """`time LEVEL logger [request id]: message`, masked."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(request)s: %(message)s")
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        info, _ = _context(record)
        record.request = f" [{info.request_id}]" if info is not None else ""
        return self.redact(super().format(record))


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, trace_id/span_id when traced, the
    record's `extra=` fields, and the traceback as `exception`; masked as a whole."""

    def __init__(self, redact: Redactor) -> None:
        super().__init__()
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        info, ids = _context(record)
        out: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage(),
            "request_id": info.request_id if info is not None else None,
        }
        if ids is not None:
            out["trace_id"], out["span_id"] = ids
        for key, value in vars(record).items():
            if key not in _RESERVED and key != "request" and key not in out:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        text = orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        return self.redact(text)


def formatter(settings: Settings) -> logging.Formatter:
    redact = Redactor(settings_secrets(settings))
    return JSONFormatter(redact) if settings.log_format == "json" else TextFormatter(redact)


def setup_logging(settings: Settings) -> None:
    """The process's logging, from its settings (the CLI and `serve --workers N`'s worker processes call this
    once, before the app exists). uvicorn's own loggers propagate here (`log_config=None`), so its lines are
    formatted and masked the same way."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(settings))
    logging.basicConfig(level=settings.log_level.upper(), handlers=[handler], force=True)
