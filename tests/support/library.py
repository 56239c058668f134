"""Library test helpers: a server with echo, demo-image and a stub speech upstream, and waits for items."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import httpx

from ..conftest import Running, make_settings, running
from .accounts import create_key, create_org, top_up
from .jobs import FAST, job_models
from .waiting import wait_until

SHARE_RPM = 40


@contextlib.contextmanager
def library_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Running]:
    models = [*job_models(), {"id": "stub-tts", "type": "audio", "tasks": ["speech"],
                              "deployments": [{"backend": "openai", "base_url": stub_url + "/v1"}]}]
    extra = {**FAST, "allow_private_urls": True, "fal_slugs": {"fal-ai/demo": "demo-image"},
             "share_requests_per_minute": SHARE_RPM}
    with running(make_settings(tmp, database_url=database_url, models=models, **extra)) as s:
        yield s


def new_org(srv: Running, **settings: Any) -> tuple[str, str]:
    """An enterprise org with money and a user key; `settings` patched onto it by the operator."""
    org = create_org(srv, "enterprise")
    top_up(srv, org["id"], 100_00)
    if settings:
        r = httpx.patch(f"{srv.url}/api/organizations/{org['id']}", json=settings, headers=srv.headers())
        assert r.status_code == 200, r.text
    return org["id"], create_key(srv, org["id"])


def flush(srv: Running) -> None:
    """Items queued in the server's process (write-behind, background saves) written now."""
    srv.on_server_loop(srv.app.state.ctx.library.flush())


def items(http: httpx.Client, srv: Running, key: str | None = None, **params: Any) -> list[dict[str, Any]]:
    r = http.get("/api/library/items", params={"limit": 100, **params}, headers=srv.headers(key))
    assert r.status_code == 200, r.text
    return r.json()["data"]


def item_where(http: httpx.Client, srv: Running, check: Any, key: str | None = None, timeout: float = 120,
               **params: Any) -> dict[str, Any]:
    """The first item `check` accepts, once the runner (another thread) has recorded it."""
    def found() -> dict[str, Any] | None:
        flush(srv)
        return next((i for i in items(http, srv, key, **params) if check(i)), None)
    return wait_until(found, timeout, "a library item", interval=0.2)


def of_job(job_id: str) -> Any:
    return lambda item: item["source"]["job_id"] == job_id
