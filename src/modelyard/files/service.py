"""The Files API's logic: OpenAI file objects scoped to an org, bytes streamed to and from object storage."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import mimetypes
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, AsyncIterator, Callable, Literal, Mapping

from sqlalchemy import and_, delete, func, insert, or_, select, update

from ..errors import InvalidRequest, NotFound, PayloadTooLarge
from ..storage import Storage
from ..store.db import Store
from ..store.tables import files

if TYPE_CHECKING:
    from ..config import Settings

log = logging.getLogger(__name__)

UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")  # what clients may upload
OUTPUT_PURPOSES = ("batch_output",)  # what only we write
MIN_EXPIRY = 3600  # OpenAI's expires_after bounds: one hour to thirty days
MAX_EXPIRY = 30 * 86400
BATCH_EXPIRY = 30 * 86400  # OpenAI: batch input files expire after 30 days unless told otherwise
STALE_UPLOAD = 6 * 3600  # an upload row this old that never finished belonged to a process that died
SWEEP_BATCH = 500


@dataclass(frozen=True, slots=True)
class FileObject:
    id: str
    org_id: str
    purpose: str
    filename: str
    bytes: int
    created_at: int
    expires_at: int | None
    storage_key: str
    status: str = "processed"

    def public(self) -> dict[str, Any]:
        """OpenAI's file object."""
        return {"id": self.id, "object": "file", "bytes": self.bytes, "created_at": self.created_at,
                "expires_at": self.expires_at, "filename": self.filename, "purpose": self.purpose,
                "status": "processed", "status_details": None}


@dataclass(slots=True)
class Upload:
    """A file on its way in: its row exists (hidden) from `begin` on."""

    id: str
    org_id: str
    filename: str
    key: str
    created_at: float
    bytes: int = 0


@dataclass(frozen=True, slots=True)
class FilePage:
    data: list[FileObject]
    has_more: bool

    def public(self) -> dict[str, Any]:
        """OpenAI's cursor page: `after` takes `last_id` to continue."""
        return {"object": "list", "data": [f.public() for f in self.data],
                "first_id": self.data[0].id if self.data else None,
                "last_id": self.data[-1].id if self.data else None, "has_more": self.has_more}


