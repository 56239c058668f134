"""Studio generate/status wire format: the generate body validated as its docs say, mode -> task. No I/O."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequest, ModelyardError
from ..types import Task

MODES = ("t2i", "i2i", "t2v", "i2v", "t2i_pro", "t2v_pro", "i2v_pro", "i2i_pro", "i2i_pro_plus")
TASK_OF_MODE = {"t2i": Task.TEXT_TO_IMAGE, "t2i_pro": Task.TEXT_TO_IMAGE, "i2i": Task.IMAGE_TO_IMAGE,
                "i2i_pro": Task.IMAGE_TO_IMAGE, "i2i_pro_plus": Task.IMAGE_TO_IMAGE, "t2v": Task.TEXT_TO_VIDEO,
                "t2v_pro": Task.TEXT_TO_VIDEO, "i2v": Task.IMAGE_TO_VIDEO, "i2v_pro": Task.IMAGE_TO_VIDEO}
VIDEO_MODES = ("t2v", "i2v", "t2v_pro", "i2v_pro")
MAX_PROMPT = 1500
MAX_IMAGE_BYTES = 5 * 1024 * 1024
NO_NEGATIVE = ("t2i", "t2i_pro", "i2i_pro", "i2i_pro_plus")  # i2i_pro_plus takes i2i_pro's parameters
RESOLUTIONS = {"i2i": ("1k", "2k", "4k"), "i2i_pro": ("1k", "2k", "4k"), "i2i_pro_plus": ("1k", "2k", "4k"),
               "t2i_pro": ("2k", "4k"), **{m: ("720p", "1080p") for m in VIDEO_MODES}}
ORIENTATIONS = {"i2i": ("square", "horizontal", "vertical"), "t2v": ("horizontal", "vertical")}
ASPECTS = {"t2i": ("1:1", "2:3", "3:2", "9:16", "16:9"), "t2i_pro": ("1:1", "2:3", "3:2", "9:16", "16:9"),
           **{m: ("1:1", "3:4", "4:3", "9:16", "16:9") for m in ("i2i_pro", "i2i_pro_plus", "t2v_pro")}}
DURATIONS = (5, 10, 15)
STATUS = {"pending": "QUEUED", "completed": "COMPLETED"}
# the long side of an image per resolution; local pipelines top out at 2048 per side
LONG_SIDE = {"1k": 1024, "2k": 2048, "4k": 2048}
VIDEO_SHORT = {"720p": 720, "1080p": 1080}


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """Flat, like the studio's FAILED status: `error` is the message; `field` names the bad parameter."""
    return {"error": exc.message, "code": exc.code, "field": exc.param}


@dataclass
class StudioJob:
    mode: str
    task: Task
    payload: dict[str, Any]
    images: int
    image_size: str | None
    video_seconds: float
    video_resolution: str | None


def _str(body: dict[str, Any], name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None:
        if required:
            raise InvalidRequest(f"'{name}' is required.", param=name)
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"'{name}' must be a string.", param=name)
    return value


def _choice(body: dict[str, Any], name: str, mode: str, table: dict[str, tuple], default: Any) -> Any:
    value = _str(body, name)
    allowed = table.get(mode)
    if allowed is None or value is None:
        return default  # not used by this mode: ignored, as the docs say
    if value not in allowed:
        raise InvalidRequest(f"'{name}' for mode {mode} is one of {', '.join(allowed)}.", param=name)
    return value


def _base64_image(value: str, param: str) -> str:
    """Accept raw base64 or a data URL; returns the data URL-less base64 after checking it decodes and fits."""
    raw = value.partition(",")[2] if value.startswith("data:") else value
    if value.startswith("data:") and ";base64" not in value.partition(",")[0]:
        raise InvalidRequest(f"'{param}' data URL must be base64-encoded.", param=param)
    if len(raw) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise InvalidRequest(f"'{param}' is larger than 5 MB.", param=param)
    try:
        data = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"'{param}' is not valid base64.", param=param) from None
    if not data:
        raise InvalidRequest(f"'{param}' is empty.", param=param)
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidRequest(f"'{param}' is larger than 5 MB.", param=param)
    return raw


def _image_size(mode: str, resolution: str, aspect: str, orientation: str | None) -> str:
    long = LONG_SIDE.get(resolution, 1024)
    if orientation is not None:
        aspect = {"square": "1:1", "horizontal": "4:3", "vertical": "3:4"}[orientation]
    w, h = (int(x) for x in aspect.split(":"))
    scale = long / max(w, h)
    return f"{round(w * scale / 8) * 8}x{round(h * scale / 8) * 8}"


def _video_size(resolution: str, aspect: str) -> str:
    short = VIDEO_SHORT[resolution]
    w, h = (int(x) for x in aspect.split(":"))
    scale = short / min(w, h)
    return f"{min(2048, round(w * scale / 8) * 8)}x{min(2048, round(h * scale / 8) * 8)}"


