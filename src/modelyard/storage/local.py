"""Storage in a folder on this machine (the data dir by default); links are HMAC-signed `/media/…` URLs."""

from __future__ import annotations

import asyncio
import os
import secrets
from pathlib import Path
from typing import AsyncIterator, BinaryIO

from .base import CHUNK, ObjectMissing, Storage, UrlSigner


class LocalStorage(Storage):
    """Keys are paths under `root`; a put writes `<key>.<random>.part` and renames it, so readers never see half a file.

    File I/O runs in a thread (one call per ~1 MiB) so a slow disk never stalls the event loop.
    """

    def __init__(self, root: Path, signer: UrlSigner) -> None:
        self.root = root.expanduser().resolve()
        self.signer = signer

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not key or key.startswith("/") or ".." in key.split("/") or not path.is_relative_to(self.root):
            raise ValueError(f"not a storage key: {key!r}")
        return path

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str | None = None) -> int:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}.{secrets.token_hex(4)}.part")
        await asyncio.to_thread(path.parent.mkdir, parents=True, exist_ok=True)
        fh: BinaryIO = await asyncio.to_thread(open, tmp, "wb")
        size = 0
        pending: list[bytes] = []
        buffered = 0
        try:
            async for chunk in chunks:
                size += len(chunk)
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= CHUNK:  # one thread hop per MiB, not per network read
                    await asyncio.to_thread(fh.writelines, pending)
                    pending, buffered = [], 0
            if pending:
                await asyncio.to_thread(fh.writelines, pending)
            await asyncio.to_thread(fh.close)
            await asyncio.to_thread(os.replace, tmp, path)
        except BaseException:
            fh.close()
            tmp.unlink(missing_ok=True)
            raise
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        path = self._path(key)
        try:
            fh: BinaryIO = await asyncio.to_thread(open, path, "rb")
        except (FileNotFoundError, IsADirectoryError):
            raise ObjectMissing(key) from None
        try:
            while chunk := await asyncio.to_thread(fh.read, CHUNK):
                yield chunk
        finally:
            fh.close()

    async def delete(self, key: str) -> bool:
        path = self._path(key)
        try:
            await asyncio.to_thread(path.unlink)
        except FileNotFoundError:
            return False
        return True

    async def size(self, key: str) -> int | None:
        try:
            stat = await asyncio.to_thread(self._path(key).stat)
        except FileNotFoundError:
            return None
        return stat.st_size

    def url(self, key: str, base_url: str, *, ttl: int) -> str:
        return self.signer.url(key, base_url, ttl)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)