class FileService:
    """Files of every org. Rows say what exists; a row is `uploading` while its bytes stream to storage, so a
    half-uploaded file is never listed, and a process dying mid-upload leaves a row the sweeper cleans up."""

    def __init__(self, store: Store, storage: Storage, *, max_bytes: int, batch_max_bytes: int,
                 sweep_seconds: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.engine = store.engine
        self.storage = storage
        self.max_bytes = max_bytes
        self.batch_max_bytes = batch_max_bytes
        self.sweep_seconds = sweep_seconds
        self.clock = clock

    @classmethod
    def from_settings(cls, settings: Settings, store: Store, storage: Storage) -> FileService:
        return cls(store, storage, max_bytes=settings.files_max_bytes, batch_max_bytes=settings.files_batch_max_bytes,
                   sweep_seconds=settings.files_sweep_seconds)

    def limit_for(self, purpose: str | None) -> int:
        return min(self.batch_max_bytes, self.max_bytes) if purpose == "batch" else self.max_bytes

    # ---------------------------------------------------------------- writing

    async def create(self, org_id: str, *, purpose: str, filename: str, chunks: AsyncIterator[bytes],
                     expires_after_seconds: int | None = None) -> FileObject:
        """Stream `chunks` to storage as a new file of the org's. Past the purpose's limit the upload stops with a
        413 naming `file`; on any failure no row and no bytes are left behind."""
        check_purpose(purpose, filename, internal=True)
        upload = await self.begin(org_id, filename)
        try:
            await self.receive(upload, chunks, purpose=purpose)
            return await self.commit(upload, purpose=purpose, expires_after_seconds=expires_after_seconds)
        except BaseException:
            await asyncio.shield(self.abort(upload))
            raise

    # A multipart form may carry `file` before `purpose` (openai-node sends it so): the route begins the upload,
    # streams the bytes under the largest limit, and commits once the whole form (and so the purpose) is known.

    async def begin(self, org_id: str, filename: str) -> Upload:
        """A row that stays invisible (`uploading`) until `commit`; the sweeper removes it if nobody commits."""
        now = self.clock()
        file_id = "file-" + secrets.token_hex(12)
        upload = Upload(id=file_id, org_id=org_id, filename=_basename(filename), key=f"files/{org_id}/{file_id}",
                        created_at=now)
        async with self.engine.begin() as conn:
            await conn.execute(insert(files), {
                "id": file_id, "org_id": org_id, "purpose": "", "filename": upload.filename, "bytes": 0,
                "status": "uploading", "storage_key": upload.key, "created_at": now, "expires_at": None})
        return upload

    async def receive(self, upload: Upload, chunks: AsyncIterator[bytes], *, purpose: str | None = None) -> int:
        """Stream the bytes to storage under the purpose's limit (the largest while the purpose is unknown)."""
        limit = self.limit_for(purpose)
        upload.bytes = await self.storage.put(
            upload.key, _limited(chunks, limit, purpose),
            content_type=mimetypes.guess_type(upload.filename)[0] or "application/octet-stream")
        return upload.bytes

    async def commit(self, upload: Upload, *, purpose: str, expires_after_seconds: int | None = None) -> FileObject:
        """Check what needed the whole form (purpose, the purpose's limit, the batch file rules), then show the file.
        On a refusal the caller aborts the upload."""
        check_purpose(purpose, upload.filename, internal=True)
        limit = self.limit_for(purpose)
        if upload.bytes > limit:
            raise PayloadTooLarge(f"The file is larger than the {_size(limit)} limit for purpose '{purpose}'.",
                                  param="file")
        if upload.bytes == 0 and purpose in UPLOAD_PURPOSES:
            raise InvalidRequest("The file is empty.", param="file")
        if expires_after_seconds is not None and expires_after_seconds <= 0:
            raise InvalidRequest("expires_after.seconds must be positive.", param="expires_after[seconds]")
        ttl = expires_after_seconds or (BATCH_EXPIRY if purpose == "batch" else None)
        expires_at = upload.created_at + ttl if ttl else None
        async with self.engine.begin() as conn:
            await conn.execute(update(files).where(files.c.id == upload.id).values(
                status="processed", purpose=purpose, bytes=upload.bytes, expires_at=expires_at))
        return FileObject(id=upload.id, org_id=upload.org_id, purpose=purpose, filename=upload.filename,
                          bytes=upload.bytes, created_at=int(upload.created_at),
                          expires_at=int(expires_at) if expires_at is not None else None, storage_key=upload.key)

    async def abort(self, upload: Upload) -> None:
        await self._discard(upload.id, upload.key)

    async def _discard(self, file_id: str, key: str) -> None:
        with contextlib.suppress(Exception):  # the sweeper finishes what this cannot
            await self.storage.delete(key)
            async with self.engine.begin() as conn:
                await conn.execute(delete(files).where(files.c.id == file_id))

    async def delete(self, org_id: str, file_id: str) -> bool:
        """Gone for the client at once (False when the org has no such live file); the bytes follow, now or, if
        storage fails, at the next sweep."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(files).where(files.c.id == file_id, files.c.org_id == org_id,
                                                            self._live()).values(status="deleted"))
            if not result.rowcount:
                return False
            key = (await conn.execute(select(files.c.storage_key).where(files.c.id == file_id))).scalar_one()
        with contextlib.suppress(Exception):
            await self.storage.delete(key)
            async with self.engine.begin() as conn:
                await conn.execute(delete(files).where(files.c.id == file_id))
        return True

    # ---------------------------------------------------------------- reading

    def _live(self, now: float | None = None) -> Any:
        now = self.clock() if now is None else now
        return and_(files.c.status == "processed", or_(files.c.expires_at.is_(None), files.c.expires_at > now))

    async def get(self, org_id: str, file_id: str) -> FileObject:
        """The org's live file; another org's, an expired or a deleted one is the same 404."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(files).where(files.c.id == file_id, files.c.org_id == org_id,
                                                          self._live()))).mappings().first()
        if row is None:
            raise NotFound(f"No such File object: {file_id}", param="file_id")
        return _file(row)

    async def list(self, org_id: str, *, purpose: str | None = None, limit: int = 10_000,
                   order: Literal["asc", "desc"] = "desc", after: str | None = None) -> FilePage:
        """Newest first by default; `after` is the last id of the previous page (an unknown id is a 404)."""
        q = select(files).where(files.c.org_id == org_id, self._live())
        if purpose is not None:
            q = q.where(files.c.purpose == purpose)
        async with self.engine.connect() as conn:
            if after is not None:
                at = (await conn.execute(select(files.c.created_at).where(
                    files.c.id == after, files.c.org_id == org_id, self._live()))).scalar()
                if at is None:
                    raise NotFound(f"No such File object: {after}", param="after")
                older = or_(files.c.created_at < at, and_(files.c.created_at == at, files.c.id < after))
                newer = or_(files.c.created_at > at, and_(files.c.created_at == at, files.c.id > after))
                q = q.where(older if order == "desc" else newer)
            cols = (files.c.created_at, files.c.id)
            q = q.order_by(*(c.desc() for c in cols) if order == "desc" else cols).limit(limit + 1)
            rows = (await conn.execute(q)).mappings().all()
        return FilePage([_file(r) for r in rows[:limit]], has_more=len(rows) > limit)

    def stream(self, file: FileObject) -> AsyncIterator[bytes]:
        """The bytes of a file already looked up (the route checks it before it starts answering)."""
        return self.storage.get(file.storage_key)

    async def read(self, org_id: str, file_id: str) -> AsyncIterator[bytes]:  # type: ignore[misc]
        """The file's bytes in chunks (404 at the first iteration when the org has no such file)."""
        file = await self.get(org_id, file_id)
        async for chunk in self.stream(file):
            yield chunk

    async def lines(self, org_id: str, file_id: str, *,
                    max_line_bytes: int | None = None) -> AsyncIterator[tuple[int, bytes]]:
        """(1-based line number, the line without its ending), streamed; a final newline makes no empty last
        line. A line longer than `max_line_bytes` is a 400 naming `file` (nothing buffers a line without end)."""
        number = 0
        rest = b""
        async for chunk in self.read(org_id, file_id):
            parts = (rest + chunk).split(b"\n")
            rest = parts.pop()
            for line in parts:
                number += 1
                yield number, line[:-1] if line.endswith(b"\r") else line
            if max_line_bytes is not None and len(rest) > max_line_bytes:
                raise InvalidRequest(f"Line {number + 1} of {file_id} is longer than {max_line_bytes} bytes.",
                                     param="file")
        if rest:
            yield number + 1, rest[:-1] if rest.endswith(b"\r") else rest

    async def usage(self, org_id: str) -> dict[str, Any]:
        """What the org stores now: live files and bytes, in all and per purpose."""
        q = (select(files.c.purpose, func.count().label("files"), func.coalesce(func.sum(files.c.bytes), 0).label("bytes"))
             .where(files.c.org_id == org_id, self._live()).group_by(files.c.purpose).order_by(files.c.purpose))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(q)).mappings().all()
        by = {r["purpose"]: {"files": int(r["files"]), "bytes": int(r["bytes"])} for r in rows}
        return {"organization_id": org_id, "files": sum(v["files"] for v in by.values()),
                "bytes": sum(v["bytes"] for v in by.values()), "by_purpose": by}

    # ---------------------------------------------------------------- sweeping

    async def sweep(self, *, now: float | None = None, limit: int = SWEEP_BATCH) -> int:
        """Delete the bytes and rows of expired files, deleted ones whose bytes remained, and uploads a dead process
        left; returns how many. Safe on every replica at once: deletes are idempotent."""
        now = self.clock() if now is None else now
        gone = or_(and_(files.c.status == "processed", files.c.expires_at <= now),
                   files.c.status == "deleted",
                   and_(files.c.status == "uploading", files.c.created_at < now - STALE_UPLOAD))
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(files.c.id, files.c.storage_key).where(gone).limit(limit))).all()
        swept = 0
        for file_id, key in rows:
            try:
                await self.storage.delete(key)
            except Exception:
                log.exception("sweeping file %s: storage delete failed; next sweep retries", file_id)
                continue
            async with self.engine.begin() as conn:
                swept += (await conn.execute(delete(files).where(files.c.id == file_id, gone))).rowcount or 0
        return swept

    async def sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_seconds)
            try:
                while await self.sweep() >= SWEEP_BATCH:
                    pass
            except Exception:
                log.exception("file sweep failed")


