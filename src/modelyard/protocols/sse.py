"""Server-sent events framing."""

from __future__ import annotations

from typing import Any

import orjson

from ..types import RawJSON

DONE = b"data: [DONE]\n\n"


def encode_data(payload: Any) -> bytes:
    """One `data:` event; bytes pass through unchanged, objects are serialized once."""
    body = payload if isinstance(payload, (bytes, RawJSON)) else orjson.dumps(payload)
    return b"data: " + body + b"\n\n"


def encode_event(event: str, payload: Any) -> bytes:
    body = payload if isinstance(payload, (bytes, RawJSON)) else orjson.dumps(payload)
    return b"event: " + event.encode() + b"\ndata: " + body + b"\n\n"


class SSEDecoder:
    """Incremental parser: feed bytes, get complete (event, data) pairs; tolerant of CRLF and split frames."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[tuple[str | None, bytes]]:
        self._buf += chunk.replace(b"\r\n", b"\n")
        out: list[tuple[str | None, bytes]] = []
        while True:
            end = self._buf.find(b"\n\n")
            if end < 0:
                return out
            frame, self._buf = self._buf[:end], self._buf[end + 2:]
            event: str | None = None
            data: list[bytes] = []
            for line in frame.split(b"\n"):
                if line.startswith(b"data:"):
                    data.append(line[5:].lstrip(b" ") if line[5:6] == b" " else line[5:])
                elif line.startswith(b"event:"):
                    event = line[6:].strip().decode()
            if data:
                out.append((event, b"\n".join(data)))
