"""Storage in an S3-compatible bucket (AWS, MinIO, SeaweedFS, R2…) through aiobotocore; no hand-written signing."""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any, AsyncIterator

from aiobotocore.session import get_session
from botocore.config import Config
from botocore.exceptions import ClientError
from botocore.session import get_session as get_sync_session

from .base import CHUNK, ObjectMissing, Storage, UrlSigner

if TYPE_CHECKING:
    from ..config import StorageSettings

PART = 8 * 1024 * 1024  # multipart upload part size (S3's minimum is 5 MiB for every part but the last)
MISSING = {"NoSuchKey", "404", "NotFound"}


class S3Storage(Storage):
    """Objects at `<prefix><key>` in one bucket, shared by every gateway and runner that names it.

    Credentials come from botocore's usual chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, a profile, an
    instance role) unless the settings carry keys. Links are presigned GETs, or, with `proxy: true` (a bucket only
    the servers can reach), our own signed `/media/…` links that the gateway streams from the bucket.
    """

    def __init__(self, conf: StorageSettings, signer: UrlSigner) -> None:
        if not conf.bucket:
            raise ValueError("storage: backend s3 needs a bucket")
        self.conf = conf
        self.bucket = conf.bucket
        self.prefix = conf.prefix
        self.signer = signer
        self._config = Config(signature_version="s3v4", s3={"addressing_style": conf.addressing_style},
                              retries={"max_attempts": 5, "mode": "standard"})
        self._keys: dict[str, Any] = {}
        if conf.access_key_id and conf.secret_access_key:
            self._keys = {"aws_access_key_id": conf.access_key_id,
                          "aws_secret_access_key": conf.secret_access_key}
        self._client: Any = None
        self._stack: contextlib.AsyncExitStack | None = None
        self._lock: asyncio.Lock | None = None
        self._presigner: Any = None

    async def _s3(self) -> Any:
        """The pooled client, made on first use inside the running loop (aiohttp binds to it)."""
        if self._client is not None:
            return self._client
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(get_session().create_client(
                    "s3", endpoint_url=self.conf.endpoint_url, region_name=self.conf.region, config=self._config,
                    **self._keys))
                self._stack = stack
        return self._client

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or ".." in key.split("/"):
            raise ValueError(f"not a storage key: {key!r}")
        return self.prefix + key

    async def put(self, key: str, chunks: AsyncIterator[bytes], *, content_type: str | None = None) -> int:
        s3 = await self._s3()
        name = self._key(key)
        extra = {"ContentType": content_type} if content_type else {}
        buf = bytearray()
        size = 0
        upload_id: str | None = None
        parts: list[dict[str, Any]] = []
        try:
            async for chunk in chunks:
                size += len(chunk)
                buf += chunk
                while len(buf) >= PART:  # only one part in memory at a time, however big the object
                    if upload_id is None:
                        upload_id = (await s3.create_multipart_upload(Bucket=self.bucket, Key=name, **extra))["UploadId"]
                    part = bytes(buf[:PART])
                    del buf[:PART]
                    etag = (await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                                 PartNumber=len(parts) + 1, Body=part))["ETag"]
                    parts.append({"ETag": etag, "PartNumber": len(parts) + 1})
            if upload_id is None:
                await s3.put_object(Bucket=self.bucket, Key=name, Body=bytes(buf), **extra)
                return size
            if buf or not parts:
                etag = (await s3.upload_part(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                             PartNumber=len(parts) + 1, Body=bytes(buf)))["ETag"]
                parts.append({"ETag": etag, "PartNumber": len(parts) + 1})
            await s3.complete_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id,
                                               MultipartUpload={"Parts": parts})
        except BaseException:
            if upload_id is not None:  # an abandoned multipart upload would keep its parts (and their cost)
                with contextlib.suppress(Exception):
                    await asyncio.shield(s3.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id))
            raise
        return size

    async def get(self, key: str) -> AsyncIterator[bytes]:  # type: ignore[override]
        s3 = await self._s3()
        try:
            resp = await s3.get_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in MISSING:
                raise ObjectMissing(key) from None
            raise
        async with resp["Body"] as body:
            while chunk := await body.read(CHUNK):
                yield chunk

    async def delete(self, key: str) -> bool:
        if await self.size(key) is None:
            return False
        s3 = await self._s3()
        await s3.delete_object(Bucket=self.bucket, Key=self._key(key))
        return True

    async def size(self, key: str) -> int | None:
        s3 = await self._s3()
        try:
            head = await s3.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if _code(exc) in MISSING:
                return None
            raise
        return int(head["ContentLength"])

    def url(self, key: str, base_url: str, *, ttl: int) -> str:
        if self.conf.proxy:
            return self.signer.url(key, base_url, ttl)
        if self._presigner is None:
            # botocore's synchronous client presigns without I/O; aiobotocore's would make url() a coroutine
            self._presigner = get_sync_session().create_client(
                "s3", endpoint_url=self.conf.public_endpoint_url or self.conf.endpoint_url,
                region_name=self.conf.region, config=self._config, **self._keys)
        return self._presigner.generate_presigned_url(
            "get_object", Params={"Bucket": self.bucket, "Key": self._key(key)}, ExpiresIn=ttl)

    async def aclose(self) -> None:
        if self._stack is not None:
            stack, self._stack, self._client = self._stack, None, None
            await stack.aclose()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
