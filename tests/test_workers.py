"""Remote workers: two real `modelyard worker` processes and a control plane; kill one, restart it."""

from __future__ import annotations

import asyncio
import base64
import functools
import os
import signal
import subprocess
import sys
import time

import httpx
import pytest

from modelyard.store.db import Store
from modelyard.store.repo import OrgRepo, TokenRepo

from .conftest import make_settings, running
from .support.servers import free_port
from .support import waiting

wait_until = functools.partial(waiting.wait_until, timeout=40.0)  # a worker process starts and announces itself
from .support.tiny_gguf import write_tiny_gguf

pytestmark = pytest.mark.slow


def _token(srv, org_name: str, scopes: list[str]) -> str:
    async def go() -> str:
        store = Store(srv.settings.resolved_database_url)
        try:
            org = await OrgRepo(store).get(org_name) or await OrgRepo(store).create(org_name)
            _, secret = await TokenRepo(store).create(org.id, "w", scopes)
            return secret
        finally:
            await store.aclose()
    return asyncio.run(go())


@pytest.fixture
def plane(tmp_path):
    settings = make_settings(tmp_path / "cp", builtin_models=False, worker_heartbeat_seconds=0.5,
                             worker_timeout_seconds=2.0, cooldown_failures=1_000_000)
    with running(settings) as srv:
        yield srv


class Worker:
    def __init__(self, tmp, plane, token: str, name: str, region: str | None = None, models: str = "tiny") -> None:
        self.port = free_port()
        self.name = name
        cfg = tmp / f"{name}.yaml"
        if models == "tiny":
            gguf = write_tiny_gguf(tmp / f"{name}.gguf")
            cfg.write_text(f"builtin_models: false\nmodels:\n  - id: tiny\n    deployments:\n"
                           f"      - backend: llama_cpp\n        path: {gguf}\n        n_ctx: 256\n")
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


def chat(plane) -> httpx.Response:
    return httpx.post(plane.v1 + "/chat/completions", headers=plane.headers(), timeout=30,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


def test_traffic_follows_workers_that_come_and_go(plane, tmp_path):
    token = _token(plane, "default", ["worker"])
    w1, w2 = Worker(tmp_path, plane, token, "w1").start(), Worker(tmp_path, plane, token, "w2").start()
    try:
        assert wait_until(lambda: set(deployments(plane)) == {"worker:w1", "worker:w2"}), deployments(plane)
        served = {chat(plane).headers["x-modelyard-deployment"] for _ in range(16)}
        assert served == {"worker:w1", "worker:w2"}

        w1.kill()
        started = time.monotonic()
        for _ in range(10):  # no failed request in the gap: a refused connection moves to w2
            r = chat(plane)
            assert r.status_code == 200 and r.headers["x-modelyard-deployment"] == "worker:w2"
        assert wait_until(lambda: set(deployments(plane)) == {"worker:w2"}, timeout=10)
        assert time.monotonic() - started < 8  # withdrawn within seconds of its last heartbeat

        w1.start()
        assert wait_until(lambda: set(deployments(plane)) == {"worker:w1", "worker:w2"})
        served = {chat(plane).headers["x-modelyard-deployment"] for _ in range(16)}
        assert "worker:w1" in served

        listed = httpx.get(plane.url + "/api/workers", headers=plane.headers()).json()["data"]
        assert {w["name"]: w["status"] for w in listed} == {"w1": "online", "w2": "online"}
    finally:
        w1.kill()
        w2.kill()


def test_worker_tokens_are_isolated(plane, tmp_path):
    worker_token = _token(plane, "default", ["worker"])
    user_token = _token(plane, "default", ["user:write"])
    foreign_worker = _token(plane, "someone-else", ["worker"])
    assert httpx.get(plane.v1 + "/models", headers={"Authorization": f"Bearer {worker_token}"}).status_code == 403
    body = {"name": "x", "url": "http://127.0.0.1:1", "models": [{"id": "tiny"}], "secret": "s" * 40}
    for token, status in ((user_token, 403), (foreign_worker, 403), (None, 401)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert httpx.post(plane.url + "/api/workers/register", json=body, headers=headers).status_code == status
    r = httpx.post(plane.url + "/api/workers/register", headers={"Authorization": f"Bearer {worker_token}"},
                   json={**body, "url": "not a url"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "url"


def test_a_worker_answers_only_its_control_plane(plane, tmp_path):
    token = _token(plane, "default", ["worker"])
    w = Worker(tmp_path, plane, token, "solo", region="eu").start()
    try:
        assert wait_until(lambda: deployments(plane).get("worker:solo") is not None)
        url = f"http://127.0.0.1:{w.port}/v1/chat/completions"
        r = httpx.post(url, headers={"Authorization": f"Bearer {token}"}, json={"model": "tiny", "messages": []})
        assert r.status_code == 401
        assert chat(plane).status_code == 200
        r = httpx.post(plane.v1 + "/chat/completions", headers={**plane.headers(), "X-Region": "us"},
                       json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
        assert r.status_code == 503  # the only worker is in eu
    finally:
        w.kill()


def test_media_tasks_run_on_a_worker(plane, tmp_path, espeak):
    """Speech, transcription and images travel over the worker's OpenAI-shaped surface like chat does."""
    token = _token(plane, "default", ["worker"])
    w = Worker(tmp_path, plane, token, "media", models="espeak-ng,whisper-base,demo-image").start()
    try:
        assert wait_until(lambda: any(m["model_id"] == "demo-image" for m in httpx.get(
            plane.url + "/api/model-status", headers=plane.headers()).json()["models"]), timeout=60)
        r = httpx.post(plane.v1 + "/audio/speech", headers=plane.headers(), timeout=60,
                       json={"model": "espeak-ng", "input": "Hello from the worker.", "response_format": "wav"})
        assert r.status_code == 200, r.text
        assert r.headers["x-modelyard-deployment"] == "worker:media" and r.content[:4] == b"RIFF"
        assert r.headers["content-type"].startswith("audio/wav")

        t = httpx.post(plane.v1 + "/audio/transcriptions", headers=plane.headers(), timeout=120,
                       files={"file": ("hello.wav", r.content, "audio/wav")},
                       data={"model": "whisper-base", "response_format": "srt"})
        assert t.status_code == 200, t.text
        assert t.headers["x-modelyard-deployment"] == "worker:media"
        assert "-->" in t.text and "hello" in t.text.lower()

        i = httpx.post(plane.v1 + "/images/generations", headers=plane.headers(), timeout=180,
                       json={"model": "demo-image", "prompt": "a red square", "size": "64x64",
                             "response_format": "b64_json"})
        assert i.status_code == 200, i.text
        assert i.headers["x-modelyard-deployment"] == "worker:media"
        assert base64.b64decode(i.json()["data"][0]["b64_json"])[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        w.kill()
