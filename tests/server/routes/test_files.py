"""The Files API with the official openai SDK against a real server, on SQLite and PostgreSQL: create (streamed,
`expires_after`, purposes), list pages, retrieve, content, delete; limits as 413s naming `file`; another org's ids
as 404s on every route; expiry and the sweeper; the org admin's storage totals."""

from __future__ import annotations

import contextlib
import io
import socket
import time
from typing import Iterator

import httpx
import openai
import pytest
from sqlalchemy import update

from modelyard.store.tables import files as files_table

from ...conftest import quiet_server, server_fixture
from ...support.accounts import create_key, create_org

LIMIT = 256 * 1024
BATCH_LIMIT = 64 * 1024


@contextlib.contextmanager
def files_server(tmp, database_url, _stub_url) -> Iterator:
    with quiet_server(tmp, database_url, [], files_max_bytes=LIMIT, files_batch_max_bytes=BATCH_LIMIT) as srv:
        yield srv


server = server_fixture("server", files_server)


@pytest.fixture(scope="module")
def orgs(server):
    """Two orgs with a user key each, and an admin key for the first."""
    a, b = create_org(server, "enterprise"), create_org(server, "enterprise")  # room for the module's requests
    return {"a": a["id"], "b": b["id"], "key_a": create_key(server, a["id"]), "key_b": create_key(server, b["id"]),
            "admin_a": create_key(server, a["id"], ["admin:read", "user:write"])}


def sdk(server, key: str, prefix: str = "/v1") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + prefix, api_key=key, max_retries=0, timeout=60)


def test_create_list_retrieve_content_delete(server, orgs) -> None:
    client = sdk(server, orgs["key_a"])
    lines = b"".join(b'{"custom_id": "r%d", "method": "POST", "url": "/v1/embeddings", "body": {}}\n' % i
                     for i in range(100))
    made = client.files.create(file=("input.jsonl", io.BytesIO(lines)), purpose="batch")
    assert made.id.startswith("file-") and made.object == "file" and made.bytes == len(lines)
    assert made.filename == "input.jsonl" and made.purpose == "batch" and made.status == "processed"
    assert made.expires_at == made.created_at + 30 * 86400
    note = client.files.create(file=("notes.txt", b"hello"), purpose="user_data",
                               expires_after={"anchor": "created_at", "seconds": 7200})
    assert note.expires_at == note.created_at + 7200
    got = client.files.retrieve(made.id)
    assert got.model_dump() == made.model_dump()
    assert client.files.content(made.id).content == lines
    # the same surface under the other prefixes
    assert sdk(server, orgs["key_a"], "/openai/v1").files.retrieve(note.id).id == note.id
    assert sdk(server, orgs["key_a"], "/api/v1").files.content(note.id).content == b"hello"
    listed = client.files.list()
    ids = [f.id for f in listed.data]
    assert ids.index(note.id) < ids.index(made.id)  # newest first
    assert [f.id for f in client.files.list(purpose="batch").data] == [made.id]
    deleted = client.files.delete(note.id)
    assert deleted.id == note.id and deleted.deleted is True and deleted.object == "file"
    with pytest.raises(openai.NotFoundError) as err:
        client.files.retrieve(note.id)
    assert err.value.body["param"] == "file_id" and err.value.body["type"] == "invalid_request_error"
    with pytest.raises(openai.NotFoundError):
        client.files.delete(note.id)


def test_pagination_with_the_sdk_iterator(server, orgs) -> None:
    client = sdk(server, orgs["key_b"])
    made = [client.files.create(file=(f"{i}.txt", b"x" * (i + 1)), purpose="user_data").id for i in range(5)]
    page = client.files.list(limit=2, order="asc", purpose="user_data")
    assert len(page.data) == 2 and page.has_more
    seen = [f.id for f in page]  # the SDK follows `after` = last id across pages
    assert [i for i in seen if i in made] == made
    raw = httpx.get(server.url + "/v1/files", params={"limit": 2}, headers=server.headers(orgs["key_b"])).json()
    assert raw["object"] == "list" and raw["has_more"] is True
    assert raw["first_id"] == raw["data"][0]["id"] and raw["last_id"] == raw["data"][1]["id"]
    for bad, param in (({"limit": 0}, "limit"), ({"order": "up"}, "order"), ({"after": "file-nope"}, "after")):
        r = httpx.get(server.url + "/v1/files", params=bad, headers=server.headers(orgs["key_b"]))
        assert r.status_code in (400, 404) and r.json()["error"]["param"] == param, r.text


def test_another_orgs_ids_are_404_everywhere(server, orgs) -> None:
    mine = sdk(server, orgs["key_a"]).files.create(file=("secret.txt", b"mine"), purpose="user_data")
    other = sdk(server, orgs["key_b"])
    for call in (lambda: other.files.retrieve(mine.id), lambda: other.files.content(mine.id),
                 lambda: other.files.delete(mine.id), lambda: other.files.list(after=mine.id)):
        with pytest.raises(openai.NotFoundError):
            call()
    assert mine.id not in [f.id for f in other.files.list().data]
    assert sdk(server, orgs["key_a"]).files.content(mine.id).content == b"mine"  # untouched


