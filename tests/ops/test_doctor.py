"""`modelyard doctor` on a real config and database: working parts are OK, an unreachable upstream FAILs with its
fix, and the exit code says whether anything failed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

from ..support.paths import REPO
from ..support.processes import cli
from ..support.servers import free_port


def _env() -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    return {**clean, "PYTHONPATH": str(REPO / "src")}


def _doctor(tmp: Path, config: dict, *, migrate: bool = False, table: bool = False) -> tuple[int, list[dict], str]:
    path = tmp / "modelyard.yaml"
    path.write_text(yaml.safe_dump(config))
    base = ["--config", str(path), "--data-dir", str(tmp / "data")]
    if migrate:
        assert cli("migrate", *base, env=_env()).returncode == 0
    if table:
        r = cli("doctor", *base, "--timeout", "5", env=_env())
        return r.returncode, [], r.stdout
    r = cli("doctor", *base, "--json", "--timeout", "5", env=_env())
    return r.returncode, json.loads(r.stdout), ""


def test_doctor_names_what_is_wrong_and_how_to_fix_it(tmp_path: Path, database_url: str) -> None:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    config = {"database_url": database_url, "builtin_models": False,
              "models": [{"id": "echo", "deployments": [{"backend": "echo"}]},
                         {"id": "gone", "deployments": [{"backend": "openai", "base_url": dead, "api_key": "sk-x"}]}]}
    code, rows, _ = _doctor(tmp_path, config, migrate=True)
    by = {r["check"]: r for r in rows}
    assert code == 1
    assert by["database"]["status"] == "OK" and "schema at" in by["database"]["detail"]
    assert by["storage"]["status"] == "OK" and by["redis"]["status"] == "OK"
    assert by["secrets at rest"]["status"] == "OK" and by["clock"]["status"] in ("OK", "WARN")
    assert by["echo/echo (echo)"]["status"] == "OK"
    gone = by["gone/openai (openai)"]
    assert gone["status"] == "FAIL" and "cannot connect" in gone["detail"]
    assert dead in gone["fix"] and "sk-x" not in json.dumps(rows)  # the fix names the URL, never the key
    code, _, table = _doctor(tmp_path, config, table=True)
    assert code == 1 and table.split("\n")[0].split() == ["CHECK", "STATUS", "DETAIL", "FIX"]
    assert any(line.startswith("gone/openai") and "FAIL" in line for line in table.splitlines())

    config["models"] = config["models"][:1]
    config["redis_url"] = f"redis://127.0.0.1:{free_port()}"
    code, rows, _ = _doctor(tmp_path, config)
    by = {r["check"]: r for r in rows}
    assert code == 1 and by["redis"]["status"] == "FAIL" and "redis_url" in by["redis"]["fix"]

    del config["redis_url"]
    code, _, table = _doctor(tmp_path, config, table=True)
    assert code == 0 and "all OK" in table, table
