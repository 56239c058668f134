"""fal queue wire format: slugs and arguments to tasks and payloads, status and error bodies. No I/O."""

from __future__ import annotations

from typing import Any

from ..errors import InvalidRequest, ModelyardError
from ..types import Task

# fal's named image sizes (https://fal.ai/models docs: image_size presets)
IMAGE_SIZES = {"square_hd": (1024, 1024), "square": (512, 512), "portrait_4_3": (768, 1024),
               "portrait_16_9": (576, 1024), "landscape_4_3": (1024, 768), "landscape_16_9": (1024, 576)}
VIDEO_HEIGHTS = {"480p": 480, "580p": 576, "720p": 720, "1080p": 1080}
RATIOS = {"16:9": (16, 9), "9:16": (9, 16), "1:1": (1, 1), "4:3": (4, 3), "3:4": (3, 4)}
MAX_FPS, DEFAULT_FPS, MAX_VIDEO_SECONDS = 60, 16, 30  # the bounds VideoRequest enforces on fps and duration
FAL_ONLY = {"sync_mode", "enable_safety_checker", "output_format", "acceleration", "enable_prompt_expansion"}
FAL_STATUS = {"pending": "IN_QUEUE", "running": "IN_PROGRESS"}  # everything final is COMPLETED, as fal does
ERROR_TYPES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found", 429: "rate_limited",
               402: "insufficient_balance", 502: "upstream_error", 503: "overloaded", 504: "timeout"}


def error_body(exc: ModelyardError) -> dict[str, Any]:
    """fal answers `detail` (FastAPI's shape: a list naming the field for bad input) and `error_type`."""
    error_type = exc.code or ERROR_TYPES.get(exc.status, "internal_error")
    if exc.param:
        return {"detail": [{"loc": ["body", *exc.param.split(".")], "msg": exc.message, "type": error_type}],
                "error_type": error_type}
    return {"detail": exc.message, "error_type": error_type}


def _dims(w: int, h: int) -> str:
    return f"{max(64, round(w / 8) * 8)}x{max(64, round(h / 8) * 8)}"


def _image_size(value: Any) -> str:
    if isinstance(value, str):
        if value not in IMAGE_SIZES:
            raise InvalidRequest(f"'image_size' is one of {', '.join(IMAGE_SIZES)} or {{width, height}}.",
                                 param="image_size")
        return _dims(*IMAGE_SIZES[value])
    if isinstance(value, dict) and isinstance(value.get("width"), int) and isinstance(value.get("height"), int):
        w, h = value["width"], value["height"]
        if not (64 <= w <= 2048 and 64 <= h <= 2048):
            raise InvalidRequest("'image_size' sides are between 64 and 2048.", param="image_size")
        return _dims(w, h)
    raise InvalidRequest("'image_size' is a preset name or {width, height}.", param="image_size")


def video_size(resolution: Any, aspect_ratio: Any, param: str = "resolution") -> str:
    if not isinstance(resolution, str) or resolution not in VIDEO_HEIGHTS:  # a list is unhashable: check type first
        raise InvalidRequest(f"'{param}' is one of {', '.join(VIDEO_HEIGHTS)}.", param=param)
    if not isinstance(aspect_ratio, str) or aspect_ratio not in RATIOS:
        raise InvalidRequest(f"'aspect_ratio' is one of {', '.join(RATIOS)}.", param="aspect_ratio")
    short = VIDEO_HEIGHTS[resolution]
    rw, rh = RATIOS[aspect_ratio]
    return _dims(short * rw / rh, short) if rw >= rh else _dims(short, short * rh / rw)


def _digits(s: str) -> bool:
    """Only ASCII digits: str.isdigit() also accepts '²', which int() refuses."""
    return s.isascii() and s.isdigit()


