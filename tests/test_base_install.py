"""A base install (`pip install .`, no [local] extra) serves every route for upstream models, in a venv of its own."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from .support.openai_stub import STUB_PNG_B64, StubControl, create_stub
from .support.servers import ServerThread, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parent.parent
ADMIN_KEY = "myd_base-install-key-" + "x" * 24
# what the [local] extra brings; none of it may be needed to serve upstream models
OPTIONAL = ("numpy", "PIL", "torch", "llama_cpp", "av", "diffusers", "transformers", "sentence_transformers",
            "faster_whisper", "presidio_analyzer", "piper")
PNG = base64.b64decode(STUB_PNG_B64)


class ServerProcess:
    """`modelyard serve` in a subprocess; its output is read by a thread, so readiness is a line, not a poll."""

    def __init__(self, cmd: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT)
        self.lines: list[str] = []
        self.started = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Application startup complete" in line:
                self.started.set()
        self.started.set()  # the process ended: wake the waiter, who finds it dead

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=10)


@pytest.fixture(scope="module")
def base_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the project installed without extras, from a copy of the sources (an in-tree build would
    leave build/ and egg-info in the checkout)."""
    tmp = tmp_path_factory.mktemp("base-install")
    src = tmp / "project"
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    r = subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(src)],
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def test_the_base_install_has_none_of_the_local_extra(base_venv: Path) -> None:
    code = ("import importlib.util, sys; "
            f"print(','.join(m for m in {OPTIONAL!r} if importlib.util.find_spec(m) is not None))")
    r = subprocess.run([str(base_venv / "bin" / "python"), "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"the base install pulled in {r.stdout.strip()}: the smoke test proves nothing"


@pytest.fixture(scope="module")
def stub() -> Iterator[tuple[str, StubControl]]:
    control = StubControl()
    with ServerThread(create_stub(control)) as srv:
        yield srv.url, control


@pytest.fixture(scope="module")
def gateway(base_venv: Path, stub: tuple[str, StubControl], tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[str]:
    stub_url, _ = stub
    tmp = tmp_path_factory.mktemp("gateway")
    upstream = f"backend: openai\n        base_url: {stub_url}/v1\n"
    # the built-in (local) models stay configured, as they are by default: offline here, and harmless
    (tmp / "modelyard.yaml").write_text(
        f"admin_key: {ADMIN_KEY}\n"
        "models:\n"
        f"  - id: up-chat\n    type: text\n    deployments:\n      - {upstream}        model: stub-model\n"
        f"  - id: up-embed\n    type: embedding\n    deployments:\n      - {upstream}"
        f"  - id: up-image\n    type: image\n    deployments:\n      - {upstream}        model: stub-images\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    server = ServerProcess([str(base_venv / "bin" / "modelyard"), "serve", "--config", "modelyard.yaml",
                            "--data-dir", str(tmp / "data"), "--port", str(port), "--log-level", "info"], env, tmp)
    try:
        assert server.started.wait(timeout=120) and server.proc.poll() is None, server.output
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
    assert "Traceback" not in server.output, server.output


@pytest.fixture
def http(gateway: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway, headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=60) as client:
        yield client


def test_chat_and_embeddings(http: httpx.Client, stub: tuple[str, StubControl]) -> None:
    r = http.post("/v1/chat/completions", json={"model": "up-chat", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == stub[1].reply
    r = http.post("/v1/embeddings", json={"model": "up-embed", "input": ["one", "three"]})
    assert r.status_code == 200, r.text
    assert [d["index"] for d in r.json()["data"]] == [0, 1]


def test_image_generation(http: httpx.Client) -> None:
    r = http.post("/v1/images/generations", json={"model": "up-image", "prompt": "a red square", "n": 2,
                                                   "response_format": "b64_json"})
    assert r.status_code == 200, r.text
    assert [base64.b64decode(d["b64_json"]) for d in r.json()["data"]] == [PNG, PNG]


def test_image_edit_reaches_the_upstream_as_uploaded(http: httpx.Client, stub: tuple[str, StubControl]) -> None:
    r = http.post("/v1/images/edits", data={"model": "up-image", "prompt": "make it blue", "response_format": "b64_json"},
                  files={"image": ("in.png", PNG, "image/png"), "mask": ("mask.png", PNG, "image/png")})
    assert r.status_code == 200, r.text
    assert base64.b64decode(r.json()["data"][0]["b64_json"]) == PNG
    sent = stub[1].requests[-1]
    assert sent["prompt"] == "make it blue" and sent["image"][1] == PNG and sent["mask"][1] == PNG
    bad = http.post("/v1/images/edits", data={"model": "up-image", "prompt": "x"},
                    files={"image": ("in.png", b"not an image at all", "image/png")})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "image", bad.text


def test_image_to_image_job(http: httpx.Client, stub: tuple[str, StubControl]) -> None:
    """fal's `run` submits a job and waits for its result: an image-to-image job, start to finish."""
    r = http.post("/fal/run/modelyard/up-image", json={"prompt": "make it blue",
                                                       "image_url": "data:image/png;base64," + STUB_PNG_B64})
    assert r.status_code == 200, r.text
    images = r.json()["images"]
    assert len(images) == 1 and images[0]["url"]
    assert stub[1].paths[-1] == "/v1/images/edits" and stub[1].requests[-1]["image"][1] == PNG
    assert httpx.get(images[0]["url"], timeout=30).content == PNG