def parse_generate(body: Any) -> StudioJob:
    """POST /api/v1/generate, every rule of the studio's documentation; the first broken one is the 400."""
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    mode = _str(body, "mode", required=True)
    if mode not in MODES:
        raise InvalidRequest(f"'mode' is one of {', '.join(MODES)}.", param="mode")
    prompt = _str(body, "positive_prompt", required=True) or ""
    if not prompt.strip():
        raise InvalidRequest("'positive_prompt' must not be empty.", param="positive_prompt")
    if len(prompt) > MAX_PROMPT:
        raise InvalidRequest(f"'positive_prompt' is longer than {MAX_PROMPT} characters.", param="positive_prompt")
    negative = _str(body, "negative_prompt")
    if negative is not None and len(negative) > MAX_PROMPT:
        raise InvalidRequest(f"'negative_prompt' is longer than {MAX_PROMPT} characters.", param="negative_prompt")
    if mode in NO_NEGATIVE:
        negative = None
    video = mode in VIDEO_MODES
    resolution = _choice(body, "resolution", mode, RESOLUTIONS, "720p" if video else ("2k" if mode == "t2i_pro" else "1k"))
    orientation = _choice(body, "orientation", mode, ORIENTATIONS, None)
    aspect = _choice(body, "aspect_ratio", mode, ASPECTS, "1:1")
    duration = body.get("duration", 5)
    if video and (isinstance(duration, bool) or duration not in DURATIONS):
        raise InvalidRequest("'duration' is 5, 10 or 15 (seconds).", param="duration")
    image = _str(body, "image")
    if mode in ("i2i", "i2v", "i2v_pro"):
        if not image:
            raise InvalidRequest(f"'image' (base64) is required for mode {mode}.", param="image")
        image = _base64_image(image, "image")
    images = body.get("images")
    first_image: dict[str, str] = {}
    if mode in ("i2i_pro", "i2i_pro_plus"):
        if not isinstance(images, list) or not images:
            raise InvalidRequest(f"'images' (1-12 URLs or base64 strings) is required for mode {mode}.", param="images")
        if len(images) > 12:
            raise InvalidRequest("'images' takes at most 12 images.", param="images")
        clean = []
        for i, item in enumerate(images):
            if not isinstance(item, str) or not item:
                raise InvalidRequest(f"'images[{i}]' must be a URL or a base64 string.", param=f"images[{i}]")
            if item.startswith(("http://", "https://")):
                clean.append(item)
            else:
                clean.append(_base64_image(item, f"images[{i}]"))
        images = clean
        first_image = {"image_url": images[0]} if images[0].startswith("http") else {"image": images[0]}
    payload: dict[str, Any] = {"prompt": prompt}
    if negative:
        payload["negative_prompt"] = negative
    if video:
        vid_aspect = aspect if mode == "t2v_pro" else ("9:16" if orientation == "vertical" else "16:9")
        payload.update(size=_video_size(resolution, vid_aspect), duration=duration)
        if image:
            payload["image"] = image
        return StudioJob(mode, TASK_OF_MODE[mode], payload, 0, None, float(duration), resolution)
    payload["size"] = _image_size(mode, resolution, aspect, orientation if mode == "i2i" else None)
    if mode == "t2i":
        payload["n"] = 4  # the studio's t2i makes four images per request
    if image:
        payload["image"] = image
    payload.update(first_image)
    if mode in ("i2i_pro", "i2i_pro_plus"):
        payload["reference_images"] = images  # all of them, for upstreams that take several; local models use the first
    n = payload.get("n", 1)
    return StudioJob(mode, TASK_OF_MODE[mode], payload, n, resolution, 0.0, None)


def status_body(job: Any, result: Any) -> dict[str, Any]:
    """QUEUED / IN_PROGRESS / COMPLETED (result_url, result_urls for t2i) / FAILED (error)."""
    body: dict[str, Any] = {"job_id": job.id, "mode": job.meta.get("mode")}
    if job.status == "running":
        body["status"] = "IN_PROGRESS"
    elif job.status == "completed":
        urls = [i["url"] for i in (result or {}).get("images", [])]
        if (result or {}).get("video"):
            urls = [result["video"]["url"]]
        if not urls:  # done, but the files are not ready to hand out (yet): keep the client polling
            body["status"] = "PROCESSING"
            return body
        body.update(status="COMPLETED", result_url=urls[0])
        if job.meta.get("mode") == "t2i":
            body["result_urls"] = urls
    elif job.status == "pending":
        body["status"] = "QUEUED"
    else:
        body.update(status="FAILED", error=(job.error or {}).get("message") or "Generation failed")
    return body
