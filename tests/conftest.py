"""Fixtures: real servers on real sockets, a stub upstream, and fresh databases (SQLite file, PostgreSQL)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from modelyard.config import Settings
from modelyard.server.app import create_app

from .support.openai_stub import StubControl, create_stub
from .support.servers import ServerThread, free_port

ADMIN_KEY = "myd_test-admin-key-" + "x" * 24
PG_URL = os.environ.get("MODELYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------- databases

def _postgres_problem() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_problem()


@contextlib.contextmanager
def fresh_postgres_database(problem: str | None) -> Iterator[str]:
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test PostgreSQL: {problem}")
        pytest.skip(problem)
    import asyncpg

    name = "modelyard_t_" + secrets.token_hex(6)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None) -> Iterator[str]:
    """Each test that takes this runs once on a SQLite file and once on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'modelyard.db'}"
        return
    with fresh_postgres_database(postgres_problem) as url:
        yield url


# ---------------------------------------------------------------- upstream stub

@pytest.fixture(scope="session")
def stub_server() -> Iterator[tuple[ServerThread, StubControl]]:
    control = StubControl()
    with ServerThread(create_stub(control)) as srv:
        yield srv, control


@pytest.fixture(scope="session")
def stub_server_b() -> Iterator[tuple[ServerThread, StubControl]]:
    """A second upstream, for routing between deployments."""
    control = StubControl(reply="Hello from upstream B")
    with ServerThread(create_stub(control)) as srv:
        yield srv, control


@pytest.fixture
def stub_b(stub_server_b: tuple[ServerThread, StubControl]) -> StubControl:
    _, control = stub_server_b
    control.__init__(reply="Hello from upstream B")  # type: ignore[misc]
    return control


@pytest.fixture
def stub(stub_server: tuple[ServerThread, StubControl]) -> StubControl:
    """The stub's controls, reset for each test."""
    _, control = stub_server
    control.__init__()  # type: ignore[misc]
    return control


# ---------------------------------------------------------------- the server under test

def upstream_models(stub_url: str) -> list[dict[str, Any]]:
    return [
        {"id": "stub-gpt", "type": "text", "aliases": ["gpt-stub"],
         "deployments": [{"name": "stub-eu", "backend": "openai", "base_url": stub_url + "/v1",
                          "api_key": "upstream-secret", "model": "stub-model", "timeout": 5, "region": "eu"}]},
        {"id": "stub-embed", "type": "embedding",
         "deployments": [{"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-embedder"}]},
        {"id": "stub-tts", "type": "audio", "tasks": ["speech"],
         "deployments": [{"backend": "openai", "base_url": stub_url + "/v1"}]},
        {"id": "stub-video", "type": "video",  # declared, but OpenAI upstreams carry no video API
         "deployments": [{"backend": "openai", "base_url": stub_url + "/v1"}]},
        {"id": "stub-slow", "type": "text",
         "deployments": [{"backend": "openai", "base_url": stub_url + "/v1", "model": "stub-model", "timeout": 0.5}]},
        {"id": "stub-dead", "type": "text",
         "deployments": [{"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout": 2,
                          "connect_timeout": 1}]},
    ]


def make_settings(tmp: Path, *, database_url: str | None = None, models: list[dict[str, Any]] | None = None,
                  **extra: Any) -> Settings:
    return Settings(data_dir=tmp / "data", database_url=database_url, admin_key=ADMIN_KEY, models=models or [],
                    **extra)


@dataclass
class Running:
    url: str
    settings: Settings
    app: Any
    thread: ServerThread
    admin_key: str = ADMIN_KEY

    def on_server_loop(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine on the server's own event loop (for the app's loop-bound objects)."""
        return asyncio.run_coroutine_threadsafe(coro, self.thread.loop).result(timeout)

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def headers(self, key: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.admin_key}"}


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Running]:
    app = create_app(settings)
    with ServerThread(app) as srv:
        yield Running(url=srv.url, settings=settings, app=app, thread=srv)


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           stub_server: tuple[ServerThread, StubControl], postgres_problem: str | None) -> Iterator[Running]:
    """One server per test module and database: built-in models and upstream deployments on the stub."""
    tmp = tmp_path_factory.mktemp("server")
    models = upstream_models(stub_server[0].url)
    # these suites provoke upstream failures on purpose; cooldown (tested on its own) would mask the mapping
    quiet = {"cooldown_failures": 1_000_000}
    if request.param == "sqlite":
        with running(make_settings(tmp, models=models, **quiet)) as srv:
            yield srv
        return
    with fresh_postgres_database(postgres_problem) as url, \
            running(make_settings(tmp, database_url=url, models=models, **quiet)) as srv:
        yield srv
