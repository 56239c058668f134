"""The official fal-client SDK, unchanged, against `modelyard serve --ssl-certfile/--ssl-keyfile` (HTTPS, trustme CA)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import httpx
import pytest
import yaml

from ...conftest import ADMIN_KEY
from ...support.jobs import FAST, job_models
from ...support.servers import free_port
from ...support.waiting import wait_until
from ...support.paths import REPO

pytestmark = pytest.mark.slow

# Runs in its own interpreter: fal-client reads FAL_QUEUE_RUN_HOST / FAL_RUN_HOST when it is imported.
SCRIPT = r'''
import json, sys
import fal_client

out = {}
h = fal_client.submit("modelyard/echo", {"prompt": "hello from fal-client"})
out["request_id"] = h.request_id
out["result"] = h.get()
st = h.status(with_logs=True)
out["status"] = {"type": type(st).__name__, "logs": st.logs, "metrics": st.metrics}
out["by_app"] = fal_client.result("modelyard/echo", h.request_id)
out["by_slug"] = fal_client.subscribe("fal-ai/echo/fast", {"prompt": "subscribed"})
out["run"] = fal_client.run("modelyard/echo", {"prompt": "run blocks"})
# the runner works on one job at a time: the second slow job waits in the queue, and is cancelled there
busy = fal_client.submit("modelyard/echo-slow", {"prompt": "busy"})
# wait for the runner to take the busy job, so that nothing of this model is ahead of the next one in the queue
import time
deadline = time.monotonic() + 30
while type(busy.status()).__name__ == "Queued" and time.monotonic() < deadline:
    time.sleep(0.05)
queued = fal_client.submit("modelyard/echo-slow", {"prompt": "queued"})
st = queued.status()
out["queued_status"] = {"type": type(st).__name__, "position": getattr(st, "position", None)}
queued.cancel()
try:
    queued.get()
    out["cancelled_get"] = "no error"
except fal_client.client.FalClientHTTPError as exc:
    out["cancelled_get"] = {"status": exc.status_code, "error_type": exc.error_type}
st = queued.status()
out["cancelled_status"] = {"type": type(st).__name__, "error": st.error, "error_type": st.error_type}
out["busy"] = busy.get()
try:
    fal_client.submit("modelyard/echo", {"messages": "not a list"})
except fal_client.client.FalClientHTTPError as exc:
    out["bad_input"] = {"status": exc.status_code, "detail": exc.message}
print(json.dumps(out))
'''


@pytest.fixture(scope="module")
def https_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    import trustme

    tmp = tmp_path_factory.mktemp("fal")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp / "server.pem"))
    cert.private_key_pem.write_to_path(str(tmp / "server.key"))
    ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
    config = tmp / "modelyard.yaml"
    config.write_text(yaml.safe_dump({"admin_key": ADMIN_KEY, "builtin_models": False, "models": job_models(1.5),
                                      "fal_slugs": {"fal-ai/echo": "echo"},
                                      **{k: v for k, v in FAST.items() if k != "builtin_models"},
                                      "job_concurrency": 1}))
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    log = (tmp / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "modelyard.cli", "serve", "--config", str(config), "--data-dir",
                             str(tmp / "data"), "--port", str(port), "--ssl-certfile", str(tmp / "server.pem"),
                             "--ssl-keyfile", str(tmp / "server.key")], env=env, stdout=log, stderr=log, cwd=tmp)
    base = f"https://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError("serve did not start: " + (tmp / "serve.log").read_text())
        try:
            return httpx.get(base + "/healthz", verify=str(tmp / "ca.pem")).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(up, 60, "serve to start", interval=0.3)
    try:
        yield f"127.0.0.1:{port}", tmp / "ca.pem"
    finally:
        proc.terminate()
        proc.wait(15)


def test_fal_client_sdk_submit_status_result_cancel(https_server: tuple[str, Path]) -> None:
    hostport, ca = https_server
    # all a fal user changes: the queue host, the key, and trust in this server's certificate (httpx honours
    # SSL_CERT_FILE)
    env = {**os.environ, "FAL_KEY": ADMIN_KEY, "FAL_QUEUE_RUN_HOST": f"{hostport}/fal",
           "FAL_RUN_HOST": f"{hostport}/fal/run", "SSL_CERT_FILE": str(ca)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["request_id"].startswith("job_")
    assert out["result"]["output"] == "hello from fal-client"
    assert out["status"]["type"] == "Completed" and isinstance(out["status"]["logs"], list)
    assert out["status"]["metrics"]["inference_time"] >= 0
    assert out["by_app"]["output"] == "hello from fal-client"
    assert out["by_slug"]["output"] == "subscribed"
    assert out["run"]["output"] == "run blocks"
    assert out["queued_status"] == {"type": "Queued", "position": 0}
    assert out["cancelled_get"] == {"status": 400, "error_type": "cancelled"}
    assert out["cancelled_status"]["type"] == "Completed" and out["cancelled_status"]["error_type"] == "cancelled"
    assert out["busy"]["output"] == "busy"
    assert out["bad_input"]["status"] == 400 and out["bad_input"]["detail"][0]["loc"][-1] == "messages"


def test_plain_http_is_refused_on_the_https_port(https_server: tuple[str, Path]) -> None:
    hostport, _ = https_server
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://{hostport}/healthz", timeout=5)
