"""The library service: records every media result as an item (off the request path), reads, saves, deletes."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, Callable

from ..errors import InvalidRequest, NotFound
from ..jobs.tasks import png_size
from ..media import MediaForbidden
from ..net import fetch_bytes
from ..pipeline.auth import Principal
from ..storage.base import MEDIA_PREFIX, ObjectMissing
from ..store.writebehind import Sink, WriteBehind
from .embed import Embedder
from .items import (Found, Item, Media, ext_of, item_id_for_job, media_in_result, name_in_url,
                    new_item_id, prompt_and_params, type_of)
from .repo import LibraryRepo
from .shares import Shares
from .sniff import sniff

if TYPE_CHECKING:
    from ..context import AppContext
    from ..jobs.queue import Job

log = logging.getLogger(__name__)
KIND = "library_item"  # the write-behind kind of recorded items
MAX_SAVE_BYTES = 100 * 1024 * 1024
_KIND_OF_TYPE = {"image": "img", "video": "video", "audio": "audio"}


def source_route(job: Job) -> str:
    """Where a job's item came from, as `source.route` shows it."""
    if job.meta.get("library") == "render":
        return "render"
    if job.meta.get("executor") == "batch_line":
        return "batch"
    if _run_id(job):
        return "agent"
    return str(job.meta.get("face") or "jobs")


def _run_id(job: Job) -> str | None:
    return getattr(job, "run_id", None) or job.meta.get("run_id")