def _whole(value: Any, param: str, low: int, high: int) -> int:
    """A whole number (or its decimal string) within [low, high], else a 400 naming the field."""
    if isinstance(value, str) and _digits(value):
        value = int(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidRequest(f"'{param}' is a whole number from {low} to {high}.", param=param)
    return value


def pick_task(model_tasks: frozenset[Task], subpath: str, args: dict[str, Any]) -> Task:
    """The task a fal call asks for: named by the path (`.../image-to-video`), else guessed from the inputs."""
    tail = subpath.rstrip("/").rsplit("/", 1)[-1] if subpath else ""
    try:
        named = Task(tail) if tail else None
    except ValueError:
        named = None
    if named is not None:
        if named not in model_tasks:
            raise InvalidRequest(f"This model does not serve {named.value}.", param="model")
        return named
    has_image = bool(args.get("image_url") or args.get("image"))
    for task in (Task.IMAGE_TO_VIDEO if has_image else Task.TEXT_TO_VIDEO,
                 Task.IMAGE_TO_IMAGE if has_image else Task.TEXT_TO_IMAGE,
                 Task.CHAT, Task.EMBEDDING, Task.SPEECH, Task.TRANSCRIPTION, Task.RERANK, Task.MODERATION, Task.PII):
        if task in model_tasks:
            return task
    return sorted(model_tasks, key=lambda t: t.value)[0]


def to_payload(task: Task, args: dict[str, Any]) -> dict[str, Any]:
    """fal's argument names to the sync routes' request fields; unknown fields pass through to the backend."""
    a = {k: v for k, v in args.items() if k not in FAL_ONLY}
    if task in (Task.TEXT_TO_IMAGE, Task.IMAGE_TO_IMAGE):
        out = {k: v for k, v in a.items() if k not in ("image_size", "num_images", "num_inference_steps")}
        if "image_size" in a:
            out["size"] = _image_size(a["image_size"])
        if "num_images" in a:
            out["n"] = a["num_images"]
        if "num_inference_steps" in a:
            out["steps"] = a["num_inference_steps"]
        return out
    if task in (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO):
        out = {k: v for k, v in a.items() if k not in ("resolution", "aspect_ratio", "num_inference_steps",
                                                         "frames_per_second", "num_frames")}
        if "resolution" in a or "aspect_ratio" in a:
            out["size"] = video_size(a.get("resolution", "480p"), a.get("aspect_ratio", "16:9"))
        if isinstance(out.get("duration"), str) and _digits(out["duration"].rstrip("s")):
            out["duration"] = int(out["duration"].rstrip("s"))  # fal models take "5" as often as 5
        if "frames_per_second" in a:
            out["fps"] = _whole(a["frames_per_second"], "frames_per_second", 1, MAX_FPS)
        elif "fps" in out:  # the sync route's own name passes through; num_frames divides by it below
            out["fps"] = _whole(out["fps"], "fps", 1, MAX_FPS)
        if "num_frames" in a and "duration" not in out:
            frames = _whole(a["num_frames"], "num_frames", 1, MAX_VIDEO_SECONDS * MAX_FPS)
            out["duration"] = frames / out.get("fps", DEFAULT_FPS)
            if out["duration"] > MAX_VIDEO_SECONDS:
                raise InvalidRequest(f"'num_frames' at {out.get('fps', DEFAULT_FPS)} frames per second is longer "
                                     f"than {MAX_VIDEO_SECONDS} seconds.", param="num_frames")
        if "num_inference_steps" in a:
            out["steps"] = a["num_inference_steps"]
        return out
    if task == Task.CHAT and "messages" not in a:
        if not isinstance(a.get("prompt"), str):
            raise InvalidRequest("Send 'prompt' (or OpenAI-style 'messages').", param="prompt")
        messages = [{"role": "system", "content": a["system_prompt"]}] if a.get("system_prompt") else []
        rest = {k: v for k, v in a.items() if k not in ("prompt", "system_prompt", "model")}
        return {**rest, "messages": [*messages, {"role": "user", "content": a["prompt"]}]}
    if task == Task.SPEECH and "input" not in a and isinstance(a.get("text"), str):
        return {**{k: v for k, v in a.items() if k != "text"}, "input": a["text"]}
    return a


def result_body(task: Task, result: Any) -> Any:
    """Media results already have fal's shape (images[], video, audio); chat adds fal's `output` text."""
    if task == Task.CHAT and isinstance(result, dict) and result.get("choices"):
        return {"output": (result["choices"][0].get("message") or {}).get("content"), **result}
    return result


def status_body(job: Any, position: int | None, logs: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"status": FAL_STATUS.get(job.status, "COMPLETED"), "request_id": job.id,
                            "logs": [] if logs else None}
    if job.status == "pending":
        body["queue_position"] = position or 0
    if logs:
        body["logs"] = [{"message": f"attempt {job.attempts} of {job.max_attempts}", "level": "INFO",
                         "source": "modelyard", "timestamp": job.started_at}] if job.started_at else []
    if job.final:
        if job.started_at and job.finished_at:
            body["metrics"] = {"inference_time": round(job.finished_at - job.started_at, 3)}
        else:
            body["metrics"] = {}
        if job.status != "completed":
            err = job.error or {}
            body["error"] = err.get("message") or job.status
            body["error_type"] = err.get("code") or job.status
    return body
