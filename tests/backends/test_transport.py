"""The lean upstream transport on raw sockets: stale keep-alive, chunked bodies, refused connections, cancels."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.backends.transport import Pool, TransportError

from ..support.servers import free_port


async def serve(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(next(l.split(b":")[1] for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")))
    return head + await reader.readexactly(length)


async def test_a_kept_alive_connection_the_server_dropped_is_replaced():
    served = 0
    closed = asyncio.Event()

    async def handler(reader, writer):
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
        await writer.drain()
        writer.close()  # keep-alive was promised, yet the server goes away: the next call must not fail
        await writer.wait_closed()
        closed.set()

    server, port = await serve(handler)
    pool = Pool(f"http://127.0.0.1:{port}/v1", limit=4)
    for _ in range(3):
        resp = await pool.post("/x", b"{}", {}, connect_timeout=2)
        assert resp.status == 200 and await resp.read() == b"{}"
        resp.release()
        await closed.wait()  # the pool holds a connection the server has closed
        closed.clear()
    assert served == 3
    await pool.close()
    server.close()


async def test_chunked_body_arrives_in_pieces_and_connection_is_reused():
    connections = 0

    async def handler(reader, writer):
        nonlocal connections
        connections += 1
        for _ in range(2):
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
            for piece in (b"data: 1\n\n", b"data: 2\n\n"):
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                await writer.drain()
                await asyncio.sleep(0.02)
            writer.write(b"0\r\n\r\n")
            await writer.drain()

    server, port = await serve(handler)
    pool = Pool(f"http://127.0.0.1:{port}", limit=2)
    for _ in range(2):
        resp = await pool.post("/s", b"{}", {}, connect_timeout=2)
        pieces = [p async for p in resp.iter_any()]
        resp.release()
        assert b"".join(pieces) == b"data: 1\n\ndata: 2\n\n" and len(pieces) >= 2
    assert connections == 1
    await pool.close()
    server.close()


async def test_refused_connection_and_idle_timeout_are_transport_errors():
    pool = Pool(f"http://127.0.0.1:{free_port()}", limit=2)
    with pytest.raises(TransportError):
        await pool.post("/x", b"{}", {}, connect_timeout=1)

    async def silent_body(reader, writer):
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.Event().wait()  # and not a byte more

    server, port = await serve(silent_body)
    pool = Pool(f"http://127.0.0.1:{port}", limit=2)
    resp = await pool.post("/x", b"{}", {}, connect_timeout=1)
    with pytest.raises(TransportError):
        async for _ in resp.iter_any(idle_timeout=0.2):
            pass
    resp.release()
    server.close()


async def test_a_cancelled_call_frees_its_slot_and_never_reuses_the_connection():
    async def slow(reader, writer):
        await read_request(reader)
        await asyncio.Event().wait()  # never answers

    server, port = await serve(slow)
    pool = Pool(f"http://127.0.0.1:{port}", limit=1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await pool.post("/x", b"{}", {}, connect_timeout=1)
    assert pool._slots._value == 1 and not pool._idle
    server.close()
