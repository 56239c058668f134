"""The job API, `"async": true`, the studio and fal faces over HTTP, webhooks, and org isolation (SQLite + PG)."""

from __future__ import annotations

import base64
import contextlib
import io
from pathlib import Path
from typing import Any, Iterator

import httpx
import pytest
from standardwebhooks.webhooks import Webhook

from ..support.accounts import top_up
from ..conftest import Running, make_settings, require_espeak, running, server_fixture
from ..support.jobs import FAST, Receiver, chat_payload, job_models, wait_status
from ..support.servers import ServerThread
from ..support.waiting import wait_until


@contextlib.contextmanager
def jobs_server(tmp: Path, database_url: str | None, stub_url: str) -> Iterator[Running]:
    # the webhook receiver lives on 127.0.0.1, which only an operator's allow_private_urls lets us call
    extra = {**FAST, "allow_private_urls": True, "fal_slugs": {"fal-ai/echo": "echo"}, "studio_models": {}}
    models = job_models() + [{"id": "echo-priced", "type": "text", "price": {"per_request": 0.01},
                              "deployments": [{"backend": "echo"}]}]
    with running(make_settings(tmp, database_url=database_url, models=models, **extra)) as s:
        _fund(s)
        yield s


srv = server_fixture("srv", jobs_server)


def _fund(s: Running) -> None:
    """Studio modes are priced: the operator's org gets money to spend (its plan is unlimited, not free)."""
    me = httpx.get(s.url + "/api/v1/me", headers=s.headers()).json()
    top_up(s, me["organization_id"], 100_00)


