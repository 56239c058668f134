"""The `modelyard` command as a user runs it: first start, admin key, orgs and keys from the shell."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import stat

import httpx
import openai
import pytest

from modelyard.config import normalize_database_url
from modelyard.store.audit_repo import AuditRepo
from modelyard.store.db import Store

from .support.processes import cli, serve, stop


@pytest.mark.slow
def test_first_start_creates_data_dir_and_shows_admin_key_once(tmp_path):
    proc, url = serve(tmp_path)
    try:
        data = tmp_path / "modelyard-data"
        key_file = data / "admin-key"
        key = key_file.read_text().strip()
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert (data / "media").is_dir()
        with sqlite3.connect(data / "modelyard.db") as db:
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        models = openai.OpenAI(base_url=url + "/v1", api_key=key).models.list()
        assert any(m.id == "smollm2-135m-instruct" for m in models.data)
    finally:
        first_output = stop(proc)
    assert first_output.count(key) == 1
    proc, url = serve(tmp_path)
    second_output = stop(proc)
    assert key not in second_output and "shown once" not in second_output


@pytest.mark.slow
def test_admin_key_from_env_data_dir_flag_and_workers(tmp_path):
    key = "myd_env-provided-admin-key-123456"
    proc, url = serve(tmp_path, "--data-dir", "elsewhere", "--workers", "2", env={"MODELYARD_ADMIN_KEY": key})
    try:
        assert not (tmp_path / "elsewhere" / "admin-key").exists()
        assert (tmp_path / "elsewhere" / "modelyard.db").exists()
        for _ in range(4):  # both worker processes answer with the same store
            r = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
            assert r.status_code == 200
    finally:
        out = stop(proc)
    assert key not in out


@pytest.mark.slow
def test_config_file_adds_an_upstream(tmp_path, stub_server, stub):
    srv, _ = stub_server
    (tmp_path / "modelyard.yaml").write_text(
        "models:\n"
        "  - id: my-upstream\n"
        "    deployments:\n"
        f"      - backend: openai\n        base_url: {srv.url}/v1\n        api_key: ${{UPSTREAM_KEY}}\n"
        "        model: stub-model\n")
    proc, url = serve(tmp_path, "--config", "modelyard.yaml",
                      env={"UPSTREAM_KEY": "from-env", "MODELYARD_ADMIN_KEY": "myd_cfg-test-key-0123456789"})
    try:
        client = openai.OpenAI(base_url=url + "/v1", api_key="myd_cfg-test-key-0123456789")
        resp = client.chat.completions.create(model="my-upstream", messages=[{"role": "user", "content": "hi"}])
        assert resp.choices[0].message.content == stub.reply
        assert stub.headers[-1]["authorization"] == "Bearer from-env"
    finally:
        stop(proc)


def test_orgs_and_keys_commands(tmp_path, database_url):
    env = {"MODELYARD_DATABASE_URL": database_url, "MODELYARD_DATA_DIR": str(tmp_path / "d")}
    r = cli("orgs", "create", "acme", "--plan", "pro", "--json", env=env)
    assert r.returncode == 0, r.stderr
    org = json.loads(r.stdout)[0]
    assert org["name"] == "acme" and org["plan"] == "pro"
    assert cli("orgs", "create", "acme", env=env).returncode == 1  # names are unique

    r = cli("keys", "create", "--org", "acme", "--name", "ci", "--scopes", "user:read,admin:read", "--json", env=env)
    assert r.returncode == 0, r.stderr
    created = json.loads(r.stdout)
    secret = created["secret"]
    assert secret.startswith("myd_") and created["scopes"] == ["user:read", "admin:read"]

    listing = cli("keys", "list", "--org", "acme", "--json", env=env)
    assert secret not in listing.stdout  # never shown again
    rows = json.loads(listing.stdout)
    assert [r["id"] for r in rows] == [created["id"]] and rows[0]["status"] == "active"

    assert cli("keys", "create", "--scopes", "root", env=env).returncode == 2
    assert cli("keys", "create", "--org", "nobody", env=env).returncode == 1

    r = cli("keys", "revoke", created["id"], env=env)
    assert r.returncode == 0 and "revoked" in r.stdout
    rows = json.loads(cli("keys", "list", "--org", "acme", "--json", env=env).stdout)
    assert rows[0]["status"] == "revoked" and rows[0]["revoked_at"]
    orgs = json.loads(cli("orgs", "list", "--json", env=env).stdout)
    assert [o["name"] for o in orgs] == ["acme"]

    assert cli("orgs", "top-up", "acme", "--amount-cents", "300", env=env).returncode == 0
    assert cli("orgs", "update", "acme", "--plan", "standard", env=env).returncode == 0
    # every change above is in the audit log, made by the CLI's user, without the key's secret
    entries = asyncio.run(_audit_entries(database_url))
    assert [e["action"] for e in reversed(entries)] == ["organization.create", "token.create", "token.revoke",
                                                         "wallet.top_up", "organization.update"]
    assert all(e["actor_kind"] == "cli" and "@" in e["actor_id"] and e["org_id"] == org["id"] for e in entries)
    assert entries[0]["before"] == {"plan": "pro"} and entries[0]["after"] == {"plan": "standard"}
    assert secret not in str(entries)


async def _audit_entries(database_url: str) -> list[dict]:
    store = Store(normalize_database_url(database_url))
    try:
        return await AuditRepo(store).list(None)
    finally:
        await store.aclose()


def test_models_command_lists_builtin(tmp_path):
    r = cli("models", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert any(m["id"] == "smollm2-135m-instruct" for m in json.loads(r.stdout))
