"""A server for the dialect suites: built-in local models, the OpenAI stub, and Anthropic/Gemini provider stubs."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import pytest

from .provider_stubs import ProviderControl, create_provider_stub
from .servers import ServerThread

WEATHER_NAME = "get_weather"


def provider_models(stub_url: str) -> list[dict[str, Any]]:
    return [
        {"id": "claude-up", "deployments": [{"backend": "anthropic", "base_url": stub_url + "/v1",
                                             "api_key": "sk-ant-test", "model": "claude-x"}]},
        {"id": "gemini-up", "deployments": [{"backend": "gemini", "base_url": stub_url + "/v1beta",
                                             "api_key": "goog-test", "model": "gemini-x"}]},
    ]


@contextlib.contextmanager
def dialect_server(tmp: Path, database_url: str | None, openai_stub_url: str,
                   **settings: Any) -> Iterator[tuple[Any, ProviderControl]]:
    """A `server_fixture` build: the server and the provider stubs' controls."""
    from ..conftest import quiet_server, upstream_models

    control = ProviderControl()
    with ServerThread(create_provider_stub(control)) as providers, \
            quiet_server(tmp, database_url, upstream_models(openai_stub_url) + provider_models(providers.url),
                         **settings) as srv:
        yield srv, control


# for suites whose `env` fixture is server_fixture("env", dialect_server)
@pytest.fixture
def srv(env: tuple[Any, ProviderControl]) -> Any:
    return env[0]


@pytest.fixture
def providers(env: tuple[Any, ProviderControl]) -> ProviderControl:
    """The provider stubs' controls, reset for each test."""
    env[1].__init__()  # type: ignore[misc]
    return env[1]
