"""A real `modelyard worker` process beside a control plane, and what the control plane's router makes of it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import httpx

from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo, TokenRepo

from .servers import free_port
from .tiny_gguf import write_tiny_gguf


def token_for(srv, org_name: str, scopes: list[str]) -> str:
    async def go() -> str:
        store = Store(srv.settings.resolved_database_url)
        try:
            org = await OrgRepo(store).get(org_name) or await OrgRepo(store).create(org_name)
            _, secret = await TokenRepo(store).create(org.id, "w", scopes)
            return secret
        finally:
            await store.aclose()
    return asyncio.run(go())


class Worker:
    def __init__(self, tmp, plane, token: str, name: str, region: str | None = None, models: str = "tiny") -> None:
        self.port = free_port()
        self.name = name
        cfg = tmp / f"{name}.yaml"
        if models == "tiny":
            gguf = write_tiny_gguf(tmp / f"{name}.gguf")
            cfg.write_text(f"builtin_models: false\nmodels:\n  - id: tiny\n    deployments:\n"
                           f"      - backend: llama_cpp\n        path: {gguf}\n        n_ctx: 256\n")
        elif models == "echo":  # a model that loads nothing: for what a worker does around the work
            cfg.write_text("builtin_models: false\nmodels:\n  - id: echo\n    deployments:\n      - backend: echo\n")
        else:
            cfg.write_text("builtin_models: true\n")  # host some of the built-in models
        self.args = [sys.executable, "-m", "modelyard.cli", "worker", "--control-plane", plane.url,
                     "--models", models, "--name", name, "--port", str(self.port), "--heartbeat", "0.5",
                     "--config", str(cfg), "--data-dir", str(tmp / f"{name}-data"), "--log-level", "warning"]
        if region:
            self.args += ["--region", region]
        self.env = {**os.environ, "MODELYARD_WORKER_TOKEN": token}
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Worker":
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)


def deployments(plane) -> dict[str, str]:
    r = httpx.get(plane.url + "/api/model-status", headers=plane.headers())
    for m in r.json()["models"]:
        if m["model_id"] == "tiny":
            return {d["name"]: d["status"] for d in m["deployments"]}
    return {}
