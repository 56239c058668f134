"""Remote workers: two real `modelyard worker` processes and a control plane; kill one, restart it."""

from __future__ import annotations

import base64
import functools

import httpx
import pytest


from ..conftest import make_settings, running
from ..support import waiting
from ..support.workers import Worker, deployments, token_for

wait_until = functools.partial(waiting.wait_until, timeout=40.0)  # a worker process starts and announces itself
pytestmark = pytest.mark.slow


@pytest.fixture
def plane(tmp_path):
    settings = make_settings(tmp_path / "cp", builtin_models=False, worker_heartbeat_seconds=0.5,
                             worker_timeout_seconds=2.0, cooldown_failures=1_000_000)
    with running(settings) as srv:
        yield srv


def chat(plane) -> httpx.Response:
    return httpx.post(plane.v1 + "/chat/completions", headers=plane.headers(), timeout=30,
                      json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})


def test_traffic_follows_workers_that_come_and_go(plane, tmp_path):
    token = token_for(plane, "default", ["worker"])
    w1, w2 = Worker(tmp_path, plane, token, "w1").start(), Worker(tmp_path, plane, token, "w2").start()
    try:
        assert wait_until(lambda: set(deployments(plane)) == {"worker:w1", "worker:w2"}), deployments(plane)
        served = {chat(plane).headers["x-modelyard-deployment"] for _ in range(16)}
        assert served == {"worker:w1", "worker:w2"}

        w1.kill()
        for _ in range(10):  # no failed request in the gap: a refused connection moves to w2
            r = chat(plane)
            assert r.status_code == 200 and r.headers["x-modelyard-deployment"] == "worker:w2"
        assert wait_until(lambda: set(deployments(plane)) == {"worker:w2"}, timeout=10)  # its heartbeats stopped

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
    worker_token = token_for(plane, "default", ["worker"])
    user_token = token_for(plane, "default", ["user:write"])
    foreign_worker = token_for(plane, "someone-else", ["worker"])
    assert httpx.get(plane.v1 + "/models", headers={"Authorization": f"Bearer {worker_token}"}).status_code == 403
    body = {"name": "x", "url": "http://127.0.0.1:1", "models": [{"id": "tiny"}], "secret": "s" * 40}
    for token, status in ((user_token, 403), (foreign_worker, 403), (None, 401)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert httpx.post(plane.url + "/api/workers/register", json=body, headers=headers).status_code == status
    r = httpx.post(plane.url + "/api/workers/register", headers={"Authorization": f"Bearer {worker_token}"},
                   json={**body, "url": "not a url"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "url"


def test_a_worker_answers_only_its_control_plane(plane, tmp_path):
    token = token_for(plane, "default", ["worker"])
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
    token = token_for(plane, "default", ["worker"])
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
