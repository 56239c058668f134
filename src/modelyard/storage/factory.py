"""Which storage a process uses: the data dir, or an S3-compatible bucket (its client is an optional extra)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import Storage, UrlSigner
from .local import LocalStorage

if TYPE_CHECKING:
    from ..config import Settings


def build_storage(settings: Settings) -> Storage:
    """The backend `settings.storage` names; S3's client library is imported only when it is chosen.

    The link-signing key is `media_secret`, else one generated into the data dir (replicas sharing a bucket must
    set `media_secret` to the same value, so one gateway's links open on another)."""
    conf = settings.storage
    signer = UrlSigner.from_settings(settings.media_secret, settings.data_dir)
    if conf.backend == "s3":
        try:
            from .s3 import S3Storage
        except ImportError as exc:
            raise SystemExit(f"storage: backend s3 needs the s3 extra (pip install 'modelyard[s3]'): {exc}") from None

        return S3Storage(conf, signer)
    return LocalStorage(conf.path or settings.data_dir, signer)
