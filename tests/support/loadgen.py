"""A load generator for durability tests: keep-alive HTTP/1.1 connections posting chat completions as fast as
the server answers, counting only fully read 200s; prints `progress N` lines, then one JSON summary line.

Run as a script: `python loadgen.py PORT KEY MODEL --connections 16 --calls 20000 --seconds 60`. It stops at the
call or time bound, on SIGTERM (the summary is still printed), or when the server goes away (every connection
refused or reset).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time


async def _worker(port: int, request: bytes, state: dict[str, int], stop_at: float, limit: int) -> None:
    reader = writer = None
    while state["ok"] + state["other"] < limit and time.monotonic() < stop_at and not state["stopped"]:
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(request)
            await writer.drain()
            status_line = await reader.readline()  # type: ignore[union-attr]
            if not status_line:
                raise ConnectionError("closed")
            length, close = 0, False
            while True:
                line = await reader.readline()  # type: ignore[union-attr]
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                if name.lower() == "content-length":
                    length = int(value)
                elif name.lower() == "connection" and "close" in value.lower():
                    close = True
            await reader.readexactly(length)  # type: ignore[union-attr]
            if status_line.split()[1] == b"200":
                state["ok"] += 1
            else:
                state["other"] += 1
            if close:
                writer.close()
                writer = None
        except (OSError, asyncio.IncompleteReadError, ConnectionError):
            # a request cut off unanswered is neither counted as a success nor retried (it may have no row)
            if writer is not None:
                writer.close()
                writer = None
            state["refused"] += 1
            if state["refused"] > 200:  # the server is gone
                return
            await asyncio.sleep(0.05)


async def _progress(state: dict[str, int]) -> None:
    while True:
        await asyncio.sleep(0.2)
        print(f"progress {state['ok']}", flush=True)


async def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("key")
    p.add_argument("model")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--calls", type=int, default=20_000)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--max-tokens", type=int, default=0)
    args = p.parse_args()
    payload: dict = {"model": args.model, "messages": [{"role": "user", "content": "count me"}]}
    if args.max_tokens:
        payload["max_tokens"] = args.max_tokens
    body = json.dumps(payload).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:{args.port}\r\n"
               f"Authorization: Bearer {args.key}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    state = {"ok": 0, "other": 0, "refused": 0, "stopped": 0}
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, state.__setitem__, "stopped", 1)
    ticker = asyncio.create_task(_progress(state))
    stop_at = time.monotonic() + args.seconds
    await asyncio.gather(*(_worker(args.port, request, state, stop_at, args.calls) for _ in range(args.connections)))
    ticker.cancel()
    print(json.dumps(state), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(0)
