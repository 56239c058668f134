"""`modelyard doctor`: check what a deployment of Modelyard depends on and print what is wrong and how to fix it.

Each check is one row (check, OK / WARN / FAIL, what was found, how to fix it); the command exits 1 when any row
FAILs. Checks run with the same configuration `serve` would use: the database and its schema, the key that opens
stored secrets, Redis, object storage (a probe object written, read and deleted), each configured deployment (a
tiny request: one token of chat, the embedding of "ok"; local runtimes are checked for their packages, not loaded),
registered workers and their heartbeats, the clock against PostgreSQL's, and a spool the write-behind left.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from ..config import Settings
from ..types import Task

OK, WARN, FAIL = "OK", "WARN", "FAIL"
UPSTREAM_KINDS = ("openai", "anthropic", "gemini")
CLOCK_SKEW_WARN_SECONDS = 2.0  # leases, heartbeats and signed links assume clocks agree to about this


@dataclass
class Row:
    check: str
    status: str
    detail: str
    fix: str = ""


class Doctor:
    def __init__(self, settings: Settings, *, probe: bool = True, timeout: float = 10.0) -> None:
        self.settings = settings
        self.probe = probe
        self.timeout = timeout
        self.rows: list[Row] = []
        self.store: Any = None

    def add(self, check: str, status: str, detail: str, fix: str = "") -> None:
        self.rows.append(Row(check, status, detail, fix))

    async def _bounded(self, name: str, work: Awaitable[Any]) -> Any:
        return await asyncio.wait_for(work, self.timeout)

    async def run(self) -> list[Row]:
        from ..store.db import Store
        from ..store.secrets import SecretBox, SecretKeyError

        s = self.settings
        try:
            box = SecretBox.from_settings(s)
        except SecretKeyError as exc:
            box = None
            self.add("secrets key", FAIL, str(exc), "set MODELYARD_SECRET_KEY to the key the servers use")
        self.store = Store(s.resolved_database_url, secrets=box)
        try:
            if await self.database():
                if box is not None:
                    await self.secrets(box)
                await self.workers(box)
                await self.clock()
            await self.redis()
            await self.storage()
            self.spool()
            await self.deployments()
        finally:
            await self.store.aclose()
        return self.rows

    # ---------------------------------------------------------------- the database

    async def database(self) -> bool:
        from sqlalchemy import text

        from ..store.db import alembic_config

        kind = self.store.url.split("+")[0].split(":")[0]
        try:
            await self._bounded("database", self.store.ping())
        except Exception as exc:
            self.add("database", FAIL, f"{kind}: {_short(exc)}",
                     "check database_url (MODELYARD_DATABASE_URL); is the server running and reachable from here?")
            return False
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        try:
            async with self.store.engine.connect() as conn:
                current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except Exception:
            current = None
        if current == head:
            self.add("database", OK, f"{kind}, schema at {head}")
        elif current is None:
            self.add("database", WARN, f"{kind} reachable, no schema yet", "run `modelyard migrate` (serve does too)")
        else:
            self.add("database", WARN, f"{kind}, schema at {current}, newest is {head}",
                     "run `modelyard migrate` (serve does too, at start)")
        return current is not None

    async def secrets(self, box: Any) -> None:
        from ..store.secrets import SecretKeyError, check

        try:
            n = await check(self.store, box)
        except SecretKeyError as exc:
            self.add("secrets at rest", FAIL, str(exc), "put the key that sealed them in MODELYARD_SECRET_KEY "
                     "(after the new one), then `modelyard secrets rotate`")
            return
        self.add("secrets at rest", OK, f"{n} stored secret(s) open with the configured key"
                 + (f" ({box.count} keys: run `modelyard secrets rotate`, then drop the old)" if box.count > 1 else ""))

    async def workers(self, box: Any) -> None:
        from sqlalchemy import select

        from ..store.repo import aware
        from ..store.tables import workers

        async with self.store.engine.connect() as conn:
            rows = (await conn.execute(select(workers.c.name, workers.c.status, workers.c.last_heartbeat,
                                              workers.c.url))).all()
        if not rows:
            self.add("workers", OK, "none registered")
            return
        now = datetime.now(UTC)
        for r in rows:
            age = (now - aware(r.last_heartbeat)).total_seconds()
            if r.status == "online" and age < self.settings.worker_timeout_seconds:
                self.add(f"worker {r.name}", OK, f"last heartbeat {age:.1f} s ago ({r.url})")
            elif r.status == "offline":
                self.add(f"worker {r.name}", WARN, "signed off", "start it again, or ignore a host retired on purpose")
            else:
                self.add(f"worker {r.name}", WARN, f"silent for {age:.0f} s (timeout "
                         f"{self.settings.worker_timeout_seconds:g} s); its models get no traffic",
                         f"is `modelyard worker` running on {r.url}, and can it reach this control plane?")

    async def clock(self) -> None:
        from sqlalchemy import text

        if self.store.is_sqlite:
            self.add("clock", OK, "SQLite: the database shares this machine's clock")
            return
        before = time.time()
        async with self.store.engine.connect() as conn:
            db_now = (await conn.execute(text("SELECT extract(epoch from clock_timestamp())"))).scalar()
        after = time.time()
        skew = float(db_now) - (before + after) / 2
        if abs(skew) > CLOCK_SKEW_WARN_SECONDS:
            self.add("clock", WARN, f"this machine is {skew:+.1f} s off the database's clock",
                     "run NTP (chrony, systemd-timesyncd) on every host: leases and heartbeats compare times")
        else:
            self.add("clock", OK, f"{skew:+.3f} s from the database's clock")

    # ---------------------------------------------------------------- services beside it

    async def redis(self) -> None:
        url = self.settings.redis_url
        if not url:
            self.add("redis", OK, "not configured: rate limits count per process")
            return
        try:
            import redis.asyncio as aioredis
        except ImportError:
            self.add("redis", FAIL, "redis_url is set but the redis package is missing",
                     "pip install 'modelyard[redis]'")
            return
        client = aioredis.from_url(url, socket_timeout=self.timeout)
        try:
            await self._bounded("redis", client.ping())
            self.add("redis", OK, "answers PING")
        except Exception as exc:
            self.add("redis", FAIL, _short(exc), "check redis_url (MODELYARD_REDIS_URL) and that Redis runs")
        finally:
            await client.aclose()

    async def storage(self) -> None:
        from ..storage import build_storage

        s = self.settings
        where = s.storage.bucket if s.storage.backend == "s3" else str(s.storage.path or s.data_dir)
        key = f"doctor/probe-{secrets.token_hex(6)}"
        try:
            storage = build_storage(s)
        except Exception as exc:
            self.add("storage", FAIL, f"{s.storage.backend}: {_short(exc)}", "check the storage: settings")
            return
        try:
            async def one(data: bytes) -> AsyncIterator[bytes]:
                yield data
            await self._bounded("storage", storage.put(key, one(b"ok")))
            got = b"".join([c async for c in storage.get(key)])
            await storage.delete(key)
            if got != b"ok":
                raise RuntimeError("read back something else than was written")
            self.add("storage", OK, f"{s.storage.backend} ({where}): wrote, read and deleted a probe object")
        except Exception as exc:
            fix = ("check the bucket, endpoint_url and keys (AWS_ACCESS_KEY_ID / MODELYARD_STORAGE__ACCESS_KEY_ID)"
                   if s.storage.backend == "s3" else "check the data dir exists and this user may write to it")
            self.add("storage", FAIL, f"{s.storage.backend} ({where}): {_short(exc)}", fix)
        finally:
            await storage.aclose()

    def spool(self) -> None:
        folder = self.settings.resolved_spool_dir
        files = sorted(folder.glob("spool-*.jsonl")) if folder.exists() else []
        if files:
            size = sum(f.stat().st_size for f in files)
            self.add("write-behind spool", WARN, f"{len(files)} file(s), {size} bytes in {folder} not yet written",
                     "a server or runner on this data dir replays them when it starts; is the database reachable?")
        rejected = folder / "rejected.jsonl"
        if rejected.exists():
            self.add("write-behind rejects", WARN, f"{rejected} holds records the database refused",
                     "read the errors in it; they are never retried on their own")

    # ---------------------------------------------------------------- deployments

    async def deployments(self) -> None:
        from ..backends.factory import create_backend
        from ..catalog import build_catalog

        try:
            catalog = build_catalog(self.settings)
        except Exception as exc:
            self.add("catalog", FAIL, _short(exc), "fix the models: section of the config")
            return
        configured = {m.id for m in self.settings.models}
        shared: dict[str, Any] = {}
        backends = []
        try:
            for model in catalog:
                for d in model.deployments:
                    name = f"{model.id}/{d.name} ({d.config.backend})"
                    kind = d.config.backend
                    if kind == "worker":
                        continue  # rows of their own, under workers
                    try:
                        backend = create_backend(d, shared=shared)
                    except Exception as exc:
                        self.add(name, FAIL, _short(exc), "fix this deployment's settings")
                        continue
                    backends.append(backend)
                    missing = getattr(backend, "missing", None)
                    gap = missing() if callable(missing) else None
                    if gap:
                        self.add(name, WARN if model.id not in configured else FAIL, gap,
                                 "install what it names (pip install 'modelyard[local]'), or drop the model")
                        continue
                    if kind not in UPSTREAM_KINDS and kind != "echo":
                        if model.id in configured:
                            self.add(name, OK, "local runtime; installed (not loaded by doctor)")
                        continue
                    if not self.probe:
                        self.add(name, OK, "not probed (--no-probe)")
                        continue
                    await self._probe(name, model, backend, d)
        finally:
            for backend in backends:
                try:
                    await backend.aclose()
                except Exception:
                    pass

    async def _probe(self, name: str, model: Any, backend: Any, d: Any) -> None:
        from ..protocols.openai.media import EmbeddingRequest
        from ..protocols.openai.schema import ChatRequest

        call: Callable[[], Awaitable[Any]]
        if Task.CHAT in model.tasks:
            req = ChatRequest(model=model.id, messages=[{"role": "user", "content": "ok"}], max_tokens=1)
            call, what = (lambda: backend.chat(req, model.id)), "one token of chat"
        elif Task.EMBEDDING in model.tasks and hasattr(backend, "embed"):
            ereq = EmbeddingRequest(model=model.id, input="ok")
            call, what = (lambda: backend.embed(ereq, model.id)), 'the embedding of "ok"'
        else:
            self.add(name, OK, f"not probed: {', '.join(sorted(t.value for t in model.tasks))} calls cost "
                     "real money or time; try one by hand")
            return
        started = time.monotonic()
        try:
            await asyncio.wait_for(call(), self.timeout)
        except TimeoutError:
            self.add(name, FAIL, f"no answer to {what} within {self.timeout:g} s",
                     f"is {d.config.base_url or 'the upstream'} reachable from here? (--timeout raises the wait)")
            return
        except Exception as exc:
            self.add(name, FAIL, _short(exc), _upstream_fix(str(exc), d.config))
            return
        self.add(name, OK, f"answered {what} in {(time.monotonic() - started) * 1000:.0f} ms")


def _upstream_fix(message: str, cfg: Any) -> str:
    low = message.lower()
    if "cannot connect" in low or "timed out" in low or "connect" in low and "refused" in low:
        return f"is the upstream running? check base_url ({cfg.base_url}) and that this host can reach it"
    if "credentials" in low or "(401)" in low or "(403)" in low:
        return "check this deployment's api_key (${ENV_VAR} or ${file:/path} in the config)"
    if "404" in low:
        return f"check model: (the name the upstream knows: {cfg.model or 'unset, the public id is sent'}) and " \
               "that base_url ends where the API starts (…/v1)"
    if "429" in low:
        return "the upstream is rate-limiting this key: lower max_concurrency or raise the upstream's quota"
    return "read the detail; the upstream's own status page or logs say more"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def render(rows: list[Row]) -> str:
    cols = ("check", "status", "detail", "fix")
    widths = {c: min(60, max([len(c)] + [len(getattr(r, c)) for r in rows])) for c in cols[:-1]}
    lines = ["  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols).rstrip()]
    for r in rows:
        lines.append("  ".join([r.check.ljust(widths["check"]), r.status.ljust(widths["status"]),
                                r.detail.ljust(widths["detail"]), r.fix]).rstrip())
    return "\n".join(lines)


def run_doctor(settings: Settings, *, as_json: bool = False, probe: bool = True, timeout: float = 10.0) -> int:
    rows = asyncio.run(Doctor(settings, probe=probe, timeout=timeout).run())
    if as_json:
        print(json.dumps([asdict(r) for r in rows], indent=2))
    else:
        print(render(rows))
        bad = [r for r in rows if r.status != OK]
        print(f"\n{len(rows)} checks: {sum(r.status == FAIL for r in rows)} failed, "
              f"{sum(r.status == WARN for r in rows)} warnings" if bad else f"\n{len(rows)} checks: all OK")
    return 1 if any(r.status == FAIL for r in rows) else 0
