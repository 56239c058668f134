"""Secrets at rest: a worker's serving key is sealed in its column, opened on read, resealed by `secrets rotate`
(after which the old key can go), and a wrong key stops a server at start with a message naming the fix."""

from __future__ import annotations

import asyncio
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import select

from modelyard.config import load_settings, normalize_database_url
from modelyard.store.db import Store
from modelyard.store.secrets import PREFIX, SecretBox, SecretKeyError, generate_key
from modelyard.store.tables import workers

from ..conftest import ADMIN_KEY, make_settings, running
from ..support.paths import REPO
from ..support.processes import CLI, cli
from ..support.workers import token_for

SERVING_KEY = "serving-key-" + "s" * 52  # the longest accepted (64): sealed, it still fits the column


def _register(srv: Any, secret: str = SERVING_KEY) -> httpx.Response:
    token = token_for(srv, "default", ["worker"])
    return httpx.post(srv.url + "/api/workers/register", headers={"Authorization": f"Bearer {token}"}, json={
        "name": "w1", "url": "http://127.0.0.1:9", "secret": secret,
        "models": [{"id": "m", "type": "text", "tasks": ["chat"]}]})


def _raw(database_url: str) -> list[str]:
    async def go() -> list[str]:
        store = Store(normalize_database_url(database_url))
        try:
            async with store.engine.connect() as conn:
                return [r.secret for r in (await conn.execute(select(workers.c.secret))).all()]
        finally:
            await store.aclose()
    return asyncio.run(go())


def _env(**extra: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**clean, "PYTHONPATH": str(REPO / "src"), **extra}


def test_a_box_seals_opens_and_reseals() -> None:
    old, new = generate_key(), generate_key()
    sealed = SecretBox([old]).seal("hello")
    assert sealed.startswith(PREFIX) and "hello" not in sealed
    both = SecretBox([new, old])
    assert both.open(sealed) == "hello" and not both.newest(sealed)
    again = both.reseal(sealed)
    assert SecretBox([new]).open(again) == "hello" and both.newest(again)
    assert SecretBox([new]).open("written before encryption") == "written before encryption"
    with pytest.raises(SecretKeyError, match="not configured"):
        SecretBox([new]).open(sealed)
    # a passphrase is stretched into a key, the same one each time
    assert SecretBox(["a long passphrase, 16+"]).open(SecretBox(["a long passphrase, 16+"]).seal("x")) == "x"
    with pytest.raises(SecretKeyError, match="at least 16"):
        SecretBox(["short"])


def test_without_a_key_one_is_made_in_the_data_dir_readable_by_the_owner_only(tmp_path: Path) -> None:
    box = SecretBox.from_settings(make_settings(tmp_path))
    key_file = tmp_path / "data" / "secret-key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert SecretBox.from_settings(make_settings(tmp_path)).open(box.seal("x")) == "x"  # the same key next start


def test_a_config_reads_secrets_from_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "openai").write_text("sk-from-a-file\n")
    monkeypatch.setenv("UPSTREAM_BASE", "http://up.example/v1")
    config = tmp_path / "modelyard.yaml"
    config.write_text(yaml.safe_dump({"builtin_models": False, "models": [{"id": "m", "deployments": [
        {"backend": "openai", "base_url": "${UPSTREAM_BASE}", "api_key": "${file:" + str(tmp_path / "openai") + "}"}]}]}))
    dep = load_settings(config).models[0].deployments[0]
    assert dep.api_key == "sk-from-a-file" and dep.base_url == "http://up.example/v1"
    config.write_text("admin_key: ${file:/nonexistent/secret}\n")
    with pytest.raises(SystemExit, match="cannot read the secret file /nonexistent/secret"):
        load_settings(config)


def test_serving_keys_are_sealed_rotated_and_a_wrong_key_stops_the_start(tmp_path: Path, database_url: str) -> None:
    old, new = generate_key(), generate_key()
    settings = make_settings(tmp_path, database_url=database_url, secret_key=old)
    with running(settings) as srv:
        assert _register(srv, SERVING_KEY + "x").status_code == 400  # too long to seal into the column
        r = _register(srv)
        assert r.status_code == 200, r.text
        listed = httpx.get(srv.url + "/api/workers", headers=srv.headers()).json()["data"]
        assert [w["name"] for w in listed] == ["w1"]  # read back through the box
    [stored] = _raw(database_url)
    assert stored.startswith(PREFIX) and SERVING_KEY not in stored
    assert SecretBox([old]).open(stored) == SERVING_KEY

    config = tmp_path / "modelyard.yaml"
    config.write_text(yaml.safe_dump({"database_url": database_url, "builtin_models": False}))
    # the new key first, the old one after it: rotate reseals with the new one
    r = cli("secrets", "rotate", "--config", str(config), "--data-dir", str(tmp_path / "d"),
            env=_env(MODELYARD_SECRET_KEY=f"{new},{old}"))
    assert r.returncode == 0, r.stderr
    assert "resealed 1" in r.stdout
    [rotated] = _raw(database_url)
    assert rotated != stored and SecretBox([new]).open(rotated) == SERVING_KEY
    # the old key removed: a server on the new key alone reads the worker
    with running(make_settings(tmp_path, database_url=database_url, secret_key=new)) as srv:
        assert [w["name"] for w in httpx.get(srv.url + "/api/workers", headers=srv.headers()).json()["data"]] == ["w1"]
    # a key that opens nothing stops `serve` before it listens, saying what to set
    proc = subprocess.run([*CLI, "serve", "--config", str(config), "--data-dir", str(tmp_path / "d"), "--port", "1"],
                          env=_env(MODELYARD_SECRET_KEY=generate_key(), MODELYARD_ADMIN_KEY=ADMIN_KEY),
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1
    assert "sealed with a key that is not configured" in proc.stderr and "MODELYARD_SECRET_KEY" in proc.stderr
