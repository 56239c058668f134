"""Write-behind: records queued off the request path, written in batches, spooled to disk while the database lags.

One `WriteBehind` per process carries every off-path writer (usage rows, wallet movements, token counters, stored
Responses, content-filter events; a request-log writer plugs in the same way): each registers a `Sink` with a kind,
an `encode` (the record as JSON-able data, run in the writer, never on the request path) and an idempotent `write`
(every record carries an id assigned when it was queued, so writing one twice changes nothing).

What holds, and why:

* `put` is synchronous and O(1): the request path never waits for the database.
* A record leaves memory only once it is committed or fsynced in the spool. The writer runs as its own task and
  callers await it through `asyncio.shield`, so cancelling a caller (or shutdown) never cuts a batch in half; the
  old code moved its queue into locals before awaiting, and a CancelledError there dropped the whole batch.
* When a write fails, or one batch write is still running a flush interval later (a locked SQLite file, a
  PostgreSQL that stopped answering), or memory holds more than `max_queue` records, the queue goes to an
  append-only spool file in the data dir, fsynced per batch. A SIGKILL therefore loses at most the records of the
  last flush interval, plus, while a backlog is being written batch by batch (each batch finishing within the
  interval), what that backlog's drain has yet to write: a database that is slow but answering is written to, not
  spooled around, since spooling adds work exactly when the writer is behind. The spool is
  replayed by the live writer once the database answers again, and by the next start (files of processes that are
  gone: each live process holds an flock on its own file).
* Shutdown drains with retries until the grace period ends, then spools what is left: nothing is dropped silently.
  A record the database refuses outright (an integrity error on its own, not a transient failure) is written to
  `rejected.jsonl` next to the spool and logged, never retried forever.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Awaitable, Callable

import orjson
from sqlalchemy.exc import DataError, IntegrityError

log = logging.getLogger(__name__)

Encode = Callable[[Any], dict[str, Any]]
Write = Callable[[list[dict[str, Any]]], Awaitable[None]]
RETRY_MIN, RETRY_MAX = 0.2, 5.0  # seconds between attempts while the database fails


@dataclass(slots=True)
class Sink:
    """One kind of record: how to make it JSON-able, how to write a batch of them (idempotently, by record id)."""

    kind: str
    write: Write
    encode: Encode = field(default=lambda r: r)
    interval: float = 1.0  # seconds a record may wait in memory before the writer takes it
    batch: int = 10_000  # records per transaction


@dataclass(slots=True)
class _Entry:
    seq: int
    at: float  # wall clock when queued: the oldest-unwritten age survives a trip through the spool
    payload: Any


@dataclass
class _Queue:
    sink: Sink
    entries: list[_Entry] = field(default_factory=list)

    def drop_through(self, seq: int) -> None:
        """Forget the head up to `seq`: written or spooled. Only the head ever leaves, so this is a prefix."""
        n = 0
        for e in self.entries:
            if e.seq > seq:
                break
            n += 1
        if n:
            del self.entries[:n]


class Spool:
    """Append-only JSON-lines files in one folder; this process appends to its own file, held under an flock."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tag = f"{os.getpid()}-{time.time_ns()}"
        self._seq = 0
        self._fd: int | None = None
        self._path: Path | None = None
        self.records = 0
        self.bytes = 0
        self.oldest: float | None = None  # wall-clock time of the oldest spooled record (None when empty)

    def scan(self) -> None:
        """Count what earlier processes left behind (at start, so metrics show it before the replay)."""
        if not self.folder.exists():
            return
        for path in sorted(self.folder.glob("spool-*.jsonl")):
            try:
                data = path.read_bytes()
            except OSError:
                continue
            self.bytes += len(data)
            lines = [ln for ln in data.split(b"\n") if ln]
            self.records += len(lines)
            if lines:
                try:
                    at = float(orjson.loads(lines[0])["t"])
                    self.oldest = at if self.oldest is None else min(self.oldest, at)
                except (ValueError, KeyError, TypeError):
                    pass

    def append(self, lines: list[bytes], oldest: float) -> None:
        """Blocking (run in a thread): one write and one fsync per batch."""
        if self._fd is None:
            self.folder.mkdir(parents=True, exist_ok=True)
            self._seq += 1
            self._path = self.folder / f"spool-{self.tag}-{self._seq:06d}.jsonl"
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)  # ours while we live: another process replays it only after we die
            self._fd = fd
            _fsync_dir(self.folder)
        data = b"".join(lines)
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        os.fsync(self._fd)
        self.records += len(lines)
        self.bytes += len(data)
        self.oldest = oldest if self.oldest is None else min(self.oldest, oldest)

    def seal(self) -> None:
        """Close the file being appended to, so a replay can take it whole while new appends go to a new file."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def files(self) -> list[Path]:
        if not self.folder.exists():
            return []
        return sorted(self.folder.glob("spool-*.jsonl"), key=lambda p: p.stat().st_mtime if p.exists() else 0)

    def close(self) -> None:
        self.seal()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _permanent(exc: BaseException) -> bool:
    """A failure the same batch will meet again (a constraint, a bad value), not one that time heals."""
    return isinstance(exc, (IntegrityError, DataError))


class WriteBehind:
    """The process's off-path writer; see the module docstring for what it guarantees."""

    def __init__(self, spool_dir: Path | None, *, max_queue: int = 50_000, grace_seconds: float = 20.0,
                 tick_seconds: float = 1.0, stuck_seconds: float | None = None) -> None:
        self.spool = Spool(spool_dir) if spool_dir is not None else None
        # one batch write running this long counts as hung: memory is spooled meanwhile (the SIGKILL bound). Timed
        # per batch, not per drain: a drain that goes on finishing batches is slow, not hung, and spooling it made
        # an overload worse (bench/overhead.py at 64 connections: ~50,000 records spooled a run, +30% CPU a call)
        self.stuck_seconds = stuck_seconds if stuck_seconds is not None else tick_seconds
        self.max_queue = max_queue
        self.grace_seconds = grace_seconds
        self.tick_seconds = tick_seconds
        self._queues: dict[str, _Queue] = {}
        self._collectors: list[Callable[[bool], None]] = []
        self._seq = 0
        self._lock = asyncio.Lock()  # one drain at a time: the head of each queue is only taken by its holder
        self._spool_lock = asyncio.Lock()
        self._write_started: float | None = None  # monotonic start of the write in flight
        self._failing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.largest_backlog = 0  # most records seen unwritten at once (memory + spool), for the bench and the logs
        self.written = 0
        self.spooled = 0  # records moved from memory to the spool since start (each one written late, replayed)
        self.rejected = 0
        # told of each batch written (kind, rows, seconds), of rejected rows (kind, rows) and, each tick, of
        # `stats()`: the app's metrics (telemetry.Metrics) when they are on
        self.observer: Any = None

    # ---------------------------------------------------------------- producers

    def register(self, sink: Sink) -> None:
        self._queues[sink.kind] = _Queue(sink)

    def collector(self, fn: Callable[[bool], None]) -> None:
        """`fn(due_only)` runs before each drain to `put` what it aggregates in memory (token counters); `due_only`
        is False on an explicit flush and at shutdown, when everything must go."""
        self._collectors.append(fn)

    def put(self, kind: str, payload: Any, at: float | None = None) -> None:
        """Queue one record (never awaits; the request path calls this). `at`: when it was made, if earlier than
        now (a record derived from one already written: due as that one was)."""
        self._seq += 1
        q = self._queues[kind]
        q.entries.append(_Entry(self._seq, time.time() if at is None else at, payload))
        if len(q.entries) > self.max_queue:
            self._wake.set()

    def queued(self, kind: str | None = None) -> list[Any]:
        """What is queued in memory (one kind's payloads, or every kind's)."""
        qs = [self._queues[kind]] if kind else list(self._queues.values())
        return [e.payload for q in qs for e in q.entries]

    def depth(self, kind: str | None = None) -> int:
        if kind is not None:
            return len(self._queues[kind].entries)
        return sum(len(q.entries) for q in self._queues.values())

    def stats(self) -> dict[str, Any]:
        """Queue depth, spool size and the oldest unwritten record's age (for /readyz and /metrics)."""
        now = time.time()
        heads = [q.entries[0].at for q in self._queues.values() if q.entries]
        if self.spool is not None and self.spool.oldest is not None:
            heads.append(self.spool.oldest)
        spooled = self.spool.records if self.spool is not None else 0
        self.largest_backlog = max(self.largest_backlog, self.depth() + spooled)
        return {"queued": self.depth(), "queued_by_kind": {k: len(q.entries) for k, q in self._queues.items()},
                "spool_records": spooled, "spool_bytes": self.spool.bytes if self.spool is not None else 0,
                "oldest_unwritten_seconds": round(max(0.0, now - min(heads)), 3) if heads else 0.0,
                "failing": self._failing, "written": self.written, "spooled": self.spooled, "rejected": self.rejected,
                "largest_backlog": self.largest_backlog}

    # ---------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Begin the background loop; its first drain replays what earlier processes left in the spool."""
        if self.spool is not None:
            await asyncio.to_thread(self.spool.scan)
        self._loop = asyncio.create_task(self._run())
        self._wake.set()

    async def flush(self) -> None:
        """Write everything queued now (memory and spool). A failure is logged and leaves the records queued."""
        try:
            await self._shielded()
        except Exception:
            log.exception("write-behind flush failed; %d records stay queued", self.depth())

    async def aclose(self) -> None:
        """Stop the loop (never mid-write), then drain with retries until the grace period ends; spool the rest."""
        if self._loop is not None:
            self._loop.cancel()
            try:
                await self._loop
            except asyncio.CancelledError:
                pass
            self._loop = None
        deadline = time.monotonic() + self.grace_seconds
        delay = RETRY_MIN
        while True:
            try:
                await asyncio.wait_for(asyncio.shield(self._drain_task()), max(0.0, deadline - time.monotonic()))
                if not self.depth():  # spool files still there belong to live processes (or are replayed next start)
                    break
            except (asyncio.TimeoutError, Exception) as exc:
                if time.monotonic() >= deadline:
                    log.error("shutdown drain did not finish within %.0f s (%s); spooling %d records",
                              self.grace_seconds, type(exc).__name__, self.depth())
                    break
                log.warning("shutdown drain failed (%s); retrying", exc)
            if time.monotonic() >= deadline:
                break
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, RETRY_MAX)
        if self.depth():
            await self._spool_all()
            if self.depth():
                log.error("LOST %d queued records at shutdown: no database and no spool (%s)", self.depth(),
                          "no spool folder" if self.spool is None else "spool write failed")
        if self.spool is not None:
            self.spool.close()

    # ---------------------------------------------------------------- the loop

    async def _run(self) -> None:
        delay = RETRY_MIN
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), self.tick_seconds)
            except asyncio.TimeoutError:
                pass
            self._wake.clear()
            if self.observer is not None:
                self.observer.writer_stats(self.stats())
            if self._failing or self.depth() > self.max_queue:
                await self._spool_all()
            drain = self._drain_task(due_only=True)
            while not drain.done():
                # asyncio.wait never cancels the drain; while it hangs (a locked file, a silent server), whatever
                # arrives is made durable each tick, so a SIGKILL now still loses at most one tick of records
                done, _ = await asyncio.wait({drain}, timeout=self.tick_seconds)
                started = self._write_started
                if not done and started is not None and time.monotonic() - started >= self.stuck_seconds:
                    await self._spool_all()
            exc = drain.exception()
            if exc is None:
                delay = RETRY_MIN
                continue
            log.warning("write-behind: database write failed (%s: %s); %d records queued, %d spooled",
                        type(exc).__name__, exc, self.depth(), self.spool.records if self.spool else 0)
            await self._spool_all()
            await asyncio.sleep(delay)  # not a busy loop against a database that is down
            delay = min(delay * 2, RETRY_MAX)

    def _shielded(self, due_only: bool = False) -> Awaitable[None]:
        return asyncio.shield(self._drain_task(due_only))

    def _drain_task(self, due_only: bool = False) -> asyncio.Task[None]:
        task = asyncio.create_task(self._drain(due_only))
        self._tasks.add(task)  # a shielded task outlives its caller: keep it referenced until it ends
        task.add_done_callback(self._tasks.discard)
        return task

    async def _drain(self, due_only: bool) -> None:
        async with self._lock:
            for collect in self._collectors:
                collect(due_only)
            spooled = self.spool.records if self.spool is not None else 0
            self.largest_backlog = max(self.largest_backlog, self.depth() + spooled)
            self._write_started = time.monotonic()
            try:
                if self.spool is not None and self.spool.records:
                    await self._replay()
                now = time.time()
                for q in self._queues.values():
                    if not q.entries:
                        continue
                    if due_only and now - q.entries[0].at < q.sink.interval and len(q.entries) <= self.max_queue:
                        continue
                    last = q.entries[-1].seq  # what was queued when we began; later records wait for next time
                    while q.entries and q.entries[0].seq <= last:
                        self._write_started = time.monotonic()  # the stuck bound times each batch, not the drain
                        chunk = [e for e in q.entries[:q.sink.batch] if e.seq <= last]
                        rows = await asyncio.to_thread(_encode_all, q.sink.encode, [e.payload for e in chunk])
                        await self._write(q.sink, rows)
                        q.drop_through(chunk[-1].seq)
                        self.written += len(rows)
                if not due_only and self.spool is not None and self.spool.records:
                    # the loop spooled part of what this drain meant to write while one of its batches ran slow
                    # (the stuck-write bound): an explicit flush still owes those records, so replay them now
                    await self._replay()
                self._failing = False
            except BaseException:
                self._failing = True
                raise
            finally:
                self._write_started = None

    async def _write(self, sink: Sink, rows: list[dict[str, Any]]) -> None:
        began = time.monotonic()
        try:
            await sink.write(rows)
            if self.observer is not None:
                self.observer.wrote(sink.kind, len(rows), time.monotonic() - began)
        except Exception as exc:
            if not _permanent(exc) or len(rows) == 1:
                if _permanent(exc):
                    await self._reject(sink.kind, rows, exc)
                    return
                raise
            # one bad record must not hold the rest back forever: write them one by one, reject the bad ones
            for row in rows:
                try:
                    began = time.monotonic()
                    await sink.write([row])
                    if self.observer is not None:
                        self.observer.wrote(sink.kind, 1, time.monotonic() - began)
                except Exception as one:
                    if not _permanent(one):
                        raise
                    await self._reject(sink.kind, [row], one)

    async def _reject(self, kind: str, rows: list[dict[str, Any]], exc: BaseException) -> None:
        self.rejected += len(rows)
        if self.observer is not None:
            self.observer.rejected(kind, len(rows))
        log.error("the database refused %d %s record(s) (%s); kept in rejected.jsonl", len(rows), kind, exc)
        if self.spool is None:
            return
        path = self.spool.folder / "rejected.jsonl"
        lines = [orjson.dumps({"k": kind, "r": r, "error": str(exc)[:500]}) + b"\n" for r in rows]

        def append() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "ab") as f:
                f.write(b"".join(lines))
                f.flush()
                os.fsync(f.fileno())
        await asyncio.to_thread(append)

    # ---------------------------------------------------------------- the spool

    async def _spool_all(self) -> None:
        """Move what is queued in memory to the spool (fsynced) and forget it from memory."""
        if self.spool is None or not self.depth():
            return
        async with self._spool_lock:
            taken: list[tuple[_Queue, list[_Entry]]] = [(q, list(q.entries)) for q in self._queues.values()
                                                         if q.entries]
            if not taken:
                return
            spool = self.spool

            def encode_and_append() -> None:
                lines: list[bytes] = []
                oldest = min(es[0].at for _, es in taken)
                for q, es in taken:
                    for e in es:
                        lines.append(orjson.dumps({"k": q.sink.kind, "t": e.at, "r": q.sink.encode(e.payload)},
                                                  default=str) + b"\n")
                spool.append(lines, oldest)
            try:
                await asyncio.to_thread(encode_and_append)
            except Exception:
                log.exception("could not spool %d records; they stay in memory", sum(len(es) for _, es in taken))
                return
            moved = 0
            for q, es in taken:
                q.drop_through(es[-1].seq)
                moved += len(es)
            self.spooled += moved
            if self.observer is not None:
                self.observer.spooled(moved)
            self.stats()  # updates the largest backlog seen

    async def _replay(self) -> None:
        """Write every spool file we can lock (ours, sealed, and those of dead processes), then delete it."""
        spool = self.spool
        assert spool is not None
        async with self._spool_lock:
            await asyncio.to_thread(spool.seal)
        for path in await asyncio.to_thread(spool.files):
            fd, records = await asyncio.to_thread(_take, path)
            if fd is None:
                continue  # a live process's file, or gone already
            try:
                by_kind: dict[str, list[dict[str, Any]]] = {}
                for rec in records:
                    by_kind.setdefault(rec["k"], []).append(rec["r"])
                for kind, rows in by_kind.items():
                    q = self._queues.get(kind)
                    if q is None:
                        raise RuntimeError(f"spool file {path.name} holds '{kind}' records and no writer takes them")
                    for start in range(0, len(rows), q.sink.batch):
                        self._write_started = time.monotonic()  # replay runs inside a drain: timed per batch too
                        await self._write(q.sink, rows[start:start + q.sink.batch])
                size = await asyncio.to_thread(_remove, path)
                self.written += len(records)
                log.info("replayed %d records from %s", len(records), path.name)
                spool.records = max(0, spool.records - len(records))
                spool.bytes = max(0, spool.bytes - size)
            finally:
                os.close(fd)
        if not spool.files():
            spool.records, spool.bytes, spool.oldest = 0, 0, None


def _encode_all(encode: Encode, payloads: list[Any]) -> list[dict[str, Any]]:
    return [encode(p) for p in payloads]


def _take(path: Path) -> tuple[int | None, list[dict[str, Any]]]:
    """Lock a spool file for replay and read it; (None, []) when another live process holds it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None, []
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None, []
    if not path.exists():  # replayed and removed by someone else while we waited
        os.close(fd)
        return None, []
    records = []
    with os.fdopen(os.dup(fd), "rb") as f:
        for line in f.read().split(b"\n"):
            if not line:
                continue
            try:
                records.append(orjson.loads(line))
            except orjson.JSONDecodeError:
                # a line cut short by a kill mid-append: its batch was never acknowledged (nor dropped from memory)
                log.warning("skipping a torn line in %s", path.name)
    return fd, records


def _remove(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
    except FileNotFoundError:
        return 0
    _fsync_dir(path.parent)
    return size
