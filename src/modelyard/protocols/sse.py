"""Server-sent events framing."""

from __future__ import annotations

from typing import Any

import orjson

from ..types import RawJSON, RawSSE

DONE = b"data: [DONE]\n\n"


def encode_data(payload: Any) -> bytes:
    """One `data:` event; bytes pass through unchanged, objects are serialized once; RawSSE is already framed."""
    if isinstance(payload, RawSSE):
        return payload
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
        self._buf += chunk
        if b"\r" in self._buf:  # on the joined buffer: a CRLF may straddle two reads
            self._buf = self._buf.replace(b"\r\n", b"\n")
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


class SSEBlocks:
    """Cuts a byte stream into blocks of whole events without parsing them: a relay's cheap path.

    Each `feed` returns the complete events received so far as one block (b"" if none), keeping a partial event
    for the next call. Upstreams that frame with CRLF are normalised to LF, as SSEDecoder does.
    """

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> bytes:
        buf = self._buf + chunk if self._buf else chunk
        if b"\r" in buf:  # on the joined buffer: a CRLF may straddle two reads
            buf = buf.replace(b"\r\n", b"\n")
        end = buf.rfind(b"\n\n")
        if end < 0:
            self._buf = buf
            return b""
        self._buf = buf[end + 2:]
        return buf[:end + 2]
