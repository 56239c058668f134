"""The storage contract on both backends, against real parts: a folder, and a real S3 server (SeaweedFS) reached
through aiobotocore with keys from the environment: streaming puts (multipart past one part), streaming gets,
atomic replacement, failed puts leaving nothing, sizes, deletes, and links a plain HTTP client can open."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import AsyncIterator

import httpx
import pytest

from modelyard.config import StorageSettings
from modelyard.storage import ObjectMissing, Storage, UrlSigner
from modelyard.storage.local import LocalStorage
from modelyard.storage.s3 import PART, S3Storage

SIGNER = UrlSigner(b"k" * 32)


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Storage]:
    if request.param == "local":
        yield LocalStorage(tmp_path / "data", SIGNER)
        return
    s3 = request.getfixturevalue("s3_server")
    bucket = "t-" + secrets.token_hex(4)
    s3.make_bucket(bucket)
    for k, v in s3.env().items():  # the operator's way: botocore's standard variables
        monkeypatch.setenv(k, v)
    store = S3Storage(StorageSettings(**s3.storage(bucket, prefix="pre/")), SIGNER)
    yield store
    await store.aclose()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def read(storage: Storage, key: str) -> bytes:
    return b"".join([c async for c in storage.get(key)])


async def test_put_get_size_delete(storage: Storage) -> None:
    assert await storage.put("files/o/a", chunks(b"hello ", b"world"), content_type="text/plain") == 11
    assert await read(storage, "files/o/a") == b"hello world"
    assert await storage.size("files/o/a") == 11 and await storage.exists("files/o/a")
    assert await storage.put("files/o/a", chunks(b"replaced")) == 8  # a put replaces, whole
    assert await read(storage, "files/o/a") == b"replaced"
    assert await storage.delete("files/o/a")
    assert not await storage.delete("files/o/a")
    assert await storage.size("files/o/a") is None and not await storage.exists("files/o/a")
    with pytest.raises(ObjectMissing):
        await read(storage, "files/o/a")
    assert await storage.put("files/o/empty", chunks()) == 0
    assert await read(storage, "files/o/empty") == b""


async def test_large_object_streams_in_parts(storage: Storage) -> None:
    block = os.urandom(1024 * 1024)
    n = PART // len(block) * 2 + 3  # more than two S3 parts, the last one short

    async def blocks() -> AsyncIterator[bytes]:
        for i in range(n):
            yield bytes([i % 256]) + block[1:]

    assert await storage.put("media/big.bin", blocks()) == n * len(block)
    assert await storage.size("media/big.bin") == n * len(block)
    got, count = 0, 0
    async for chunk in storage.get("media/big.bin"):  # arrives in pieces, never as one object in memory
        assert len(chunk) <= 1024 * 1024
        got += len(chunk)
        count += 1
    assert got == n * len(block) and count >= n


async def test_failed_put_leaves_nothing(storage: Storage) -> None:
    await storage.put("files/o/keep", chunks(b"old"))

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(PART + 10)  # far enough for S3 to have begun a multipart upload
        raise ConnectionError("the client went away")

    with pytest.raises(ConnectionError):
        await storage.put("files/o/keep", broken())
    assert await read(storage, "files/o/keep") == b"old"  # the old object is untouched
    with pytest.raises(ConnectionError):
        await storage.put("files/o/new", broken())
    assert not await storage.exists("files/o/new")


async def test_links_open_with_a_plain_http_client(storage: Storage) -> None:
    await storage.put("media/img_0123456789abcdef01234567.png", chunks(b"\x89PNG..."), content_type="image/png")
    url = storage.url("media/img_0123456789abcdef01234567.png", "http://gateway.example/", ttl=60)
    if isinstance(storage, LocalStorage):  # ours: checked and served by the gateway's /media route
        assert url.startswith("http://gateway.example/media/img_0123456789abcdef01234567.png?expires=")
        return
    got = httpx.get(url)  # the bucket's presigned GET, no keys needed
    assert got.status_code == 200 and got.content == b"\x89PNG..."
    assert httpx.get(url.replace("Signature=", "Signature=0")).status_code == 403


async def test_keys_cannot_escape(storage: Storage) -> None:
    for bad in ("../x", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(ValueError):
            await storage.put(bad, chunks(b"x"))
