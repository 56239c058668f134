"""Fixtures: real servers on real sockets, a stub upstream, and fresh databases (SQLite file, PostgreSQL)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import pytest

from modelyard.config import Settings
from modelyard.server.app import create_app

from .support.openai_stub import StubControl, create_stub
from .support.servers import ServerThread, free_port

ADMIN_KEY = "myd_test-admin-key-" + "x" * 24
PG_URL = os.environ.get("MODELYARD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


# ---------------------------------------------------------------- databases

def off_loop(coro: Any) -> Any:
    """Run a coroutine to completion in a thread of its own: Playwright's sync API (the console tests) keeps an
    event loop running in the main thread, where asyncio.run refuses to start another."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _postgres_problem() -> str | None:
    try:
        import asyncpg
    except ImportError:
        return "asyncpg is not installed"

    async def probe() -> None:
        conn = await asyncpg.connect(PG_URL, timeout=3)
        await conn.close()

    try:
        off_loop(probe())
    except Exception as exc:
        return f"PostgreSQL at {PG_URL} is unreachable: {exc}"
    return None


@pytest.fixture(scope="session")
def postgres_problem() -> str | None:
    return _postgres_problem()


def require(what: str, problem: str | None) -> None:
    """Skip a test whose service or tool is missing, locally only: under CI (the CI variable set) it fails, so
    every test runs there."""
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"CI must test {what}: {problem}")
        pytest.skip(problem)


@contextlib.contextmanager
def fresh_postgres_database(problem: str | None) -> Iterator[str]:
    require("PostgreSQL", problem)
    import asyncpg

    name = "modelyard_t_" + secrets.token_hex(6)

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    off_loop(run(f'CREATE DATABASE "{name}"'))
    base, _, _ = PG_URL.rpartition("/")
    try:
        yield f"{base}/{name}"
    finally:
        off_loop(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@contextlib.contextmanager
def database_for(kind: str, postgres_problem: str | None) -> Iterator[str | None]:
    """None for SQLite (the server's own file in its data dir), else the URL of a fresh PostgreSQL database."""
    if kind == "sqlite":
        yield None
        return
    with fresh_postgres_database(postgres_problem) as url:
        yield url


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_problem: str | None) -> Iterator[str]:
    """Each test that takes this runs once on a SQLite file and once on a fresh PostgreSQL database."""
    with database_for(request.param, postgres_problem) as url:
        yield url or f"sqlite:///{tmp_path / 'db' / 'modelyard.db'}"


# ---------------------------------------------------------------- other services and tools

REDIS_URL = os.environ.get("MODELYARD_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """A reachable Redis (tests that take this skip locally without one; under CI they fail)."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping()
    except Exception as exc:
        require("Redis", f"Redis at {REDIS_URL} is unreachable: {exc}")
    return REDIS_URL


def require_espeak() -> None:
    """The espeak-ng speech engine: a test that needs it skips locally without it; under CI it fails."""
    require("espeak-ng", None if shutil.which("espeak-ng") else "espeak-ng is not installed (apt-get install espeak-ng)")


@pytest.fixture(scope="session")
def espeak() -> None:
    require_espeak()


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


# (tmp dir, database URL or None for SQLite, the OpenAI stub's URL) -> a context manager yielding what tests get
ServerBuild = Callable[[Path, "str | None", str], ContextManager[Any]]


def server_fixture(name: str, build: ServerBuild) -> Any:
    """A module-scoped fixture `name`: what `build` yields, built once on SQLite and once on a fresh PostgreSQL
    database. Every suite that needs a server of its own makes its fixture here, so they all run on both."""
    @pytest.fixture(name=name, scope="module", params=DATABASES)
    def fixture(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                stub_server: tuple[ServerThread, StubControl], postgres_problem: str | None) -> Iterator[Any]:
        with database_for(request.param, postgres_problem) as url, \
                build(tmp_path_factory.mktemp(name), url, stub_server[0].url) as built:
            yield built
    return fixture


def quiet_server(tmp: Path, database_url: str | None, models: list[dict[str, Any]],
                 **extra: Any) -> ContextManager[Running]:
    """A server on these models. The suites provoke upstream failures on purpose; cooldown (tested on its own)
    would mask the mapping, so it never trips here."""
    return running(make_settings(tmp, database_url=database_url, models=models, cooldown_failures=1_000_000,
                                 **extra))


def upstream_server(tmp: Path, database_url: str | None, stub_url: str) -> ContextManager[Running]:
    """Built-in models and upstream deployments on the stub. Prompt rewrites go to the stub: the fuzz sends dozens
    (up to four prompts of 160 tokens each), which the built-in model takes minutes to write on a busy CPU."""
    return quiet_server(tmp, database_url, upstream_models(stub_url), prompt_rewrite_model="stub-gpt")


server = server_fixture("server", upstream_server)
