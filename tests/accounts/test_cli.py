"""`modelyard users`: the operator's first user from the command line, who can then sign in."""

from __future__ import annotations

import json

from ..conftest import make_settings, running
from ..support.processes import cli
from .helpers import PASSWORD, get, post


def test_users_create_makes_a_user_who_can_sign_in(tmp_path, database_url):
    env = {"MODELYARD_DATABASE_URL": database_url, "MODELYARD_DATA_DIR": str(tmp_path / "data")}
    r = cli("users", "create", "--email", "Ops@Example.com", "--org", "default", "--role", "owner",
            "--password-stdin", "--json", env=env, input=PASSWORD + "\n")
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)[0]
    assert made["email"] == "ops@example.com" and made["organizations"][0]["role"] == "owner"
    assert PASSWORD not in r.stdout + r.stderr
    again = cli("users", "create", "--email", "ops@example.com", "--password-stdin", env=env, input=PASSWORD + "\n")
    assert again.returncode == 1 and "taken" in again.stderr
    short = cli("users", "create", "--email", "b@example.com", "--password-stdin", env=env, input="short\n")
    assert short.returncode == 1 and "8 characters" in short.stderr
    listed = json.loads(cli("users", "list", "--json", env=env).stdout)
    assert [u["email"] for u in listed] == ["ops@example.com"]

    with running(make_settings(tmp_path, database_url=database_url)) as srv:
        r = post(srv.url + "/api/auth/login", json={"email": "ops@example.com", "password": PASSWORD})
        assert r.status_code == 200, r.text
        assert r.json()["organization"]["role"] == "owner"
        assert get(srv.url + "/api/auth/setup").json() == {"needed": False}  # setup is closed
