"""Object storage for uploaded files, batch outputs and generated media: the local data dir or an S3 bucket."""

from .base import ObjectMissing, Storage, UrlSigner, one_chunk
from .factory import build_storage

__all__ = ["ObjectMissing", "Storage", "UrlSigner", "build_storage", "one_chunk"]