def test_limits_and_bad_forms_name_the_field(server, orgs) -> None:
    client = sdk(server, orgs["key_a"])
    before = {f.id for f in client.files.list().data}
    with pytest.raises(openai.APIStatusError) as err:
        client.files.create(file=("big.bin", b"x" * (LIMIT + 1)), purpose="user_data")
    assert err.value.status_code == 413 and err.value.body["param"] == "file"
    with pytest.raises(openai.APIStatusError) as err:  # batch inputs have their own, smaller limit
        client.files.create(file=("big.jsonl", b"{}\n" * (BATCH_LIMIT // 3 + 1)), purpose="batch")
    assert err.value.status_code == 413 and err.value.body["param"] == "file"
    cases = [(dict(file=("x.csv", b"a,b"), purpose="batch"), "file"),
             (dict(file=("x.txt", b"a"), purpose="batch_output"), "purpose"),
             (dict(file=("x.txt", b"a"), purpose="nope"), "purpose"),
             (dict(file=("x.txt", b""), purpose="user_data"), "file"),
             (dict(file=("x.txt", b"a"), purpose="user_data", expires_after={"anchor": "created_at", "seconds": 60}),
              "expires_after[seconds]")]
    for kwargs, param in cases:
        with pytest.raises(openai.BadRequestError) as bad:
            client.files.create(**kwargs)
        assert bad.value.body["param"] == param, (kwargs, bad.value.body)
    r = httpx.post(server.url + "/v1/files", headers=server.headers(orgs["key_a"]), data={"purpose": "user_data"},
                   files={"other": ("a.txt", b"a")})
    assert r.status_code == 400 and r.json()["error"]["param"] == "file"
    assert {f.id for f in client.files.list().data} == before  # nothing half-made is listed


def test_file_before_purpose_in_the_form(server, orgs) -> None:
    """openai-node and curl may send `file` first: the purpose's rules apply once the form ends."""
    boundary = "b0undary"

    def form(purpose: str, filename: str, data: bytes) -> bytes:
        return (f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
                f"Content-Type: application/octet-stream\r\n\r\n").encode() + data + \
            (f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\n{purpose}\r\n'
             f"--{boundary}--\r\n").encode()

    headers = {**server.headers(orgs["key_a"]), "Content-Type": f"multipart/form-data; boundary={boundary}"}
    ok = httpx.post(server.url + "/v1/files", headers=headers, content=form("batch", "a.jsonl", b"{}\n"))
    assert ok.status_code == 200 and ok.json()["purpose"] == "batch" and ok.json()["bytes"] == 3
    big = httpx.post(server.url + "/v1/files", headers=headers,
                     content=form("batch", "a.jsonl", b"x" * (BATCH_LIMIT + 1)))
    assert big.status_code == 413 and big.json()["error"]["param"] == "file"


def test_oversized_upload_is_refused_before_the_body_is_read(server, orgs) -> None:
    """A declared length past the limit is answered at once, while the client has sent only its headers."""
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall((f"POST /v1/files HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {orgs['key_a']}\r\n"
                      f"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: {LIMIT * 100}\r\n\r\n"
                      ).encode())
        reply = ""
        while '"param"' not in reply and (data := sock.recv(65536)):  # headers and body may come in two reads
            reply += data.decode("latin-1")
    assert reply.startswith("HTTP/1.1 413") and '"param":"file"' in reply


def test_expired_files_vanish_and_are_swept(server, orgs) -> None:
    client = sdk(server, orgs["key_b"])
    f = client.files.create(file=("soon.txt", b"temporary"), purpose="user_data",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    ctx = server.app.state.ctx

    async def expire() -> None:  # an hour passing, as the database sees it
        async with ctx.store.engine.begin() as conn:
            await conn.execute(update(files_table).where(files_table.c.id == f.id).values(expires_at=time.time() - 1))

    server.on_server_loop(expire())
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(f.id)
    assert f.id not in [x.id for x in client.files.list().data]
    key = f"files/{orgs['b']}/{f.id}"
    assert server.on_server_loop(ctx.storage.exists(key))
    assert server.on_server_loop(ctx.files.sweep()) >= 1
    assert not server.on_server_loop(ctx.storage.exists(key))


def test_org_admin_sees_storage_totals(server, orgs) -> None:
    client = sdk(server, orgs["key_a"])
    live = client.files.list().data
    r = httpx.get(f"{server.url}/api/organizations/{orgs['a']}/storage", headers=server.headers(orgs["admin_a"]))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["files"] == len(live) and body["bytes"] == sum(f.bytes for f in live)
    assert sum(v["bytes"] for v in body["by_purpose"].values()) == body["bytes"]
    other = httpx.get(f"{server.url}/api/organizations/{orgs['b']}/storage", headers=server.headers(orgs["admin_a"]))
    assert other.status_code == 404
    user = httpx.get(f"{server.url}/api/organizations/{orgs['a']}/storage", headers=server.headers(orgs["key_a"]))
    assert user.status_code == 403
