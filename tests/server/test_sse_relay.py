"""The SSE relay's cheap path: whole events cut from arbitrary reads, renamed in bulk, [DONE] and errors found."""

from __future__ import annotations

import pytest

from modelyard.backends.upstream_openai import OpenAIUpstream, _Blocks, _done_at
from modelyard.catalog import Deployment
from modelyard.config import DeploymentConfig
from modelyard.errors import UpstreamError
from modelyard.protocols.sse import SSEBlocks, SSEDecoder
from modelyard.types import RawSSE

EVENTS = [b'data: {"id":"c","model":"up-model","choices":[{"delta":{"content":"tok %d"}}]}\n\n' % i for i in range(5)]
STREAM = b"".join(EVENTS) + b"data: [DONE]\n\n"


@pytest.mark.parametrize("crlf", [False, True])
def test_blocks_hold_only_whole_events_whatever_the_reads(crlf: bool) -> None:
    wire = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    for cut in range(1, len(wire)):
        blocks = SSEBlocks()
        out = blocks.feed(wire[:cut]) + blocks.feed(wire[cut:])
        assert out == STREAM
        first = SSEBlocks().feed(wire[:cut])
        assert first.endswith(b"\n\n") or first == b""  # never half an event


def test_done_is_found_only_as_a_data_event() -> None:
    assert _done_at(STREAM) == len(b"".join(EVENTS))
    assert _done_at(b"data: [DONE]\n\n") == 0
    assert _done_at(b'data: {"choices":[{"delta":{"content":"[DONE]"}}]}\n\n') == -1


def _upstream() -> OpenAIUpstream:
    cfg = DeploymentConfig(name="a", backend="openai", base_url="http://127.0.0.1:9/v1", model="up-model")
    return OpenAIUpstream(Deployment("public", "a", cfg), shared={})


def _collect(upstream: OpenAIUpstream, pieces: list[bytes]) -> list[bytes]:
    """What the relay yields for these reads (the transport's pieces, fed to its per-read step)."""
    blocks = _Blocks(upstream._renamer("public"), upstream._event)
    out: list[bytes] = []
    for piece in pieces:
        out.extend(blocks.feed(piece))
        if blocks.ended:
            break
    blocks.finish(upstream.name)
    return out


def test_relay_renames_in_bulk_and_stops_at_done() -> None:
    for cut in (7, 50, len(STREAM) - 3):
        out = _collect(_upstream(), [STREAM[:cut], STREAM[cut:]])
        assert all(isinstance(c, RawSSE) for c in out)
        events = SSEDecoder().feed(b"".join(out))
        assert len(events) == len(EVENTS)  # [DONE] is the route's to send
        assert all(b'"model":"public"' in data and b"up-model" not in data for _, data in events)


def test_relay_raises_on_an_error_event_after_the_good_ones() -> None:
    upstream = _upstream()
    broken = EVENTS[0] + b'data: {"error":{"message":"overloaded"}}\n\n'
    with pytest.raises(UpstreamError, match="overloaded"):
        _collect(upstream, [broken])
    blocks = _Blocks(upstream._renamer("public"), upstream._event)
    sent = blocks.feed(broken)  # the good event still goes out, then the stream fails
    assert [bytes(c) for c in sent] == [EVENTS[0][6:-2].replace(b"up-model", b"public")] and blocks.ended
    with pytest.raises(UpstreamError, match="overloaded"):
        blocks.finish(upstream.name)


def test_relay_with_no_whole_event_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="without sending a whole event"):
        _collect(_upstream(), [b'data: {"id":'])