class LibraryService:
    """Items are recorded where media are made: sync routes and job runners call `capture`/`job_ended`, which only
    queue (the process's write-behind writes them in batches; bytes a route never stored are saved by a task of
    ours). The org's `library_autosave` is applied by the writer, so no request waits on reading it."""

    def __init__(self, ctx: AppContext, *, clock: Callable[[], float] = time.time) -> None:
        self.ctx = ctx
        self.repo = LibraryRepo(ctx.store)
        self.clock = clock
        self._own = ctx.gate.writer is None  # no gate's writer (a bare runner context): one of our own, memory only
        self.writer = ctx.gate.writer if ctx.gate.writer is not None else WriteBehind(None, tick_seconds=0.2)
        self.writer.register(Sink(KIND, self._write, encode=Item.encode, interval=0.2, batch=500))
        self.shares = Shares(self, ctx.settings)
        self.embedder = Embedder(self)
        self._tasks: set[asyncio.Task[None]] = set()
        if ctx.jobs is not None:
            ctx.jobs.listeners.append(self.job_ended)

    # ---------------------------------------------------------------- lifecycle

    async def start(self, *, background: bool) -> None:
        """`background`: compute prompt embeddings here (where runners run)."""
        if self._own:
            await self.writer.start()
        if background:
            self.embedder.start()

    async def aclose(self) -> None:
        """Before the write-behind drains: bytes being saved finish and queue their items."""
        await self.embedder.aclose()
        await self.shares.aclose()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        if self._own:
            await self.writer.aclose()

    async def flush(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=30)
        await self.writer.flush()

    # ---------------------------------------------------------------- recording

    def capture(self, org_id: str, model_id: str, task: str, payload: dict[str, Any], *, route: str,
                stored: list[Media] | None = None, raw: list[tuple[bytes, str]] | None = None,
                job_id: str | None = None, run_id: str | None = None, explicit: bool = False,
                item_id: str | None = None) -> None:
        """Record one media result; never awaits. `stored`: media already in the media store; `raw`: bytes the
        caller answered inline (b64_json, speech), saved here in the background when the org keeps them."""
        prompt, params = prompt_and_params(payload)
        item = Item(id=item_id or (item_id_for_job(job_id) if job_id else new_item_id()), org_id=org_id, type="",
                    model_id=model_id, task=task, prompt=prompt, params=params, media=list(stored or []),
                    source_route=route, job_id=job_id, run_id=run_id, created_at=self.clock(), explicit=explicit)
        if raw:
            task_ = asyncio.get_running_loop().create_task(self._save_then_record(item, raw))
            self._tasks.add(task_)
            task_.add_done_callback(self._tasks.discard)
        elif item.media:
            self._record(item)

    def _record(self, item: Item) -> None:
        item.type = type_of(item.media[0].content_type) or "image"
        self.writer.put(KIND, item)
        self.embedder.wake()

    async def _save_then_record(self, item: Item, raw: list[tuple[bytes, str]]) -> None:
        try:
            if not item.explicit and not (await self.repo.autosave({item.org_id})).get(item.org_id, False):
                return  # the org keeps only what it saves: do not store bytes nobody will list
            item.media += await self._save(raw)
            self._record(item)
        except Exception:  # a lost item must not surface anywhere else; say so in the log
            log.exception("recording library item %s failed", item.id)

    async def _save(self, raw: list[tuple[bytes, str]]) -> list[Media]:
        out = []
        for data, content_type in raw:
            ext = ext_of(content_type) or "bin"
            stored = await self.ctx.media.save(data, ext, _KIND_OF_TYPE.get(type_of(content_type) or "", "media"))
            w, h = png_size(data)
            out.append(Media(stored.name, stored.content_type, bytes=len(data), width=w, height=h))
        return out

    def job_ended(self, job: Job) -> None:
        """A JobService listener, wherever the job ran: a completed job with media becomes its item."""
        if job.status != "completed":
            return
        found = media_in_result(job.result)
        if found.stored or found.raw:
            self._capture_job(job, found, explicit=job.meta.get("library") == "render")

    def _capture_job(self, job: Job, found: Found, *, explicit: bool) -> None:
        self.capture(job.org_id, job.model, job.task, job.payload if isinstance(job.payload, dict) else {},
                     route=source_route(job), stored=found.stored, raw=found.raw, job_id=job.id, run_id=_run_id(job),
                     explicit=explicit)

    async def _write(self, records: list[dict[str, Any]]) -> None:
        """The sink: drop what an org with autosave off did not ask for, fill in sizes, insert (idempotently)."""
        orgs = {r["org_id"] for r in records}
        autosave = await self.repo.autosave(orgs) if orgs else {}
        rows = []
        for r in records:
            if r["org_id"] not in autosave or not (r.get("explicit") or autosave[r["org_id"]]):
                continue  # an org deleted since, or one that keeps only what it saves
            row = {k: v for k, v in r.items() if k != "explicit"}
            if any(m.get("bytes") is None for m in row["media"]):
                for m in row["media"]:
                    if m.get("bytes") is None:
                        m["bytes"] = await self.ctx.storage.size(MEDIA_PREFIX + m["name"]) or 0
                    if m.get("width") is None and m.get("content_type") == "image/png":
                        m["width"], m["height"] = await self._png_size(m["name"])
                row["bytes"] = sum(m["bytes"] for m in row["media"])
                row["width"], row["height"] = row["media"][0].get("width"), row["media"][0].get("height")
            rows.append(row)
        if rows:
            await self.repo.insert(rows)

    async def _png_size(self, name: str) -> tuple[int | None, int | None]:
        """A stored PNG's size from its header: a batch line's answer links its images without saying it."""
        head = b""
        chunks = self.ctx.storage.get(MEDIA_PREFIX + name)
        try:
            async for chunk in chunks:
                head += chunk
                if len(head) >= 24:
                    break
        except ObjectMissing:
            return None, None
        finally:
            await chunks.aclose()  # type: ignore[attr-defined]
        return png_size(head)

    # ---------------------------------------------------------------- reading and deleting

    async def get(self, principal: Principal, item_id: str) -> Item:
        item = await self.repo.get(principal.org_id, item_id)
        if item is None:  # another org's item is as absent as one that never existed
            raise NotFound(f"No library item '{item_id}'.", param="id", code="item_not_found")
        return item

    async def list(self, principal: Principal, *, limit: int, after: str | None, **filters: Any) -> tuple[list[Item], bool]:
        before = None
        if after:
            before = await self.repo.seq_of(principal.org_id, after)
            if before is None:
                raise InvalidRequest(f"'after' names no item of yours: '{after}'.", param="after")
        rows = await self.repo.list(principal.org_id, before_seq=before, limit=limit + 1, **filters)
        return rows[:limit], len(rows) > limit

    async def delete(self, principal: Principal, item_id: str) -> Item:
        """The row and its share at once, then the bytes."""
        item = await self.repo.delete(principal.org_id, item_id)
        if item is None:
            raise NotFound(f"No library item '{item_id}'.", param="id", code="item_not_found")
        for m in item.media:
            await self.ctx.storage.delete(MEDIA_PREFIX + m.name)
        return item

    def public(self, item: Item, base_url: str) -> dict[str, Any]:
        """The owner's view: every media link freshly signed (valid `media_url_ttl`)."""
        media = [{"url": self.ctx.media.url(m.name, base_url), "content_type": m.content_type, "bytes": m.bytes,
                  "width": m.width, "height": m.height, "duration_seconds": m.duration_seconds} for m in item.media]
        return {**self.fields(item), "prompt": item.prompt, "params": item.params,
                "urls": [m["url"] for m in media], "media": media,
                "source": {"route": item.source_route, "job_id": item.job_id, "run_id": item.run_id}}

    @staticmethod
    def fields(item: Item) -> dict[str, Any]:
        first = item.media[0] if item.media else Media("", "")
        return {"id": item.id, "object": "library.item", "type": item.type, "model_id": item.model_id,
                "task": item.task, "width": first.width, "height": first.height,
                "duration_seconds": first.duration_seconds, "bytes": item.bytes, "created_at": int(item.created_at)}

    # ---------------------------------------------------------------- explicit saves

    async def save_job(self, principal: Principal, job_id: str) -> tuple[Item, bool]:
        """A finished job's media as an item now (whatever the org's autosave); (item, created)."""
        assert self.ctx.jobs is not None
        job = await self.ctx.jobs.get(job_id, principal)
        existing = await self.repo.get(principal.org_id, item_id_for_job(job.id))
        if existing is not None:
            return existing, False
        if job.status != "completed":
            raise InvalidRequest(f"Job '{job_id}' is {job.status}; only a completed job can be saved.",
                                 param="job_id", code="job_not_completed")
        found = media_in_result(job.result)
        if not (found.stored or found.raw):
            raise InvalidRequest(f"Job '{job_id}' made no media to save.", param="job_id", code="no_media")
        prompt, params = prompt_and_params(job.payload if isinstance(job.payload, dict) else {})
        media = found.stored + await self._save(found.raw)
        item = Item(id=item_id_for_job(job.id), org_id=job.org_id, type=type_of(media[0].content_type) or "image",
                    model_id=job.model, task=job.task, prompt=prompt, params=params, media=media,
                    source_route=source_route(job), job_id=job.id, run_id=_run_id(job), created_at=self.clock())
        return await self._insert_now(item), True

    async def save_url(self, principal: Principal, url: str, *, prompt: str | None, model_id: str | None,
                       task: str | None) -> Item:
        """A media link we signed (kept in place, signature checked) or any http(s) URL (fetched, SSRF-safe)."""
        name = name_in_url(url)
        media: list[Media]
        if name is not None and "sig=" in url and "/media/" in url:
            query = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&") if "=" in p) if "?" in url else {}
            try:
                stored = self.ctx.media.open(name, query.get("expires"), query.get("sig"))
            except MediaForbidden as exc:
                raise InvalidRequest(f"'url' is not a valid media link: {exc.message}", param="url") from None
            size = await self.ctx.storage.size(stored.key)
            if size is None:
                raise InvalidRequest("'url' names media that no longer exist.", param="url")
            media = [Media(name, stored.content_type, bytes=size)]
        else:
            data = await fetch_bytes(url, "url", allow_private=self.ctx.settings.allow_private_urls,
                                     limit=MAX_SAVE_BYTES)
            content_type = sniff(data)
            if content_type is None:
                raise InvalidRequest("'url' is not an image, video or audio file we recognize.", param="url",
                                     code="unsupported_media")
            media = await self._save([(data, content_type)])
        item = Item(id=new_item_id(), org_id=principal.org_id, type=type_of(media[0].content_type) or "image",
                    model_id=model_id or "unknown", task=task or "saved", prompt=prompt, params={}, media=media,
                    source_route="save", job_id=None, run_id=None, created_at=self.clock())
        return await self._insert_now(item)

    async def _insert_now(self, item: Item) -> Item:
        await self.repo.insert([item.row()])
        self.embedder.wake()
        saved = await self.repo.get(item.org_id, item.id)
        return saved or item

    async def render_item(self, job: Job) -> Item:
        """A finished render job's item: written by whichever runner finished it; read (or made) here."""
        item_id = item_id_for_job(job.id)
        item = await self.repo.get(job.org_id, item_id)
        if item is None:  # this process's runner queued it a moment ago; another's may still be writing
            await self.flush()
            item = await self.repo.get(job.org_id, item_id)
        if item is None:
            found = media_in_result(job.result)
            media = found.stored + await self._save(found.raw)
            prompt, params = prompt_and_params(job.payload)
            item = await self._insert_now(Item(
                id=item_id, org_id=job.org_id, type=type_of(media[0].content_type) if media else "image",
                model_id=job.model, task=job.task, prompt=prompt, params=params, media=media, source_route="render",
                job_id=job.id, run_id=_run_id(job), created_at=self.clock()))
        return item
