"""The models pages and the playground in Chromium, against a real server with the built-in local models and the stub
upstream's (stub-gpt, stub-embed, stub-tts, and two image models: one that answers, one whose upstream is gone).

What a person sees is asserted, and where it matters what the server recorded: the request log has the playground's
chat under the request id the page showed, the stub upstream received exactly the conversation on the screen, and the
code the page offers runs (the Python with the official openai SDK, the curl with curl) and gets the same answer.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..conftest import ServerThread, StubControl, free_port, make_settings, running, upstream_models
from ..support.accounts import create_key
from ..support.waiting import wait_until
from ..support.workers import Worker
from .conftest import OWNER_EMAIL, PASSWORD, Person, set_up_owner, shot

REPLY = "Hello from the stub upstream"
STATES = {"online", "warming", "standby", "offline"}


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory,
            stub_server: tuple[ServerThread, StubControl]) -> Iterator[Any]:
    """The console's server as conftest builds it, plus two image models on the stub upstream: the built-in
    demo-image model needs diffusers weights and minutes of CPU, which these tests do not spend."""
    url = stub_server[0].url
    models = upstream_models(url) + [
        {"id": "stub-image", "type": "image", "description": "Stub pictures (a 1x1 PNG)",
         "deployments": [{"backend": "openai", "base_url": url + "/v1"}]},
        {"id": "stub-image-dead", "type": "image",
         "deployments": [{"backend": "openai", "base_url": f"http://127.0.0.1:{free_port()}/v1", "timeout": 2,
                          "connect_timeout": 1}]},
    ]
    # each test signs in afresh: more sign-ins than the per-account limit allows in its window
    settings = make_settings(tmp_path_factory.mktemp("playground"), models=models, cooldown_failures=1_000_000,
                             prompt_rewrite_model="stub-gpt", login_attempts_per_account=1000)
    with running(settings) as srv:
        srv.owner = set_up_owner(srv)
        yield srv


def _row(page: Any, model: str) -> Any:
    return page.locator(f'tr[data-model="{model}"]')


def _open(person: Person, path: str) -> Any:
    """Signed in, at `path` (sign-in's ?next= takes a path without a query of its own)."""
    page = person.sign_in()
    page.goto(path)
    return page


def _org(console: Any) -> str:
    return console.owner["organization"]["id"]


def _log_entry(console: Any, request_id: str) -> dict[str, Any]:
    r = httpx.get(f"{console.url}/api/organizations/{_org(console)}/request-log/{request_id}",
                  headers=console.headers(), timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# ---------------------------------------------------------------- /models and /models/{id}

def test_models_lists_every_model_with_its_status_and_filters(person: Person, console: Any) -> None:
    page = person.sign_in(then="/models")
    _row(page, "stub-gpt").wait_for()
    ids = page.locator("tr[data-model]").evaluate_all("rows => rows.map(r => r.dataset.model)")
    for model in ("stub-gpt", "stub-embed", "stub-tts", "smollm2-135m-instruct", "all-minilm-l6-v2", "espeak-ng",
                  "whisper-base", "demo-image"):
        assert model in ids, ids
    listed = httpx.get(console.url + "/api/catalog", headers=console.headers()).json()["data"]
    assert sorted(ids) == sorted(m["id"] for m in listed)  # the page shows what the API answers, all of it
    for model in ids:  # every row has its state in words
        assert _row(page, model).locator("td").nth(1).inner_text().strip() in STATES
    gpt = _row(page, "stub-gpt")
    assert gpt.locator(".badge").first.inner_text() == "online"
    assert "stub-eu" in gpt.inner_text() and "eu" in gpt.inner_text() and "Free" in gpt.inner_text()
    assert gpt.get_by_role("link", name="Try stub-gpt in the playground").get_attribute("href") == \
        "/playground?model=stub-gpt&mode=chat"
    assert _row(page, "stub-embed").get_by_role("link", name=re.compile("^Try")).get_attribute("href") == \
        "/playground?model=stub-embed&mode=embeddings"
    assert not _row(page, "presidio-pii").get_by_role("link", name=re.compile("^Try")).is_visible()  # no mode for it
    shot(page, "models")

    page.get_by_label("Type").select_option("embedding")
    wait_until(lambda: page.locator("tr[data-model]").count() == 2, 10, "two embedding models")
    assert sorted(page.locator("tr[data-model]").evaluate_all("r => r.map(x => x.dataset.model)")) == \
        ["all-minilm-l6-v2", "stub-embed"]
    assert "type=embedding" in page.url  # the filter is kept in the URL
    page.get_by_label("Type").select_option("")
    page.get_by_label("Task").select_option("speech")
    page.get_by_label("Search").fill("ESPEAK")
    wait_until(lambda: page.locator("tr[data-model]").count() == 1, 10, "one row")
    assert _row(page, "espeak-ng").is_visible()
    page.get_by_label("Search").fill("no such model anywhere")
    page.get_by_text("No model matches these filters.").wait_for()
    page.reload()  # the filters come back from the URL
    page.get_by_text("No model matches these filters.").wait_for()
    assert page.get_by_label("Search").input_value() == "no such model anywhere"
    assert page.get_by_label("Task").input_value() == "speech"
    page.get_by_role("button", name="Clear filters").click()
    _row(page, "stub-gpt").wait_for()
    _row(page, "stub-gpt").get_by_role("link", name="stub-gpt", exact=True).click()
    page.wait_for_url(console.url + "/models/stub-gpt")
    page.get_by_role("heading", name="stub-gpt").wait_for()
    assert not person.errors, person.errors


def test_a_model_page_shows_parameters_latency_and_live_deployments(person: Person, console: Any) -> None:
    page = person.sign_in(then="/models/stub-gpt")
    page.get_by_role("heading", name="stub-gpt").wait_for()
    params = page.get_by_role("table", name="Parameters of chat")
    temperature = params.locator("tr", has=page.locator("td", has_text=re.compile("^temperature$")))
    assert "≥ 0" in temperature.inner_text() and "≤ 2" in temperature.inner_text()
    assert "role: string (required)" in params.inner_text()  # a message's fields, from the catalog's schema
    page.get_by_role("tab", name="completion").click()
    page.get_by_role("table", name="Parameters of completion").wait_for()
    assert page.get_by_role("link", name="Try it in the playground").get_attribute("href") == \
        "/playground?model=stub-gpt&mode=chat"

    deployments = page.get_by_role("table", name="Deployments")
    row = deployments.locator("tr", has_text="stub-eu")
    before = int(row.locator("td").nth(5).inner_text())
    latency = page.get_by_role("table", name="Latency").locator("tr", has_text="chat").first
    # a streamed call through the API: the page follows without a reload (it polls the catalog)
    r = httpx.post(console.url + "/v1/chat/completions", headers=console.headers(), timeout=30,
                   json={"model": "stub-gpt", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200 and REPLY.split()[-1] in r.text
    wait_until(lambda: int(row.locator("td").nth(5).inner_text()) > before, 15, "the success count to move")
    wait_until(lambda: latency.locator("td").nth(2).inner_text() != "–", 15, "a measured first token")
    entry = httpx.get(console.url + "/api/catalog/stub-gpt", headers=console.headers()).json()
    assert int(latency.locator("td").nth(1).inner_text()) <= entry["latency"]["chat"]["samples"]
    shot(page, "model")

    page.goto("/models/whisper-base")
    page.get_by_role("heading", name="whisper-base").wait_for()
    page.get_by_text("request is a multipart upload").first.wait_for()  # transcription: no JSON schema to list
    page.goto("/models/no-such-model")
    assert "No model 'no-such-model'" in page.get_by_role("alert").inner_text()
    assert not person.errors, person.errors


def test_a_worker_appears_live_and_goes_offline(person: Person, console: Any, tmp_path: Path) -> None:
    page = person.sign_in(then="/models")
    page.get_by_role("heading", name="Remote workers").wait_for()  # the operator sees the section, empty
    page.get_by_text("No remote workers have registered.").wait_for()
    token = create_key(console, _org(console), ["worker"])  # the operator's org: only it may add workers
    worker = Worker(tmp_path, console, token, "w-console", models="echo").start()
    try:
        row = page.locator('tr[data-worker="w-console"]')
        row.wait_for(timeout=60_000)  # the page was not reloaded: it polls
        wait_until(lambda: row.locator(".badge").inner_text() == "online", 30, "the worker online")
        _row(page, "echo").wait_for()
        assert "worker:w-console" in _row(page, "echo").inner_text()
        shot(page, "models-worker")
    finally:
        worker.kill()
    wait_until(lambda: row.locator(".badge").inner_text() == "offline", 60, "the worker offline")
    echo = _row(page, "echo")
    wait_until(lambda: "worker:w-console" not in (echo.inner_text() if echo.count() else ""), 60,
               "its deployment withdrawn")
    assert not person.errors, person.errors


# ---------------------------------------------------------------- the playground: chat

def _snippet(page: Any, lang: str) -> str:
    page.get_by_role("tab", name=lang).click()
    return page.get_by_label("Code", exact=True).inner_text()


def _curl_body(curl: str) -> dict[str, Any]:
    """The JSON of a curl command's -d '…' (the page quotes it for a POSIX shell)."""
    quoted = curl.split(" -d ", 1)[1]
    assert quoted.startswith("'")
    return json.loads(quoted[1:quoted.rindex("'")].replace("'\\''", "'"))


def test_chat_streams_and_the_code_matches_the_form(person: Person, console: Any, stub: StubControl) -> None:
    page = _open(person, "/playground?model=stub-gpt&mode=chat")
    page.get_by_role("tab", name="Chat").wait_for()
    assert page.get_by_role("tab", name="Chat").get_attribute("aria-selected") == "true"
    wait_until(lambda: page.get_by_label("Model", exact=True).input_value() == "stub-gpt", 10, "stub-gpt preselected")
    page.get_by_label("System prompt").fill("You answer in one line. It's fine to use 'quotes'.")
    page.get_by_label("Temperature").fill("0.3")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Message").fill("Say hello")

    expected = {"model": "stub-gpt", "messages": [
        {"role": "system", "content": "You answer in one line. It's fine to use 'quotes'."},
        {"role": "user", "content": "Say hello"}],
        "temperature": 0.3, "max_tokens": 64, "stream": True, "stream_options": {"include_usage": True}}
    curl = _snippet(page, "curl")
    assert "$MODELYARD_API_KEY" in curl and console.admin_key not in curl
    assert _curl_body(curl) == expected
    python = _snippet(page, "Python")
    compile(python, "snippet.py", "exec")
    assert 'model="stub-gpt",' in python and '{"role": "user", "content": "Say hello"},' in python
    assert "temperature=0.3," in python and "stream=True," in python

    page.get_by_role("button", name="Send").click()
    conversation = page.get_by_role("log", name="Conversation")
    conversation.get_by_text(REPLY).wait_for()
    usage = page.get_by_label("Usage of the last call")
    usage.get_by_text("Tokens:").wait_for()
    assert "7 in" in usage.inner_text() and "First token" in usage.inner_text()
    request_id = usage.locator("a.mono").inner_text()
    assert request_id.startswith("req_")
    # what the upstream got is what the form held; what the log has is the call the page showed
    assert {k: stub.requests[-1].get(k) for k in ("temperature", "max_tokens", "stream")} == \
        {"temperature": 0.3, "max_tokens": 64, "stream": True}
    assert stub.requests[-1]["messages"] == expected["messages"]
    [call] = _log_entry(console, request_id)["calls"]
    assert call["model_id"] == "stub-gpt" and call["status"] == "ok" and call["route"] == "/v1/chat/completions"
    assert call["token_id"].startswith("user:") and call["ttft_ms"] is not None and call["output_tokens"] == 5

    # the second turn carries the first: the code shows the whole conversation, and so does the upstream's request
    page.get_by_label("Message").fill("And again")
    body = _curl_body(_snippet(page, "curl"))
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "user"]
    assert body["messages"][2] == {"role": "assistant", "content": REPLY}
    page.get_by_role("button", name="Send").click()
    wait_until(lambda: conversation.get_by_text(REPLY).count() == 2, 15, "the second reply")
    assert stub.requests[-1]["messages"] == body["messages"]
    shot(page, "playground-chat")

    # the code runs as shown: the Python with the openai SDK, the curl with curl, each with a key from the env
    env = {**os.environ, "MODELYARD_API_KEY": console.admin_key}
    ran = subprocess.run([sys.executable, "-c", _snippet(page, "Python")], env=env, capture_output=True, text=True,
                         check=False, timeout=120)
    assert ran.returncode == 0 and REPLY in ran.stdout, ran.stderr
    if shutil.which("curl"):
        ran = subprocess.run(["bash", "-c", _snippet(page, "curl")], env=env, capture_output=True, text=True,
                             check=False, timeout=60)
        assert ran.returncode == 0 and '"content": " upstream"' in ran.stdout and "[DONE]" in ran.stdout, ran.stdout
    assert not person.errors, person.errors


def test_stop_aborts_the_stream(person: Person, console: Any, stub: StubControl) -> None:
    stub.reply = " ".join(f"word{i}" for i in range(40))
    stub.chunk_delay = 0.25
    page = _open(person, "/playground?model=stub-gpt")
    page.get_by_label("Message").fill("Talk for a while")
    page.get_by_role("button", name="Send").click()
    conversation = page.get_by_role("log", name="Conversation")
    conversation.get_by_text("word1", exact=False).wait_for()
    page.get_by_role("button", name="Stop").click()
    conversation.get_by_text("Stopped.").wait_for()
    assert "word39" not in conversation.inner_text()
    assert page.get_by_role("button", name="Send").is_visible()
    wait_until(lambda: stub.disconnects >= 1, 15, "the upstream stream cut")
    assert not person.errors, person.errors


def test_an_error_is_shown_and_the_message_kept(person: Person, console: Any, stub: StubControl) -> None:
    stub.mode = "bad_request"
    page = _open(person, "/playground?model=stub-gpt")
    page.get_by_label("Message").fill("This will be refused")
    page.get_by_role("button", name="Send").click()
    page.get_by_role("alert").filter(has_text="stub does not like 'temperature'").wait_for()
    assert page.get_by_label("Message").input_value() == "This will be refused"  # to send again
    assert not page.get_by_role("log", name="Conversation").is_visible()


def test_the_url_chooses_mode_and_model(person: Person, console: Any) -> None:
    page = _open(person, "/playground?model=stub-embed")
    wait_until(lambda: page.get_by_role("tab", name="Embeddings").get_attribute("aria-selected") == "true", 10,
               "the embeddings tab")
    assert page.get_by_label("Model", exact=True).input_value() == "stub-embed"
    page.goto("/playground?model=stub-tts&mode=chat")
    assert "stub-tts does not serve chat" in page.get_by_role("status").filter(has_text="does not serve").inner_text()
    page.goto("/playground?model=nothing-here&mode=image")
    page.get_by_text("No model 'nothing-here' in your catalog.").wait_for()
    # the model list of a mode is the catalog's models for its task
    options = page.get_by_label("Model", exact=True).locator("option").evaluate_all("o => o.map(x => x.value)")
    assert set(options) == {"stub-image", "stub-image-dead", "demo-image"}
    assert not person.errors, person.errors


# ---------------------------------------------------------------- the other modes

def test_embeddings(person: Person, console: Any, stub: StubControl) -> None:
    page = _open(person, "/playground")
    page.get_by_role("tab", name="Embeddings").click()
    page.get_by_label("Model", exact=True).select_option("stub-embed")
    page.get_by_label("Text to embed").fill("hello")
    assert _curl_body(_snippet(page, "curl")) == {"model": "stub-embed", "input": "hello"}
    python = _snippet(page, "Python")
    compile(python, "snippet.py", "exec")
    assert 'client.embeddings.create(\n    model="stub-embed",\n    input="hello",\n)' in python
    page.get_by_role("button", name="Embed").click()
    page.get_by_text("dimensions. The first values:").wait_for()
    assert page.locator("main").get_by_text("3", exact=True).is_visible()
    assert page.get_by_label("First values").inner_text() == "[5.0000, 1.0000, 0.0000]"  # the stub: [len, 1, 0]
    assert "Tokens: 1 in · 1 total" in page.get_by_label("Usage of the last call").inner_text()  # the stub's usage
    assert {k: stub.requests[-1][k] for k in ("model", "input")} == {"model": "stub-embedder", "input": "hello"}
    shot(page, "playground-embeddings")
    assert not person.errors, person.errors


def test_speech_plays(person: Person, console: Any, stub: StubControl, espeak: None) -> None:
    page = _open(person, "/playground?mode=speech&model=espeak-ng")
    wait_until(lambda: page.get_by_label("Voice", exact=True).input_value() == "en-us", 15, "the default voice")
    page.get_by_label("Text", exact=True).fill("Hello from the playground.")
    page.get_by_label("Format").select_option("wav")
    assert _curl_body(_snippet(page, "curl")) == {"model": "espeak-ng", "input": "Hello from the playground.",
                                                 "voice": "en-us", "response_format": "wav"}
    assert "--output speech.wav" in _snippet(page, "curl")
    page.get_by_role("button", name="Speak").click()
    audio = page.get_by_label("Generated speech")
    audio.wait_for()
    assert audio.get_attribute("src").startswith("blob:")
    page.wait_for_function("() => { const a = document.querySelector('audio'); return a && a.readyState >= 1; }")
    assert audio.evaluate("a => a.duration") > 0.5  # the browser decoded the WAV: seconds of speech
    page.get_by_label("Usage of the last call").get_by_text("Audio:").wait_for()
    shot(page, "playground-speech")

    # the stub upstream's model: its bytes arrive as a blob the page offers (the stub's "WAV" is only a header)
    page.get_by_label("Model", exact=True).select_option("stub-tts")
    assert page.get_by_label("Voice name").input_value() == "alloy"
    page.get_by_role("button", name="Speak").click()
    size = len(b"RIFF\x00\x00\x00\x00WAVE" + b"Hello from the playground.")  # what the stub answers
    page.get_by_role("link", name=f"Download speech.wav ({size} B)").wait_for()
    assert page.get_by_label("Generated speech").get_attribute("src").startswith("blob:")
    assert stub.requests[-1] == {"model": "stub-tts", "input": "Hello from the playground.", "voice": "alloy",
                                 "response_format": "wav"}
    assert f"Size: {size} B" in page.get_by_label("Usage of the last call").inner_text()
    assert not person.errors, person.errors


def test_image_shows_the_picture_and_an_upstream_failure(person: Person, console: Any, stub: StubControl) -> None:
    page = _open(person, "/playground?mode=image&model=stub-image")
    page.get_by_label("Prompt", exact=True).fill("A lighthouse at dusk")
    page.get_by_label("Size").select_option("256x256")
    assert _curl_body(_snippet(page, "curl")) == {"model": "stub-image", "prompt": "A lighthouse at dusk", "n": 1,
                                                 "size": "256x256"}
    page.get_by_role("button", name="Generate").click()
    img = page.get_by_role("img", name="Generated image for: A lighthouse at dusk")
    img.wait_for()
    page.wait_for_function(
        "() => { const i = document.querySelector('.media-grid img'); return i && i.complete && i.naturalWidth > 0; }")
    assert img.evaluate("i => i.naturalWidth") == 1  # the stub's 1x1 PNG, served from the gateway's media link
    assert "/media/" in img.get_attribute("src")
    shot(page, "playground-image")

    page.get_by_label("Model", exact=True).select_option("stub-image-dead")
    page.get_by_role("button", name="Generate").click()
    alert = page.get_by_role("alert").filter(has_text="failed")
    alert.wait_for()
    assert "stub-image-dead" in alert.inner_text()
    assert not page.get_by_role("img", name=re.compile("^Generated image")).count()
    assert not person.errors, person.errors


def test_transcription_of_an_uploaded_wav(person: Person, console: Any, tmp_path: Path, espeak: None) -> None:
    wav = tmp_path / "hello.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "Hello world, this is a test."], check=True, timeout=60)
    page = _open(person, "/playground?mode=transcription")
    wait_until(lambda: page.get_by_label("Model", exact=True).input_value() == "whisper-base", 10, "whisper-base")
    page.get_by_label("Audio file").set_input_files(str(wav))
    page.get_by_label("Language", exact=True).fill("en")
    curl = _snippet(page, "curl")
    assert "-F model=whisper-base" in curl and "-F file=@hello.wav" in curl and "-F language=en" in curl
    python = _snippet(page, "Python")
    compile(python, "snippet.py", "exec")
    assert 'open("hello.wav", "rb")' in python and 'language="en",' in python
    page.get_by_role("button", name="Transcribe").click()
    transcript = page.get_by_label("Transcript", exact=True)
    wait_until(lambda: transcript.inner_text().strip(), 90, "the transcript", interval=0.2)
    assert "hello world" in transcript.inner_text().lower()
    shot(page, "playground-transcription")
    assert not person.errors, person.errors


# ---------------------------------------------------------------- the session cookie on /v1, at the HTTP level

def test_a_session_cookie_calls_v1_only_with_the_csrf_token(console: Any) -> None:
    jar = httpx.Client(base_url=console.url, timeout=60)
    try:
        assert jar.post("/api/auth/login", json={"email": OWNER_EMAIL, "password": PASSWORD}).status_code == 200
        csrf = jar.get("/api/auth/session").json()["csrf_token"]
        chat = {"model": "stub-gpt", "messages": [{"role": "user", "content": "hi"}]}
        bare = jar.post("/v1/chat/completions", json=chat)
        assert bare.status_code == 403 and bare.json()["error"]["code"] == "csrf_token_invalid"  # OpenAI's envelope
        assert jar.post("/v1/chat/completions", json=chat, headers={"X-CSRF-Token": "forged"}).status_code == 403
        ok = jar.post("/v1/chat/completions", json=chat, headers={"X-CSRF-Token": csrf})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == REPLY
        # a multipart upload carries it as the header too (the form's fields are the file's, not ours)
        files = {"file": ("a.wav", b"RIFF\x00\x00\x00\x00WAVEnot audio", "audio/wav")}
        refused = jar.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-base"})
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_token_invalid"
        taken = jar.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-base"},
                         headers={"X-CSRF-Token": csrf})
        assert taken.status_code == 400 and taken.json()["error"]["param"] == "file"  # past auth: the bytes judged
        # a key needs no token, and a cookie-less call without a key is a 401
        key = create_key(console, _org(console))
        assert httpx.post(console.url + "/v1/chat/completions", json=chat, timeout=30,
                          headers={"Authorization": f"Bearer {key}"}).status_code == 200
        assert httpx.post(console.url + "/v1/chat/completions", json=chat, timeout=30).status_code == 401
    finally:
        jar.close()
