"""Generated media in object storage (under `media/`), handed out as signed, expiring URLs (or inline base64)."""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from .errors import ModelyardError
from .storage import Storage, one_chunk
from .storage.base import MEDIA_PREFIX

_NAME = re.compile(r"^[a-z]+_[0-9a-f]{24}\.[a-z0-9]{2,5}$")
_LINKED = re.compile(r"/media/([a-z]+_[0-9a-f]{24}\.[a-z0-9]{2,5})$")
CONTENT_TYPES = {
    "png": "image/png", "jpeg": "image/jpeg", "jpg": "image/jpeg", "webp": "image/webp",
    "mp4": "video/mp4", "mp3": "audio/mpeg", "wav": "audio/wav", "flac": "audio/flac", "opus": "audio/ogg",
    "pcm": "audio/pcm",
}


class MediaForbidden(ModelyardError):
    status = 403
    type = "permission_error"
    code = "invalid_signature"


@dataclass(frozen=True)
class StoredMedia:
    name: str
    key: str  # the storage key, `media/<name>`
    content_type: str


class MediaStore:
    """Media live in the storage backend; a job's row keeps the name, and whoever reads it gets a fresh link: our
    HMAC-signed `/media/<name>` (checked here before a byte is read) or the bucket's presigned URL."""

    def __init__(self, storage: Storage, ttl: int) -> None:
        self.storage = storage
        self.signer = storage.signer
        self.ttl = ttl

    async def save(self, data: bytes, ext: str, kind: str = "media") -> StoredMedia:
        name = f"{kind}_{secrets.token_hex(12)}.{ext}"
        content_type = CONTENT_TYPES.get(ext, "application/octet-stream")
        await self.storage.put(MEDIA_PREFIX + name, one_chunk(data), content_type=content_type)
        return StoredMedia(name, MEDIA_PREFIX + name, content_type)

    def url(self, name: str, base_url: str) -> str:
        return self.storage.url(MEDIA_PREFIX + name, base_url, ttl=self.ttl)

    def open(self, name: str, expires: str | None, sig: str | None) -> StoredMedia:
        """Check the signature first, then the expiry; the caller reads storage only after this passes."""
        if not _NAME.match(name) or not expires or not sig or not expires.isdigit():
            raise MediaForbidden("This media URL is not valid.")
        if not self.signer.valid(name, int(expires), sig):
            raise MediaForbidden("This media URL's signature does not match.")
        if int(expires) < time.time():
            raise MediaForbidden("This media URL has expired.", code="url_expired")
        ext = name.rsplit(".", 1)[1]
        return StoredMedia(name, MEDIA_PREFIX + name, CONTENT_TYPES.get(ext, "application/octet-stream"))

    def name_in(self, url: str) -> str | None:
        """The media name when `url` is a link we handed out — our signed `/media/…` link (its signature checked, its
        expiry not: a queued job may run after the link it was given expired) or the bucket's presigned one (its key
        is the name, a 96-bit secret). Lets a job read media we made without fetching our own URL over HTTP."""
        try:
            parts = urlsplit(url)
        except ValueError:
            return None
        m = _LINKED.search(unquote(parts.path))
        if m is None:
            return None
        query = parse_qs(parts.query)
        if "sig" in query and "expires" in query:
            expires = query["expires"][0]
            ok = expires.isdigit() and self.signer.valid(m.group(1), int(expires), query["sig"][0])
            return m.group(1) if ok else None
        return m.group(1) if any(k.lower().startswith("x-amz-") for k in query) else None

    async def read(self, name: str, limit: int) -> bytes:
        """A stored medium's bytes (at most `limit`)."""
        out = bytearray()
        async for chunk in self.storage.get(MEDIA_PREFIX + name):
            out += chunk
            if len(out) > limit:
                raise ModelyardError(f"The input is larger than {limit} bytes.", status=413, code="payload_too_large")
        return bytes(out)
