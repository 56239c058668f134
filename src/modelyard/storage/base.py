"""The one storage interface every backend implements, the HMAC URL signer, and the factory settings choose with."""

from __future__ import annotations

import abc
import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import AsyncIterator

CHUNK = 1024 * 1024  # read size: big enough to keep syscalls and S3 round trips few, small enough to stream video
MEDIA_PREFIX = "media/"  # keys under here can be handed out as /media/... links


class ObjectMissing(KeyError):
    """The key names no object (never written, deleted, or swept)."""


class Storage(abc.ABC):
    """Objects by key (`media/img_….png`, `files/<org>/<file id>`): written from a stream, read as a stream.

    A put is atomic: a reader sees the whole object or none of it, never a half-written one. `signer` signs and
    checks our own `/media/…` links (every backend can hand those out; the media route checks them).
    """

    signer: UrlSigner

    @abc.abstractmethod
    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str | None = None) -> int:
        """Store what `chunks` yields under `key` (replacing any object there); returns the byte count. If the
        iterator raises, nothing is stored and the error propagates."""

    @abc.abstractmethod
    def get(self, key: str) -> AsyncIterator[bytes]:
        """The object's bytes in chunks; raises `ObjectMissing` (at the first iteration) when there is none."""

    @abc.abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove the object; False when there was none (deleting twice is fine)."""

    @abc.abstractmethod
    async def size(self, key: str) -> int | None:
        """The object's size in bytes, or None when it does not exist."""

    async def exists(self, key: str) -> bool:
        return await self.size(key) is not None

    @abc.abstractmethod
    def url(self, key: str, base_url: str, *, ttl: int) -> str:
        """A link anyone holding it may GET for `ttl` seconds: ours (`/media/…`, HMAC-signed) or the bucket's
        presigned one. Computed locally, no I/O."""

    def local_path(self, key: str) -> Path | None:
        """Where the object lies on this machine's disk, when it does (lets the server answer Range requests)."""
        return None

    async def aclose(self) -> None:
        """Release pooled connections."""


class UrlSigner:
    """HMAC-signed, expiring `/media/<name>` links, checked by the server's media route before it reads a byte."""

    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_settings(cls, secret: str | None, data_dir: Path) -> UrlSigner:
        return cls((secret or _load_or_create_secret(data_dir / "media-secret")).encode())

    def sign(self, name: str, expires: int) -> str:
        return hmac.new(self._key, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, key: str, base_url: str, ttl: int) -> str:
        if not key.startswith(MEDIA_PREFIX):
            raise ValueError(f"only keys under {MEDIA_PREFIX} have /media links, not {key!r}")
        name = key[len(MEDIA_PREFIX):]
        expires = int(time.time()) + ttl
        return f"{base_url.rstrip('/')}/media/{name}?expires={expires}&sig={self.sign(name, expires)}"

    def valid(self, name: str, expires: int, sig: str) -> bool:
        return hmac.compare_digest(self.sign(name, expires), sig)


async def one_chunk(data: bytes) -> AsyncIterator[bytes]:
    """Bytes already in memory, as the chunk stream `Storage.put` takes."""
    yield data


def _load_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process of this data dir made it first
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
