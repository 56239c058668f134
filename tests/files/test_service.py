"""FileService on a real database and the local storage backend: streaming create, org scoping, listing pages,
line reading, limits, expiry and the sweeper, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path
from typing import AsyncIterator

import pytest

from modelyard.config import normalize_database_url
from modelyard.errors import InvalidRequest, NotFound, PayloadTooLarge
from modelyard.files import FileService
from modelyard.storage import UrlSigner
from modelyard.storage.local import LocalStorage
from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def env(database_url: str, tmp_path: Path):
    store = Store(normalize_database_url(database_url))
    await store.migrate()
    orgs = OrgRepo(store)
    a, b = await orgs.create("org-a"), await orgs.create("org-b")
    storage = LocalStorage(tmp_path / "data", UrlSigner(b"k" * 32))
    clock = Clock()
    service = FileService(store, storage, max_bytes=1000, batch_max_bytes=500, clock=clock)
    yield service, a.id, b.id, clock, storage
    await store.aclose()


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def collect(it: AsyncIterator[bytes]) -> bytes:
    return b"".join([c async for c in it])


async def test_create_read_lines_delete(env) -> None:
    files, a, b, _, storage = env
    f = await files.create(a, purpose="batch", filename="dir/in.jsonl", chunks=chunks(b'{"x":1}\r\n', b'{"y"', b':2}\n\n{"z":3}'))
    body = f.public()
    assert body["object"] == "file" and body["id"].startswith("file-") and body["bytes"] == 25
    assert body["filename"] == "in.jsonl" and body["purpose"] == "batch" and body["status"] == "processed"
    assert body["expires_at"] == body["created_at"] + 30 * 86400  # batch files expire in 30 days by default
    assert await collect(files.read(a, f.id)) == b'{"x":1}\r\n{"y":2}\n\n{"z":3}'
    assert [x async for x in files.lines(a, f.id)] == [(1, b'{"x":1}'), (2, b'{"y":2}'), (3, b""), (4, b'{"z":3}')]
    assert (await files.get(a, f.id)).bytes == 25
    with pytest.raises(NotFound) as err:  # another org's id is a 404, on every read
        await files.get(b, f.id)
    assert err.value.param == "file_id"
    with pytest.raises(NotFound):
        await collect(files.read(b, f.id))
    assert not await files.delete(b, f.id)
    assert (await files.usage(a))["bytes"] == 25 and (await files.usage(b))["files"] == 0
    assert await files.delete(a, f.id)
    assert not await files.delete(a, f.id)
    with pytest.raises(NotFound):
        await files.get(a, f.id)
    assert not await storage.exists(f.storage_key)


async def test_limits_leave_nothing_behind(env, tmp_path: Path) -> None:
    files, a, _, _, _ = env
    with pytest.raises(PayloadTooLarge) as err:
        await files.create(a, purpose="batch", filename="x.jsonl", chunks=chunks(b"x" * 400, b"x" * 400))
    assert err.value.param == "file" and err.value.status == 413
    with pytest.raises(PayloadTooLarge):
        await files.create(a, purpose="user_data", filename="x.txt", chunks=chunks(b"x" * 1001))
    ok = await files.create(a, purpose="user_data", filename="x.txt", chunks=chunks(b"x" * 1000))
    with pytest.raises(InvalidRequest) as bad:
        await files.create(a, purpose="batch", filename="x.csv", chunks=chunks(b"x"))
    assert bad.value.param == "file"
    with pytest.raises(InvalidRequest) as bad:
        await files.create(a, purpose="nope", filename="x.txt", chunks=chunks(b"x"))
    assert bad.value.param == "purpose"
    page = await files.list(a)
    assert [f.id for f in page.data] == [ok.id]
    assert sorted(p.name for p in (tmp_path / "data" / "files" / a).iterdir()) == [ok.id]  # no partial bytes


async def test_list_pages_in_both_orders(env) -> None:
    files, a, b, clock, _ = env
    made = []
    for i in range(5):
        clock.now += 1
        made.append(await files.create(a, purpose="user_data" if i % 2 else "vision", filename=f"{i}.txt",
                                       chunks=chunks(b"%d" % i)))
    await files.create(b, purpose="vision", filename="other.txt", chunks=chunks(b"o"))
    page = await files.list(a, limit=2)
    assert [f.id for f in page.data] == [made[4].id, made[3].id] and page.has_more
    page = await files.list(a, limit=2, after=page.data[-1].id)
    assert [f.id for f in page.data] == [made[2].id, made[1].id] and page.has_more
    page = await files.list(a, limit=2, after=page.data[-1].id)
    assert [f.id for f in page.data] == [made[0].id] and not page.has_more
    asc = await files.list(a, order="asc", purpose="user_data")
    assert [f.id for f in asc.data] == [made[1].id, made[3].id]
    assert asc.public()["first_id"] == made[1].id and asc.public()["last_id"] == made[3].id
    with pytest.raises(NotFound):
        await files.list(b, after=made[0].id)


async def test_expiry_hides_then_sweeper_deletes_bytes(env) -> None:
    files, a, _, clock, storage = env
    f = await files.create(a, purpose="user_data", filename="t.txt", chunks=chunks(b"bye"), expires_after_seconds=3600)
    keep = await files.create(a, purpose="user_data", filename="k.txt", chunks=chunks(b"stay"))
    assert f.expires_at == f.created_at + 3600 and keep.expires_at is None
    assert await files.sweep() == 0
    clock.now += 3601
    with pytest.raises(NotFound):
        await files.get(a, f.id)
    assert [x.id for x in (await files.list(a)).data] == [keep.id]
    assert (await files.usage(a))["files"] == 1
    assert await storage.exists(f.storage_key)  # hidden at once; the bytes go at the sweep
    assert await files.sweep() == 1
    assert not await storage.exists(f.storage_key) and await storage.exists(keep.storage_key)


async def test_failed_stream_leaves_nothing(env) -> None:
    files, a, _, clock, _ = env

    async def broken() -> AsyncIterator[bytes]:
        yield b"part"
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        await files.create(a, purpose="user_data", filename="b.txt", chunks=broken())
    assert (await files.list(a)).data == []
    clock.now += 7 * 3600
    assert await files.sweep() == 0  # nothing left for the sweeper either


async def test_long_line_is_refused(env) -> None:
    files, a, _, _, _ = env
    f = await files.create(a, purpose="user_data", filename="l.txt", chunks=chunks(b"a\n", b"b" * 300))
    with pytest.raises(InvalidRequest) as err:
        [x async for x in files.lines(a, f.id, max_line_bytes=100)]
    assert "Line 2" in err.value.message
