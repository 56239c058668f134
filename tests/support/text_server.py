"""A server for the completions and Responses suites: the built-in local model, the OpenAI stub in three
completion modes, an Anthropic stub (no native completions), and a SearXNG-compatible search stub."""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo, TokenRepo

from ..conftest import Running, quiet_server, upstream_models
from .provider_stubs import ProviderControl, create_provider_stub
from .searxng_stub import SearchControl, create_search_stub
from .servers import ServerThread


@dataclass
class TextSetup:
    srv: Running
    provider: ProviderControl
    search: SearchControl


def text_models(stub_url: str, provider_url: str) -> list[dict[str, Any]]:
    openai_dep = {"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-model", "timeout": 10}
    return upstream_models(stub_url) + [
        # an upstream without /completions (a chat model at OpenAI): found out on first use, then served via chat
        {"id": "stub-legacy", "deployments": [dict(openai_dep)]},
        # the operator says so up front
        {"id": "stub-viachat", "deployments": [{**openai_dep, "options": {"completions": "chat"}}]},
        {"id": "claude", "deployments": [{"backend": "anthropic", "base_url": provider_url + "/v1",
                                          "api_key": "sk-ant-test", "model": "claude-x"}]},
    ]


@contextlib.contextmanager
def text_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[TextSetup]:
    """A `server_fixture` build: the server and the provider and search stubs' controls."""
    provider, search = ProviderControl(), SearchControl()
    with ServerThread(create_provider_stub(provider)) as pstub, ServerThread(create_search_stub(search)) as sstub, \
            quiet_server(tmp, database_url, text_models(stub_url, pstub.url),
                         web_search_url=sstub.url + "/search") as srv:
        yield TextSetup(srv=srv, provider=provider, search=search)


def new_org_key(srv: Running, name: str, scopes: list[str] | None = None) -> str:
    """A second organization and a key for it, made through the repositories (as the CLI does)."""
    async def go() -> str:
        store = Store(srv.settings.resolved_database_url)
        try:
            org = await OrgRepo(store).create(name)
            _, secret = await TokenRepo(store).create(org.id, "test", scopes or ["user:read", "user:write"])
            return secret
        finally:
            await store.aclose()
    return asyncio.run(go())
