"""Generated media on disk, handed out as signed, expiring URLs (or inline base64)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelyardError, NotFound

_NAME = re.compile(r"^[a-z]+_[0-9a-f]{24}\.[a-z0-9]{2,5}$")
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
    path: Path
    content_type: str


class MediaStore:
    """Files live under <data_dir>/media; a URL is valid only with its HMAC signature and before its expiry."""

    def __init__(self, folder: Path, secret: str | None, ttl: int) -> None:
        self.folder = folder
        self.ttl = ttl
        self._key = (secret or _load_or_create_secret(folder.parent / "media-secret")).encode()

    def save(self, data: bytes, ext: str, kind: str = "media") -> StoredMedia:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"{kind}_{secrets.token_hex(12)}.{ext}"
        path = self.folder / name
        tmp = path.with_suffix(path.suffix + ".part")
        tmp.write_bytes(data)
        os.replace(tmp, path)  # readers never see half a file
        return StoredMedia(name, path, CONTENT_TYPES.get(ext, "application/octet-stream"))

    def _sign(self, name: str, expires: int) -> str:
        return hmac.new(self._key, f"{name}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]

    def url(self, name: str, base_url: str) -> str:
        expires = int(time.time()) + self.ttl
        return f"{base_url.rstrip('/')}/media/{name}?expires={expires}&sig={self._sign(name, expires)}"

    def open(self, name: str, expires: str | None, sig: str | None) -> StoredMedia:
        """Check the signature first, then the expiry; only then look at the disk."""
        if not _NAME.match(name) or not expires or not sig or not expires.isdigit():
            raise MediaForbidden("This media URL is not valid.")
        if not hmac.compare_digest(self._sign(name, int(expires)), sig):
            raise MediaForbidden("This media URL's signature does not match.")
        if int(expires) < time.time():
            raise MediaForbidden("This media URL has expired.", code="url_expired")
        path = self.folder / name
        if not path.is_file():
            raise NotFound("This media no longer exists.")
        ext = name.rsplit(".", 1)[1]
        return StoredMedia(name, path, CONTENT_TYPES.get(ext, "application/octet-stream"))


def _load_or_create_secret(path: Path) -> str:
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(value)
    return value
