"""A server for the dialect suites: built-in local models, the OpenAI stub, and Anthropic/Gemini provider stubs."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

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
def dialect_server(tmp: Path, database_url: str | None, openai_stub_url: str) -> Iterator[tuple[Any, ProviderControl]]:
    from ..conftest import make_settings, running, upstream_models

    control = ProviderControl()
    with ServerThread(create_provider_stub(control)) as providers:
        models = upstream_models(openai_stub_url) + provider_models(providers.url)
        settings = make_settings(tmp, database_url=database_url, models=models, cooldown_failures=1_000_000)
        with running(settings) as srv:
            yield srv, control