def check_purpose(purpose: str | None, filename: str, *, internal: bool = False) -> None:
    """A purpose clients may upload with (or, `internal`, one we write ourselves); batch inputs are .jsonl."""
    allowed = UPLOAD_PURPOSES + OUTPUT_PURPOSES if internal else UPLOAD_PURPOSES
    if purpose not in allowed:
        raise InvalidRequest(f"'{purpose}' is not a valid purpose; expected one of {', '.join(UPLOAD_PURPOSES)}."
                             if purpose else "'purpose' is required.", param="purpose")
    if purpose == "batch" and not filename.lower().endswith(".jsonl"):
        raise InvalidRequest("A file with purpose 'batch' must be a .jsonl file.", param="file")


def _basename(filename: str) -> str:
    return (filename or "file").replace("\\", "/").rsplit("/", 1)[-1][:1000] or "file"


async def _limited(chunks: AsyncIterator[bytes], limit: int, purpose: str | None) -> AsyncIterator[bytes]:
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            what = f" for purpose '{purpose}'" if purpose else ""
            raise PayloadTooLarge(f"The file is larger than the {_size(limit)} limit{what}.", param="file")
        yield chunk


def _size(n: int) -> str:
    return f"{n // (1024 * 1024)} MB" if n >= 1024 * 1024 else f"{n} byte"


def _file(row: Mapping[str, Any]) -> FileObject:
    return FileObject(id=row["id"], org_id=row["org_id"], purpose=row["purpose"], filename=row["filename"],
                      bytes=int(row["bytes"]), created_at=int(row["created_at"]),
                      expires_at=int(row["expires_at"]) if row["expires_at"] is not None else None,
                      storage_key=row["storage_key"], status=row["status"])

