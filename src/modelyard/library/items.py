"""What a library item is, and how a media result (a job's stored result, a sync route's bytes) becomes one."""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import secrets
from dataclasses import asdict, dataclass, field
from typing import Any

from ..media import CONTENT_TYPES

TYPES = ("image", "video", "audio")
# tasks whose result is media: what render runs and what an explicit save of a job accepts
MEDIA_TASKS = ("text-to-image", "image-to-image", "text-to-video", "image-to-video", "speech")
# a media name inside any link we hand out: ours (/media/<name>?sig=) or a bucket's presigned URL (.../media/<name>?)
_NAME_IN_URL = re.compile(r"/media/([a-z]+_[0-9a-f]{24}\.[a-z0-9]{2,5})(?:\?|$)")
_PROMPT_KEYS = ("prompt", "input", "positive_prompt")  # speech calls it `input`, the studio `positive_prompt`
_BULKY = ("image", "images", "mask", "file", "reference_images", "image_url", "audio_url", "messages")
MAX_PARAM_CHARS = 500  # a parameter longer than this (inline data) is not worth keeping beside the item


@dataclass
class Media:
    """One stored object of an item: its media-store name and what is known of it."""

    name: str
    content_type: str
    bytes: int | None = None
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None


@dataclass
class Item:
    id: str
    org_id: str
    type: str
    model_id: str
    task: str
    prompt: str | None
    params: dict[str, Any]
    media: list[Media]
    source_route: str
    job_id: str | None
    run_id: str | None
    created_at: float
    explicit: bool = False  # render or an explicit save: kept even where the org turned autosave off
    seq: int | None = None
    embedding: list[float] | None = field(default=None, repr=False)

    @property
    def bytes(self) -> int:
        return sum(m.bytes or 0 for m in self.media)

    def row(self) -> dict[str, Any]:
        first = self.media[0] if self.media else Media("", "")
        return {"id": self.id, "org_id": self.org_id, "type": self.type, "model_id": self.model_id,
                "task": self.task, "prompt": self.prompt, "params": self.params,
                "media": [asdict(m) for m in self.media], "width": first.width, "height": first.height,
                "duration_seconds": first.duration_seconds, "bytes": self.bytes, "source_route": self.source_route,
                "job_id": self.job_id, "run_id": self.run_id, "embedding": None,
                "embed_due": bool(self.prompt), "created_at": self.created_at}

    def encode(self) -> dict[str, Any]:
        """For the write-behind (JSON-able, spooled as is)."""
        return {**self.row(), "explicit": self.explicit}


def item_from_row(m: Any) -> Item:
    return Item(id=m["id"], org_id=m["org_id"], type=m["type"], model_id=m["model_id"], task=m["task"],
                prompt=m["prompt"], params=m["params"] or {}, media=[Media(**x) for x in m["media"] or []],
                source_route=m["source_route"], job_id=m["job_id"], run_id=m["run_id"],
                created_at=float(m["created_at"]), seq=m["seq"], embedding=m["embedding"])


def new_item_id() -> str:
    return "lib_" + secrets.token_hex(12)


def item_id_for_job(job_id: str) -> str:
    """One item per job, the same id wherever and however often it is recorded (a repeated write changes nothing)."""
    return "lib_" + hashlib.sha256(job_id.encode()).hexdigest()[:24]


def type_of(content_type: str) -> str | None:
    kind = content_type.split("/", 1)[0]
    return {"image": "image", "video": "video", "audio": "audio"}.get(kind)


def ext_of(content_type: str) -> str | None:
    for ext, ct in CONTENT_TYPES.items():
        if ct == content_type:
            return ext
    return None


def prompt_and_params(payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The prompt a request was made with, and its other small parameters (inline images and audio left out)."""
    prompt = next((payload[k].replace("\x00", "") for k in _PROMPT_KEYS  # no database keeps a NUL in text
                   if isinstance(payload.get(k), str) and payload[k].strip()), None)
    params = {k: v for k, v in payload.items()
              if k not in _PROMPT_KEYS and k not in _BULKY and k not in ("model", "async", "response_format")
              and v is not None and len(repr(v)) <= MAX_PARAM_CHARS}
    return prompt, params


@dataclass
class Found:
    """Media found in a stored job result: already in the media store (`stored`) or inline bytes to save (`raw`)."""

    stored: list[Media] = field(default_factory=list)
    raw: list[tuple[bytes, str]] = field(default_factory=list)  # (data, content type)


def media_in_result(result: Any) -> Found:
    """A job's stored result: {"images": [{file}]}, {"video": {file}}, {"audio": {file}} from plain jobs, or a batch
    line's response body (image URLs we signed, b64_json images, base64 speech)."""
    found = Found()
    if not isinstance(result, dict):
        return found
    for img in result.get("images") or []:
        if isinstance(img, dict) and isinstance(img.get("file"), str):
            found.stored.append(Media(img["file"], img.get("content_type") or "image/png",
                                      width=img.get("width"), height=img.get("height")))
    for key in ("video", "audio"):
        v = result.get(key)
        if isinstance(v, dict) and isinstance(v.get("file"), str):
            found.stored.append(Media(v["file"], v.get("content_type") or f"{key}/mp4", width=v.get("width"),
                                      height=v.get("height"), duration_seconds=v.get("duration_seconds")))
    if result.get("object") == "audio.speech" and isinstance(result.get("data"), str):
        data = _b64(result["data"])
        if data:
            found.raw.append((data, str(result.get("content_type") or "audio/mpeg")))
    for entry in result.get("data") or [] if isinstance(result.get("data"), list) else []:
        if not isinstance(entry, dict):
            continue
        m = _NAME_IN_URL.search(entry.get("url") or "") if isinstance(entry.get("url"), str) else None
        if m:
            ext = m.group(1).rsplit(".", 1)[1]
            found.stored.append(Media(m.group(1), CONTENT_TYPES.get(ext, "application/octet-stream")))
        elif isinstance(entry.get("b64_json"), str):
            data = _b64(entry["b64_json"])
            if data:
                found.raw.append((data, "image/png"))
    return found


def name_in_url(url: str) -> str | None:
    m = _NAME_IN_URL.search(url)
    return m.group(1) if m else None


def _b64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