@pytest.fixture(scope="module")
def http(srv: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=srv.url, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def other_key(srv: Running) -> str:
    """A key of a second organization."""
    from modelyard.store.repo import OrgRepo, TokenRepo

    async def make() -> str:
        org = await OrgRepo(srv.app.state.ctx.store).create("other-org")
        _, secret = await TokenRepo(srv.app.state.ctx.store).create(org.id, "k", ["user:read", "user:write"])
        return secret
    return srv.on_server_loop(make())


def submit(http: httpx.Client, srv: Running, body: dict[str, Any], key: str | None = None) -> httpx.Response:
    return http.post("/api/jobs", json=body, headers=srv.headers(key))


# ---------------------------------------------------------------- job API

def test_job_runs_through_the_router_and_is_listed(http: httpx.Client, srv: Running) -> None:
    r = submit(http, srv, {"model_id": "echo", "task": "openai/chat-completion", "payload": chat_payload("ping 1")})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["status"] == "pending" and created["queue_id"] == "echo" and created["id"].startswith("job_")
    done = wait_status(http, f"/api/jobs/{created['id']}", srv.headers(), {"completed"})
    assert done["result"]["choices"][0]["message"]["content"] == "ping 1"
    assert done["attempts"] == 1 and done["finished_at"] >= done["created_at"]
    listed = http.get("/api/jobs", params={"status": "completed", "limit": 100}, headers=srv.headers()).json()
    assert created["id"] in [j["id"] for j in listed["data"]]
    assert all(j["status"] == "completed" for j in listed["data"])


def test_list_pages_with_after(http: httpx.Client, srv: Running) -> None:
    ids = [submit(http, srv, {"model_id": "echo", "task": "chat", "payload": chat_payload(f"p{i}")}).json()["id"]
           for i in range(3)]
    first = http.get("/api/jobs", params={"limit": 2}, headers=srv.headers()).json()
    assert first["has_more"] is True and len(first["data"]) == 2
    assert [j["id"] for j in first["data"]] == ids[::-1][:2]  # newest first
    second = http.get("/api/jobs", params={"limit": 2, "after": first["last_id"]}, headers=srv.headers()).json()
    assert second["data"][0]["id"] == ids[0]


@pytest.mark.parametrize("body, param", [
    ({"task": "chat", "payload": {}}, "model_id"),
    ({"model_id": "nope", "task": "chat", "payload": {}}, "model_id"),
    ({"model_id": "echo", "task": "teleport", "payload": {}}, "task"),
    ({"model_id": "echo", "task": "text-to-image", "payload": {}}, "task"),
    ({"model_id": "echo", "task": "chat", "payload": {"messages": []}}, "payload.messages"),
    ({"model_id": "echo", "task": "chat", "payload": chat_payload(), "priority": 1000}, "priority"),
    ({"model_id": "echo", "task": "chat", "payload": chat_payload(), "max_attempts": 0}, "max_attempts"),
    ({"model_id": "echo", "task": "chat", "payload": chat_payload(), "webhook_url": "ftp://x"}, "webhook_url"),
    ({"model_id": "echo", "task": "chat", "payload": "text"}, "payload"),
])
def test_bad_job_is_a_400_naming_the_field_and_stores_nothing(http: httpx.Client, srv: Running,
                                                                body: dict, param: str) -> None:
    before = http.get("/api/jobs", params={"limit": 100}, headers=srv.headers()).json()["data"]
    r = submit(http, srv, body)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"]["param"] == param
    after = http.get("/api/jobs", params={"limit": 100}, headers=srv.headers()).json()["data"]
    assert len(after) == len(before)


def test_always_failing_job_ends_in_dead_letter(http: httpx.Client, srv: Running) -> None:
    r = submit(http, srv, {"model_id": "always-down", "task": "chat", "payload": chat_payload(), "max_attempts": 3})
    done = wait_status(http, f"/api/jobs/{r.json()['id']}", srv.headers(), {"dead_letter", "failed", "completed"})
    assert done["status"] == "dead_letter" and done["attempts"] == 3
    assert done["error"]["code"] and done["error"]["status"] in (502, 503)


def test_cancel_pending_and_running(http: httpx.Client, srv: Running) -> None:
    # a low-priority job behind a slow one on a busy runner is still pending when we cancel it
    running_id = submit(http, srv, {"model_id": "echo-slow", "task": "chat", "payload": chat_payload()}).json()["id"]
    wait_status(http, f"/api/jobs/{running_id}", srv.headers(), {"running"})
    r = http.post(f"/api/jobs/{running_id}/cancel", headers=srv.headers())
    assert r.status_code == 200 and r.json()["cancel"] == "requested"
    done = wait_status(http, f"/api/jobs/{running_id}", srv.headers(), {"cancelled", "completed"}, timeout=10)
    assert done["status"] == "cancelled" and done["result"] is None

    ctx = srv.app.state.ctx
    srv.on_server_loop(_pause_runner(ctx, True))
    try:
        pending_id = submit(http, srv, {"model_id": "echo", "task": "chat", "payload": chat_payload()}).json()["id"]
        r = http.post(f"/api/jobs/{pending_id}/cancel", headers=srv.headers())
        assert r.status_code == 200 and r.json()["cancel"] == "cancelled" and r.json()["status"] == "cancelled"
    finally:
        srv.on_server_loop(_pause_runner(ctx, False))
    # a job submitted after it completes: the runner has had its turn, and left the cancelled one alone
    later = submit(http, srv, {"model_id": "echo", "task": "chat", "payload": chat_payload()}).json()["id"]
    wait_status(http, f"/api/jobs/{later}", srv.headers(), {"completed"})
    assert http.get(f"/api/jobs/{pending_id}", headers=srv.headers()).json()["status"] == "cancelled"
    again = http.post(f"/api/jobs/{pending_id}/cancel", headers=srv.headers()).json()
    assert again["cancel"] == "final"


def test_a_jobs_detail_shows_its_request_its_place_in_the_queue_and_its_cost(http: httpx.Client,
                                                                             srv: Running) -> None:
    long_text = "x" * 5000  # an uploaded file's base64 would be as long: the detail shows it cut
    ctx = srv.app.state.ctx
    srv.on_server_loop(_pause_runner(ctx, True))
    try:
        first = submit(http, srv, {"model_id": "echo-priced", "task": "chat", "payload": chat_payload("one")}).json()
        second = submit(http, srv, {"model_id": "echo-priced", "task": "chat", "payload": chat_payload(long_text)}).json()
        waiting = http.get(f"/api/jobs/{second['id']}", headers=srv.headers()).json()
        assert waiting["status"] == "pending" and waiting["queue_position"] == 1 and waiting["usage"] is None
        assert waiting["source"] == "jobs"
        shown = waiting["payload"]["messages"][0]["content"]
        assert shown.startswith("x" * 200) and shown.endswith("(5,000 characters)") and len(shown) < 300
    finally:
        srv.on_server_loop(_pause_runner(ctx, False))
    # the usage row is written when the job settles, just after it is marked completed
    done = wait_until(lambda: (b := http.get(f"/api/jobs/{first['id']}", headers=srv.headers()).json())["usage"] and b,
                      30, "the job to settle")
    assert done["status"] == "completed" and done["queue_position"] is None
    assert done["payload"] == chat_payload("one")
    assert done["usage"]["calls"] == 1 and done["usage"]["cost_micros"] == 10_000
    assert done["usage"]["input_tokens"] > 0 and done["usage"]["output_tokens"] > 0
    listed = {j["id"]: j for j in http.get("/api/jobs", params={"limit": 5}, headers=srv.headers()).json()["data"]}
    assert listed[first["id"]]["source"] == "jobs" and "payload" not in listed[first["id"]]


async def _pause_runner(ctx: Any, pause: bool) -> None:
    """Hold the in-process runner at its concurrency limit so submitted jobs stay pending."""
    ctx.jobs.runner.concurrency = 0 if pause else ctx.settings.job_concurrency
    ctx.jobs.runner.wake.set()


def test_other_orgs_jobs_are_404_on_every_face(http: httpx.Client, srv: Running, other_key: str) -> None:
    job_id = submit(http, srv, {"model_id": "echo", "task": "chat", "payload": chat_payload()}).json()["id"]
    h = srv.headers(other_key)
    r = http.get(f"/api/jobs/{job_id}", headers=h)
    assert r.status_code == 404 and r.json()["error"]["type"] == "not_found_error"
    assert http.post(f"/api/jobs/{job_id}/cancel", headers=h).status_code == 404
    assert job_id not in [j["id"] for j in http.get("/api/jobs", headers=h).json()["data"]]
    r = http.get(f"/fal/requests/{job_id}/status", headers=h)
    assert r.status_code == 404 and "detail" in r.json()
    assert http.put(f"/fal/requests/{job_id}/cancel", headers=h).json() == {"status": "NOT_FOUND"}
    batch = http.post("/fal/requests/batch", json={"request_ids": [job_id]}, headers=h).json()
    assert batch["requests"] == [{"request_id": job_id, "status": "NOT_FOUND"}]
    r = http.get(f"/api/v1/status/{job_id}", headers=h)
    assert r.status_code == 404 and isinstance(r.json()["error"], str)


# ---------------------------------------------------------------- "async": true

def test_async_chat_is_202_then_pollable_on_both_faces(http: httpx.Client, srv: Running) -> None:
    r = http.post("/v1/chat/completions", json={"model": "echo", "async": True, **chat_payload("async hi")},
                  headers=srv.headers())
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["object"] == "chat.completion.async" and body["status"] == "pending"
    done = wait_status(http, f"/api/jobs/{body['id']}", srv.headers(), {"completed"})
    assert done["result"]["choices"][0]["message"]["content"] == "async hi"
    fal_result = http.get(f"/fal/requests/{body['id']}", headers=srv.headers())
    assert fal_result.status_code == 200 and fal_result.json()["output"] == "async hi"


def test_async_false_is_stripped_before_the_backend(http: httpx.Client, srv: Running) -> None:
    r = http.post("/v1/chat/completions", json={"model": "echo", "async": False, **chat_payload("now")},
                  headers=srv.headers())
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "now"
    r = http.post("/v1/chat/completions", json={"model": "echo", "async": "yes", **chat_payload()},
                  headers=srv.headers())
    assert r.status_code == 400 and r.json()["error"]["param"] == "async"
    r = http.post("/v1/chat/completions", json={"model": "echo", "async": True, "stream": True, **chat_payload()},
                  headers=srv.headers())
    assert r.status_code == 400 and r.json()["error"]["param"] == "stream"


def test_async_image_generation_stores_signed_urls(http: httpx.Client, srv: Running) -> None:
    r = http.post("/v1/images/generations", json={"model": "demo-image", "prompt": "a red square", "size": "64x64",
                                                  "steps": 1, "async": True}, headers=srv.headers())
    assert r.status_code == 202, r.text
    assert r.json()["object"] == "image.async"
    done = wait_status(http, f"/api/jobs/{r.json()['id']}", srv.headers(), {"completed", "failed", "dead_letter"},
                       timeout=240)
    assert done["status"] == "completed", done
    image = done["result"]["images"][0]
    assert "file" not in image and "sig=" in image["url"] and image["width"] == 64
    png = http.get(image["url"].replace(srv.url, ""))
    assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_async_on_multipart_uploads(http: httpx.Client, srv: Running) -> None:
    """images/edits and audio uploads become jobs too: the upload travels in the payload."""
    png = base64.b64decode(_png_b64(64))
    r = http.post("/v1/images/edits", headers=srv.headers(), files={"image": ("in.png", png, "image/png")},
                  data={"model": "demo-image", "prompt": "make it blue", "size": "64x64", "async": "true"})
    assert r.status_code == 202, r.text
    assert r.json()["object"] == "image.async"
    bad = http.post("/v1/images/edits", headers=srv.headers(), files={"image": ("in.png", png, "image/png")},
                    data={"model": "demo-image", "prompt": "x", "async": "maybe"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "async"
    done = wait_status(http, f"/api/jobs/{r.json()['id']}", srv.headers(), {"completed", "failed", "dead_letter"},
                       timeout=240)
    assert done["status"] == "completed", done
    assert done["result"]["images"][0]["width"] == 64

    require_espeak()
    speech = http.post("/v1/audio/speech", headers=srv.headers(),
                       json={"model": "espeak-ng", "input": "Hello jobs.", "response_format": "wav"})
    assert speech.status_code == 200, speech.text
    t = http.post("/v1/audio/transcriptions", headers=srv.headers(),
                  files={"file": ("hello.wav", speech.content, "audio/wav")},
                  data={"model": "whisper-base", "async": "true"})
    assert t.status_code == 202, t.text
    done = wait_status(http, f"/api/jobs/{t.json()['id']}", srv.headers(), {"completed", "failed", "dead_letter"},
                       timeout=240)
    assert done["status"] == "completed", done
    assert "hello" in done["result"]["text"].lower()


# ---------------------------------------------------------------- fal over plain HTTP (the SDK test uses HTTPS)

def test_fal_submit_status_result_and_slugs(http: httpx.Client, srv: Running) -> None:
    r = http.post("/fal/fal-ai/echo", json={"prompt": "fal says hi"}, headers={"Authorization": f"Key {srv.admin_key}"})
    assert r.status_code == 200, r.text
    sub = r.json()
    assert {"request_id", "response_url", "status_url", "cancel_url", "queue_position"} <= set(sub)
    status = wait_status(http, sub["status_url"].replace(srv.url, "") + "?logs=1", srv.headers(), {"COMPLETED"})
    assert isinstance(status["logs"], list) and "inference_time" in status["metrics"]
    assert http.get(sub["status_url"].replace(srv.url, ""), headers=srv.headers()).status_code == 200
    result = http.get(f"/fal/fal-ai/echo/requests/{sub['request_id']}", headers=srv.headers())
    assert result.status_code == 200 and result.json()["output"] == "fal says hi"
    slugs = {m["model_id"]: m["fal_slugs"] for m in http.get("/api/model-status", headers=srv.headers()).json()["models"]}
    assert slugs["echo"] == ["modelyard/echo", "fal-ai/echo"]
    sync = http.post("/fal/modelyard/echo", json={"prompt": "sync!", "sync_mode": True}, headers=srv.headers())
    assert sync.status_code == 200 and sync.json()["output"] == "sync!"


def test_fal_queue_position_batch_and_cancel(http: httpx.Client, srv: Running) -> None:
    ctx = srv.app.state.ctx
    srv.on_server_loop(_pause_runner(ctx, True))
    try:
        ids = [http.post("/fal/modelyard/echo", json={"prompt": f"q{i}"}, headers=srv.headers()).json()
               for i in range(3)]
        assert [s["queue_position"] for s in ids] == [0, 1, 2]
        st = http.get(f"/fal/requests/{ids[2]['request_id']}/status", headers=srv.headers())
        assert st.status_code == 202 and st.json() == {"status": "IN_QUEUE", "request_id": ids[2]["request_id"],
                                                       "queue_position": 2, "logs": None}
        assert http.get(f"/fal/requests/{ids[2]['request_id']}", headers=srv.headers()).status_code == 202
        c = http.put(f"/fal/requests/{ids[0]['request_id']}/cancel", headers=srv.headers())
        assert c.status_code == 202 and c.json() == {"status": "CANCELLATION_REQUESTED"}
        assert http.get(f"/fal/requests/{ids[2]['request_id']}/status", headers=srv.headers()).json()["queue_position"] == 1
    finally:
        srv.on_server_loop(_pause_runner(ctx, False))
    rid = ids[1]["request_id"]
    wait_status(http, f"/fal/requests/{rid}/status", srv.headers(), {"COMPLETED"})
    assert http.put(f"/fal/requests/{rid}/cancel", headers=srv.headers()).json() == {"status": "ALREADY_COMPLETED"}
    cancelled = http.get(f"/fal/requests/{ids[0]['request_id']}", headers=srv.headers())
    assert cancelled.status_code == 400 and cancelled.json()["error_type"] == "cancelled"
    batch = http.post("/fal/requests/batch", json={"request_ids": [i["request_id"] for i in ids]},
                      headers=srv.headers()).json()["requests"]
    assert [b["status"] for b in batch] == ["COMPLETED"] * 3
    assert http.post("/fal/requests/batch", json={"request_ids": ["x"] * 51},
                     headers=srv.headers()).status_code == 400
    r = http.post("/fal/no/such-app", json={"prompt": "x"}, headers=srv.headers())
    assert r.status_code == 404 and r.json()["error_type"] == "application_not_found"


# ---------------------------------------------------------------- studio

def _png_b64(size: int = 32) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 40, 40)).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------- image-to-image payloads are checked at submit

def _i2i(**extra: Any) -> dict[str, Any]:
    return {"model_id": "demo-image", "task": "image-to-image",
            "payload": {"prompt": "make it blue", "image": _png_b64(), **extra}}


def test_a_sound_image_to_image_payload_passes_the_submit_checks() -> None:
    from modelyard.jobs.tasks import validate_payload
    from modelyard.types import Task

    validate_payload(Task.IMAGE_TO_IMAGE, _i2i(n=2, strength=0.5, seed=7, steps=4, size="128x128",
                                               mask="data:image/png;base64," + _png_b64())["payload"], "demo-image")
    validate_payload(Task.IMAGE_TO_IMAGE, _i2i(n="3", strength="0.3")["payload"], "demo-image")  # form-like strings


@pytest.mark.parametrize("extra, field", [
    ({"n": 1000000}, "n"), ({"n": 0}, "n"), ({"n": "zz"}, "n"), ({"n": True}, "n"), ({"n": 2.5}, "n"),
    ({"strength": "q"}, "strength"), ({"strength": 0.01}, "strength"), ({"strength": [1]}, "strength"),
    ({"strength": "nan"}, "strength"),
    ({"seed": -1}, "seed"), ({"seed": 2**32}, "seed"), ({"seed": "7"}, "seed"),
    ({"steps": 0}, "steps"), ({"steps": "x"}, "steps"),
    ({"size": "65x64"}, "size"), ({"size": [64, 64]}, "size"),
    ({"mask": "!!"}, "mask"), ({"mask": "QUJD"}, "mask"), ({"mask": 5}, "mask"),
    ({"image": "!!"}, "image"), ({"image": "QUJD"}, "image"), ({"image_url": "data:image/png;base64,QUJD"}, "image_url"),
    ({"prompt": "x" * 4001}, "prompt"),
])
def test_bad_image_to_image_payload_is_a_400_at_submit(http: httpx.Client, srv: Running, extra: dict,
                                                       field: str) -> None:
    """These were queued, then crashed the runner (internal_error, retried, dead-lettered)."""
    before = http.get("/api/jobs", params={"limit": 100}, headers=srv.headers()).json()["data"]
    r = submit(http, srv, _i2i(**extra))
    assert r.status_code == 400, r.text
    assert r.json()["error"]["param"] == f"payload.{field}"
    assert len(http.get("/api/jobs", params={"limit": 100}, headers=srv.headers()).json()["data"]) == len(before)


# ---------------------------------------------------------------- fal video arguments

@pytest.mark.parametrize("args, field", [
    ({"resolution": [1]}, "resolution"), ({"resolution": {"a": 1}}, "resolution"),
    ({"aspect_ratio": ["16:9"]}, "aspect_ratio"),
    ({"num_frames": 10, "frames_per_second": "0"}, "frames_per_second"),
    ({"num_frames": 10, "frames_per_second": 0}, "frames_per_second"),
    ({"frames_per_second": "x"}, "frames_per_second"), ({"frames_per_second": [1]}, "frames_per_second"),
    ({"frames_per_second": 1000}, "frames_per_second"),
    ({"num_frames": 10, "fps": "0"}, "fps"),
    ({"num_frames": "many"}, "num_frames"), ({"num_frames": 0}, "num_frames"),
    ({"num_frames": 5000, "frames_per_second": 8}, "num_frames"),
])
def test_fal_video_arguments_are_400s_naming_the_field(args: dict, field: str) -> None:
    from modelyard.errors import InvalidRequest
    from modelyard.protocols import fal
    from modelyard.types import Task

    with pytest.raises(InvalidRequest) as info:
        fal.to_payload(Task.TEXT_TO_VIDEO, {"prompt": "waves", **args})
    assert info.value.param == field


def test_fal_video_arguments_that_convert() -> None:
    from modelyard.protocols import fal
    from modelyard.types import Task

    out = fal.to_payload(Task.TEXT_TO_VIDEO, {"prompt": "w", "num_frames": "32", "frames_per_second": "8"})
    assert out["fps"] == 8 and out["duration"] == 4
    assert fal.to_payload(Task.TEXT_TO_VIDEO, {"prompt": "w", "duration": "5s"})["duration"] == 5
    # '²' passes str.isdigit() but not int(): it is left for the request model to refuse, naming duration
    assert fal.to_payload(Task.TEXT_TO_VIDEO, {"prompt": "w", "duration": "²"})["duration"] == "²"


def test_fal_video_submit_with_bad_arguments_is_a_400_in_fals_shape(http: httpx.Client, srv: Running) -> None:
    for args, field in (({"resolution": [1]}, "resolution"), ({"duration": "²"}, "duration"),
                        ({"num_frames": 10, "frames_per_second": "0"}, "frames_per_second")):
        r = http.post("/fal/modelyard/demo-video", json={"prompt": "waves", **args}, headers=srv.headers())
        assert r.status_code == 400, r.text  # TypeError, ValueError, ZeroDivisionError: 500s before
        assert r.json()["detail"][0]["loc"] == ["body", field], r.text


@pytest.mark.parametrize("body, field", [
    ({"positive_prompt": "x"}, "mode"),
    ({"mode": "t3i", "positive_prompt": "x"}, "mode"),
    ({"mode": "t2i"}, "positive_prompt"),
    ({"mode": "t2i", "positive_prompt": "x" * 1501}, "positive_prompt"),
    ({"mode": "t2v", "positive_prompt": "x", "negative_prompt": "n" * 1501}, "negative_prompt"),
    ({"mode": "t2i_pro", "positive_prompt": "x", "resolution": "1k"}, "resolution"),
    ({"mode": "i2i", "positive_prompt": "x", "image": "QUJD", "resolution": "720p"}, "resolution"),
    ({"mode": "t2v", "positive_prompt": "x", "resolution": "2k"}, "resolution"),
    ({"mode": "i2i", "positive_prompt": "x", "image": "QUJD", "orientation": "diagonal"}, "orientation"),
    ({"mode": "t2v", "positive_prompt": "x", "orientation": "square"}, "orientation"),
    ({"mode": "t2i", "positive_prompt": "x", "aspect_ratio": "4:3"}, "aspect_ratio"),
    ({"mode": "i2i_pro", "positive_prompt": "x", "images": ["QUJD"], "aspect_ratio": "2:3"}, "aspect_ratio"),
    ({"mode": "t2v", "positive_prompt": "x", "duration": 7}, "duration"),
    ({"mode": "t2v", "positive_prompt": "x", "duration": "5"}, "duration"),
    ({"mode": "i2i", "positive_prompt": "x"}, "image"),
    ({"mode": "i2v", "positive_prompt": "x", "image": "not base64!"}, "image"),
    ({"mode": "i2v_pro", "positive_prompt": "x"}, "image"),
    ({"mode": "i2i_pro", "positive_prompt": "x"}, "images"),
    ({"mode": "i2i_pro_plus", "positive_prompt": "x", "images": []}, "images"),
    ({"mode": "i2i_pro", "positive_prompt": "x", "images": ["QUJD"] * 13}, "images"),
    ({"mode": "i2i_pro", "positive_prompt": "x", "images": [base64.b64encode(b"x" * (5 * 1024 * 1024 + 1)).decode()]},
     "images[0]"),
    ({"mode": "i2i_pro", "positive_prompt": "x", "images": [42]}, "images[0]"),
])
def test_studio_rejects_each_documented_rule(http: httpx.Client, srv: Running, body: dict, field: str) -> None:
    r = http.post("/api/v1/generate", json=body, headers=srv.headers())
    assert r.status_code == 400, r.text
    assert r.json()["field"] == field and isinstance(r.json()["error"], str)


def test_studio_reserves_the_price_at_submit(http: httpx.Client, srv: Running, other_key: str) -> None:
    body = {"mode": "t2i", "positive_prompt": "a lighthouse"}
    r = http.post("/api/v1/generate", json=body, headers=srv.headers(other_key))  # an org with an empty wallet
    assert r.status_code == 402 and r.json()["code"] == "insufficient_balance", r.text


def test_studio_ignores_what_a_mode_does_not_use(http: httpx.Client, srv: Running) -> None:
    ctx = srv.app.state.ctx
    srv.on_server_loop(_pause_runner(ctx, True))
    try:
        # t2i ignores negative_prompt, resolution and orientation; data-URL and raw base64 both accepted
        r = http.post("/api/v1/generate", json={"mode": "t2i", "positive_prompt": "sunset", "negative_prompt": "blur",
                                                "resolution": "8k", "orientation": "sideways"}, headers=srv.headers())
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "QUEUED" and r.json()["mode"] == "t2i" and r.json()["gateway_job_id"]
        job = srv.on_server_loop(ctx.jobs.queue.get(r.json()["job_id"]))
        assert "negative_prompt" not in job.payload and job.payload["n"] == 4 and job.payload["size"] == "1024x1024"
        assert job.meta["units"]["mode"] == "t2i" and job.meta["units"]["images"] == 4
        for image in (_png_b64(), "data:image/png;base64," + _png_b64()):
            r = http.post("/api/v1/generate", json={"mode": "i2i", "positive_prompt": "x", "image": image},
                          headers=srv.headers())
            assert r.status_code == 200, r.text
        status = http.get(f"/api/v1/status/{r.json()['job_id']}", headers=srv.headers()).json()
        assert status["status"] == "QUEUED"
        for jid in [r.json()["job_id"]]:
            http.post(f"/api/jobs/{jid}/cancel", headers=srv.headers())
    finally:
        # the queued demo jobs are cancelled so the runner does not spend minutes on 1024px images
        for j in http.get("/api/jobs", params={"status": "pending", "limit": 100}, headers=srv.headers()).json()["data"]:
            http.post(f"/api/jobs/{j['id']}/cancel", headers=srv.headers())
        srv.on_server_loop(_pause_runner(ctx, False))


def test_studio_t2i_completes_with_four_signed_urls(http: httpx.Client, srv: Running) -> None:
    ctx = srv.app.state.ctx
    ctx.settings.studio_models["t2i"] = "demo-image"
    # keep the CPU demo small: the studio's 1k size is the model's business, the flow is what is tested here
    from modelyard.protocols import studio as studio_protocol

    old = dict(studio_protocol.LONG_SIDE)
    studio_protocol.LONG_SIDE["1k"] = 64
    try:
        r = http.post("/api/v1/generate", json={"mode": "t2i", "positive_prompt": "four tiny squares"},
                      headers=srv.headers())
    finally:
        studio_protocol.LONG_SIDE.update(old)
    job_id = r.json()["job_id"]
    done = wait_status(http, f"/api/v1/status/{job_id}", srv.headers(), {"COMPLETED", "FAILED"}, timeout=240)
    assert done["status"] == "COMPLETED", done
    assert len(done["result_urls"]) == 4 and done["result_url"] == done["result_urls"][0]
    assert all("expires=" in u and "sig=" in u for u in done["result_urls"])
    assert http.get(done["result_url"].replace(srv.url, "")).content[:4] == b"\x89PNG"


# ---------------------------------------------------------------- webhooks

@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    rec = Receiver()
    with ServerThread(rec.app()) as s:
        yield rec, s.url + "/hook"


def test_webhook_is_signed_retried_and_deduplicable(http: httpx.Client, srv: Running,
                                                     receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    rec.fail_first = 2
    r = submit(http, srv, {"model_id": "echo", "task": "chat", "payload": chat_payload("hooked"), "webhook_url": url})
    job_id = r.json()["id"]
    done = wait_status(http, f"/api/jobs/{job_id}", srv.headers(), {"completed"})
    rec.wait_for_calls(3, timeout=20)
    assert len(rec.calls) == 3, rec.calls
    secret = http.get("/api/webhook-secret", headers=srv.headers()).json()["secret"]
    ids = set()
    for headers, body in rec.calls:
        payload = Webhook(secret).verify(body, headers)  # the reference implementation checks our signature
        assert payload["request_id"] == job_id and payload["status"] == "OK"
        assert payload["payload"]["choices"][0]["message"]["content"] == "hooked"
        ids.add(headers["webhook-id"])
    assert len(ids) == 1  # one id across retries: receivers drop duplicates by it
    with pytest.raises(Exception):
        Webhook(secret).verify(rec.calls[0][1] + b" ", rec.calls[0][0])
    # the receiver's 204 reaches the deliverer after the receiver saw the call: the row follows on its own time
    final = wait_until(lambda: (j := http.get(f"/api/jobs/{job_id}", headers=srv.headers()).json())
                       ["webhook_status"] == "delivered" and j, what="the webhook to be marked delivered")
    assert final["status"] == "completed" and done["status"] == "completed"


def test_fal_webhook_query_parameter_and_failed_job_webhook(http: httpx.Client, srv: Running,
                                                             receiver: tuple[Receiver, str]) -> None:
    rec, url = receiver
    r = http.post("/fal/modelyard/always-down", params={"fal_webhook": url}, json={"prompt": "x"},
                  headers=srv.headers())
    rid = r.json()["request_id"]
    rec.wait_for_calls(1)  # the dead-lettered job's webhook
    import orjson

    body = orjson.loads(rec.calls[0][1])
    assert body["request_id"] == rid and body["status"] == "ERROR" and body["job_status"] == "dead_letter"
    status = http.get(f"/fal/requests/{rid}/status", headers=srv.headers()).json()
    assert status["status"] == "COMPLETED" and status["error"]
    assert http.get(f"/fal/requests/{rid}", headers=srv.headers()).status_code in (502, 503)


# ---------------------------------------------------------------- QuickCasa's blocking video route

def test_blocking_video_route_waits_for_its_job(http: httpx.Client, srv: Running) -> None:
    body = {"model": "demo-video", "prompt": "waves", "size": "160x96", "duration": 1, "fps": 4}
    r = http.post("/v1/videos/generations", json=body, headers=srv.headers(), timeout=300)
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert item["content_type"] == "video/mp4" and item["duration_seconds"] > 0 and "sig=" in item["url"]
    assert http.get(item["url"].replace(srv.url, "")).content[4:8] == b"ftyp"
    job = http.get(f"/api/jobs/{r.json()['id']}", headers=srv.headers()).json()
    assert job["status"] == "completed" and job["task"] == "text-to-video"


def test_blocking_video_route_answers_202_after_its_limit(http: httpx.Client, srv: Running) -> None:
    ctx = srv.app.state.ctx
    srv.on_server_loop(_pause_runner(ctx, True))
    old = ctx.settings.job_wait_seconds
    ctx.settings.job_wait_seconds = 0.5
    try:
        r = http.post("/v1/videos/generations", json={"model": "demo-video", "prompt": "x", "size": "64x64",
                                                      "duration": 0.5, "fps": 4, "steps": 1}, headers=srv.headers())
        assert r.status_code == 202 and r.json()["object"] == "video.async" and r.json()["status"] == "pending"
        http.post(f"/api/jobs/{r.json()['id']}/cancel", headers=srv.headers())
        bad = http.post("/v1/videos/generations", json={"model": "demo-video", "prompt": "x", "size": "65x64"},
                        headers=srv.headers())
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "size"
    finally:
        ctx.settings.job_wait_seconds = old
        srv.on_server_loop(_pause_runner(ctx, False))
