"""Load generators for the long-stream and memory benches, run as their own process (uvloop, raw asyncio protocols
and httptools: the least Python per chunk, so the client leaves the gateway its core).

    python bench/loadgen.py streams --url URL --model M --streams N [--ramp S] [--key K]
        N concurrent streaming chat requests opened over S seconds; every chunk's delay is its arrival here minus
        the time the stub wrote it (the chunk's id is `t<CLOCK_REALTIME µs>`, see stub_sse.c). Prints one JSON
        object: streams complete, chunks, delay percentiles, time to first chunk, peak open streams.

    python bench/loadgen.py mixed --url URL --calls N --concurrency C --steps K --gateway-pid P [--key K]
        N proxied calls of a fixed mix (JSON, streams, client disconnects, upstream errors before and after the
        first byte) over C keep-alive connections; after every N/K calls it lets the gateway go quiet and prints a
        JSON line with the gateway's RSS, open fds, asyncio tasks and write-behind backlog.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sys
import time
from array import array
from urllib.parse import urlsplit

import httptools

ID = b'"id":"t'


def request(host: str, path: str, key: str | None, body: bytes) -> bytes:
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n{auth}"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def chat(model: str, stream: bool) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": stream},
                      separators=(",", ":")).encode()


def percentile(sorted_values: array, q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


# ---------------------------------------------------------------- concurrent long streams

class Streams:
    def __init__(self) -> None:
        self.delays = array("q")  # µs, one per chunk
        self.ttfb = array("q")  # µs, request written -> first chunk
        self.chunks = 0
        self.complete = 0
        self.failed: dict[str, int] = {}
        self.open = 0
        self.peak_open = 0
        self.pending = 0
        self.late: dict[int, int] = {}  # 100 ms window since the start -> chunks later than 10 ms in it
        self.t0 = time.time_ns() // 1000
        self.all_done = asyncio.get_running_loop().create_future()

    def ended(self, outcome: str | None) -> None:
        if outcome is None:
            self.complete += 1
        else:
            self.failed[outcome] = self.failed.get(outcome, 0) + 1
        self.pending -= 1
        if self.pending == 0 and not self.all_done.done():
            self.all_done.set_result(None)


class StreamConn(asyncio.Protocol):
    __slots__ = ("stats", "req", "parser", "transport", "buf", "now", "sent_at", "first", "status", "done",
                 "seen_done", "opened", "counted")

    def __init__(self, stats: Streams, req: bytes) -> None:
        self.stats = stats
        self.req = req
        self.parser = httptools.HttpResponseParser(self)
        self.buf = b""
        self.now = 0
        self.first = True
        self.status = 0
        self.done = False
        self.seen_done = False
        self.counted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.sent_at = time.time_ns() // 1000
        transport.write(self.req)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.now = time.time_ns() // 1000
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self._end("malformed")

    def on_status(self, _: bytes) -> None:
        self.status = self.parser.get_status_code()

    def on_headers_complete(self) -> None:
        s = self.stats
        s.open += 1
        self.counted = True
        if s.open > s.peak_open:
            s.peak_open = s.open

    def on_body(self, body: bytes) -> None:
        buf = self.buf + body if self.buf else body
        end = buf.rfind(b"\n\n")
        if end < 0:
            self.buf = buf
            return
        self.buf = buf[end + 2:]
        now = self.now
        delays = self.stats.delays
        i = buf.find(ID, 0, end)
        while i >= 0:
            j = buf.index(b'"', i + 7)
            delay = now - int(buf[i + 7:j])
            delays.append(delay)
            if delay > 10_000:
                w = (now - self.stats.t0) // 100_000
                self.stats.late[w] = self.stats.late.get(w, 0) + 1
            self.stats.chunks += 1
            i = buf.find(ID, j, end)
        if self.first:
            self.first = False
            self.stats.ttfb.append(now - self.sent_at)
        if b"data: [DONE]" in buf:
            self.seen_done = True

    def on_message_complete(self) -> None:
        if self.status != 200:
            self._end(f"http_{self.status}")
        else:
            self._end(None if self.seen_done else "no_done")
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done:
            self._end("closed_early")

    def _end(self, outcome: str | None) -> None:
        if self.done:
            return
        self.done = True
        if self.counted:
            self.stats.open -= 1
        self.stats.ended(outcome)


async def run_streams(args: argparse.Namespace) -> dict:
    url = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    stats = Streams()
    stats.pending = args.streams
    req = request(url.netloc, url.path, args.key, chat(args.model, True))
    started = time.monotonic()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)

    async def open_one() -> None:
        try:
            await loop.create_connection(lambda: StreamConn(stats, req), url.hostname, url.port)
        except OSError as exc:
            stats.ended(f"connect: {exc.strerror or exc}")

    opening = []
    for i in range(args.streams):  # evenly over the ramp
        due = started + args.ramp * i / args.streams
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        opening.append(asyncio.ensure_future(open_one()))
    await asyncio.gather(*opening)
    await stats.all_done
    wall = time.monotonic() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    d = array("q", sorted(stats.delays))
    t = array("q", sorted(stats.ttfb))
    ms = 1000.0
    return {"streams": args.streams, "complete": stats.complete, "failed": stats.failed, "chunks": stats.chunks,
            "p50": percentile(d, 0.50) / ms, "p90": percentile(d, 0.90) / ms, "p99": percentile(d, 0.99) / ms,
            "p999": percentile(d, 0.999) / ms, "max": (d[-1] / ms) if d else float("nan"),
            "ttfb_p50": percentile(t, 0.50) / ms, "ttfb_p99": percentile(t, 0.99) / ms,
            "peak_open": stats.peak_open, "wall": wall,
            "late_windows": {f"{w / 10:.1f}s": c for w, c in sorted(stats.late.items(), key=lambda x: -x[1])[:8]},
            "client_cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime)}


# ---------------------------------------------------------------- many mixed calls

# per 100 calls: what each one is (model, stream, client disconnects after the first body piece, expected outcome)
MIX = ([("bench-json", False, False, "200")] * 50 + [("bench-stream", True, False, "200+done")] * 30
       + [("bench-slow", True, True, "disconnect")] * 8 + [("bench-err", False, False, "502")] * 6
       + [("bench-midfail", True, False, "200+error")] * 6)


class Conn(asyncio.Protocol):
    """One keep-alive connection doing one request at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.fut: asyncio.Future | None = None
        self.body: list[bytes] = []
        self.cut = False
        self.closed = False
        self.keep = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, req: bytes, cut: bool) -> asyncio.Future:
        self.fut = asyncio.get_running_loop().create_future()
        self.body = []
        self.cut = cut
        self.transport.write(req)  # type: ignore[union-attr]
        return self.fut

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._resolve(f"malformed: {exc}")
            self.transport.close()  # type: ignore[union-attr]

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        if self.cut and ID in body:  # the first chunk came: hang up mid-stream
            self._resolve("disconnect")
            self.closed = True
            self.transport.close()  # type: ignore[union-attr]

    def on_message_complete(self) -> None:
        status = self.parser.get_status_code()
        self.keep = self.parser.should_keep_alive()
        body = b"".join(self.body)
        if status == 200 and body.startswith(b"data:"):
            outcome = "200+error" if b'{"error"' in body else (
                "200+done" if body.endswith(b"data: [DONE]\n\n") else "200+unfinished")
        else:
            outcome = str(status)
        self._resolve(outcome)

    def _resolve(self, outcome: str) -> None:
        if self.fut is not None and not self.fut.done():
            self.fut.set_result(outcome)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._resolve("closed_early")


async def run_mixed(args: argparse.Namespace) -> None:
    url = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    reqs = [(request(url.netloc, "/v1/chat/completions", args.key, chat(m, s)), cut, want)
            for m, s, cut, want in MIX]
    conns: list[Conn | None] = [None] * args.concurrency
    outcomes: dict[str, int] = {}
    unexpected: dict[str, int] = {}
    issued = 0
    rate_next = [time.monotonic()]

    async def worker(slot: int, stop_at: int) -> None:
        nonlocal issued
        while issued < stop_at:
            i = issued
            issued += 1
            if args.rate:
                t = max(time.monotonic(), rate_next[0])
                rate_next[0] = t + 1.0 / args.rate
                if t > time.monotonic():
                    await asyncio.sleep(t - time.monotonic())
            conn = conns[slot]
            if conn is None or conn.closed or not conn.keep:
                _, conn = await loop.create_connection(Conn, url.hostname, url.port)
                conns[slot] = conn
            req, cut, want = reqs[(i * 37) % len(reqs)]  # a fixed, interleaved order through the mix
            got = await conn.send(req, cut)
            outcomes[got] = outcomes.get(got, 0) + 1
            if got != want:
                unexpected[f"{want}->{got}"] = unexpected.get(f"{want}->{got}", 0) + 1

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from native import cpu_seconds, memory_parts, open_fds, rss_mb, scrape

    def sample(step: int, began: float, cpu0: float) -> dict:
        m = scrape(args.url, ("modelyard_event_loop_tasks", "modelyard_write_behind_queued"))
        return {"calls": issued, "step": step, "elapsed": round(time.monotonic() - began, 1),
                "rss_mb": round(rss_mb(args.gateway_pid), 1), "fds": open_fds(args.gateway_pid),
                **{k: round(v, 1) for k, v in memory_parts(args.gateway_pid).items()},
                "tasks": m.get("modelyard_event_loop_tasks"), "wb_queued": m.get("modelyard_write_behind_queued"),
                "cpu_s": round(cpu_seconds(args.gateway_pid) - cpu0, 1), "outcomes": dict(outcomes),
                "unexpected": dict(unexpected)}

    if args.warmup:
        await asyncio.gather(*(worker(s, args.warmup) for s in range(args.concurrency)))
        await asyncio.sleep(args.settle)
    issued = 0
    outcomes.clear()
    unexpected.clear()
    began = time.monotonic()
    cpu0 = cpu_seconds(args.gateway_pid)
    print(json.dumps(sample(0, began, cpu0)), flush=True)
    per_step = args.calls // args.steps
    for step in range(1, args.steps + 1):
        stop_at = per_step * step if step < args.steps else args.calls
        await asyncio.gather(*(worker(s, stop_at) for s in range(args.concurrency)))
        await asyncio.sleep(args.settle)  # quiet: settlements queued, disconnects' cleanups run
        print(json.dumps(sample(step, began, cpu0)), flush=True)
    for conn in conns:
        if conn is not None and conn.transport is not None:
            conn.transport.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("streams")
    s.add_argument("--url", required=True, help="http://host:port/path/chat/completions")
    s.add_argument("--model", default="bench-sse")
    s.add_argument("--streams", type=int, default=100)
    s.add_argument("--ramp", type=float, default=2.0, help="seconds over which the streams are opened")
    s.add_argument("--key")
    m = sub.add_parser("mixed")
    m.add_argument("--url", required=True, help="the gateway's base URL")
    m.add_argument("--calls", type=int, default=200_000)
    m.add_argument("--concurrency", type=int, default=32)
    m.add_argument("--steps", type=int, default=10)
    m.add_argument("--rate", type=float, default=0.0, help="calls/s at most (0: as fast as it answers)")
    m.add_argument("--warmup", type=int, default=0, help="calls before the first reading (not counted)")
    m.add_argument("--settle", type=float, default=1.0, help="seconds of quiet before each reading")
    m.add_argument("--gateway-pid", type=int, required=True)
    m.add_argument("--key")
    args = ap.parse_args()
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    if args.cmd == "streams":
        print(json.dumps(asyncio.run(run_streams(args))), flush=True)
    else:
        asyncio.run(run_mixed(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
