"""What a job does: its payload becomes the sync path's request type, and the result becomes storable JSON."""

from __future__ import annotations

import base64
import struct
from typing import Any

from pydantic import BaseModel, ValidationError

from ..pipeline.billing import video_resolution
from ..errors import InvalidRequest
from ..net import check_syntax, fetch_bytes
from ..pipeline.units import Units
from ..protocols.openai.wire import describe_validation_error
from ..backends.media_input import check_image, decode_base64_image
from ..protocols.openai.schema import ChatRequest
from ..types import Task
from ..protocols.openai.media import (AudioInput, AudioResult, EmbeddingRequest, ImageEdit, ImageRequest, ImageResult,
                                      ModerationRequest, PIIRequest, RerankRequest, ScoreRequest, SpeechRequest,
                                      VideoRequest, VideoResult, parse_size)

MAX_INPUT_BYTES = 25 * 1024 * 1024
# Workflow nodes and the job API name tasks with these prefixes; they mean the plain task.
ALIASES = {"openai/chat-completion": Task.CHAT, "openai/chat-completions": Task.CHAT,
           "openai/embeddings": Task.EMBEDDING, "openai/embedding": Task.EMBEDDING,
           "openai/image-generation": Task.TEXT_TO_IMAGE, "openai/images": Task.TEXT_TO_IMAGE,
           "openai/speech": Task.SPEECH, "openai/transcription": Task.TRANSCRIPTION,
           "openai/moderation": Task.MODERATION, "openai/rerank": Task.RERANK}
PYDANTIC_TYPES: dict[Task, type[BaseModel]] = {
    Task.CHAT: ChatRequest, Task.EMBEDDING: EmbeddingRequest, Task.RERANK: RerankRequest, Task.SCORE: ScoreRequest,
    Task.PII: PIIRequest, Task.MODERATION: ModerationRequest, Task.SPEECH: SpeechRequest,
    Task.TEXT_TO_IMAGE: ImageRequest, Task.TEXT_TO_VIDEO: VideoRequest, Task.IMAGE_TO_VIDEO: VideoRequest}
JOB_TASKS = frozenset(PYDANTIC_TYPES) | {Task.IMAGE_TO_IMAGE, Task.TRANSCRIPTION, Task.TRANSLATION}
AUDIO_EXT = {"audio/mpeg": "mp3", "audio/wav": "wav", "audio/flac": "flac", "audio/ogg": "opus", "audio/aac": "aac",
             "audio/pcm": "pcm"}


def task_named(name: str, param: str = "task") -> Task:
    """`text-to-image`, `fal/text-to-image`, `openai/chat-completion` ... -> the task they name."""
    task = ALIASES.get(name)
    if task is None:
        try:
            task = Task(name.split("/", 1)[1] if name.startswith(("fal/", "openai/")) else name)
        except ValueError:
            raise InvalidRequest(f"Unknown task '{name}'.", param=param) from None
    return task


def parse_task(name: str, param: str = "task") -> Task:
    """A task name (aliases accepted) -> a Task that jobs can run."""
    task = task_named(name, param)
    if task not in JOB_TASKS:
        raise InvalidRequest(f"Task '{task.value}' cannot run as a job.", param=param, code="unsupported_task")
    return task


def _validated(cls: type[BaseModel], data: dict[str, Any], prefix: str) -> BaseModel:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param=f"{prefix}{param}" if param else None) from None


def validate_payload(task: Task, payload: dict[str, Any], model_id: str, prefix: str = "") -> None:
    """Reject at submit what would fail at run time for the client's fault: nothing bad is ever queued."""
    cls = PYDANTIC_TYPES.get(task)
    if cls is not None:
        req = _validated(cls, {**payload, "model": model_id}, prefix)
        if task == Task.CHAT and getattr(req, "stream", False):
            raise InvalidRequest("A job cannot stream; leave 'stream' out.", param=f"{prefix}stream")
        return
    if task == Task.IMAGE_TO_IMAGE:
        _needs_one(payload, ("image", "image_url"), prefix)
        if not isinstance(payload.get("prompt"), str) or not payload["prompt"].strip():
            raise InvalidRequest("'prompt' is required.", param=f"{prefix}prompt")
        _validate_image_edit(payload, prefix)
    else:
        _needs_one(payload, ("file", "audio_url"), prefix)
    for key in ("image_url", "audio_url"):
        if payload.get(key) is not None:
            if not isinstance(payload[key], str):
                raise InvalidRequest(f"'{key}' must be a URL string.", param=f"{prefix}{key}")
            if not payload[key].startswith("data:"):
                check_syntax(payload[key], f"{prefix}{key}")


def _number(payload: dict[str, Any], key: str, kind: type, low: float, high: float, prefix: str, *,
            strings: bool = True) -> None:
    """The sync edits route's bounds on a JSON field: a number of `kind` (or, where the runner converts it, its
    decimal string) in [low, high]."""
    value = payload.get(key)
    if value is None:
        return
    if strings and isinstance(value, str) and kind is int and value.isascii() and value.isdigit():
        value = int(value)
    elif strings and isinstance(value, str) and kind is float:
        try:
            value = float(value)
        except ValueError:
            pass
    ok_type = isinstance(value, int) if kind is int else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type:
        raise InvalidRequest(f"'{key}' must be {'an integer' if kind is int else 'a number'}.", param=f"{prefix}{key}")
    if not low <= value <= high:  # NaN fails this too
        raise InvalidRequest(f"'{key}' must be between {low} and {high}.", param=f"{prefix}{key}")


def _validate_image_edit(payload: dict[str, Any], prefix: str) -> None:
    """What build_request turns into an ImageEdit, checked as POST /v1/images/edits checks it, so the runner
    never meets a payload it cannot convert (those failed as internal errors, retried and dead-lettered)."""
    if len(payload["prompt"]) > 4000:
        raise InvalidRequest("'prompt' is longer than 4000 characters.", param=f"{prefix}prompt")
    _number(payload, "n", int, 1, 10, prefix)
    _number(payload, "strength", float, 0.05, 1.0, prefix)
    _number(payload, "seed", int, 0, 2**32 - 1, prefix, strings=False)  # these reach the backend unconverted
    _number(payload, "steps", int, 1, 100, prefix, strings=False)
    size = payload.get("size")
    if size is not None and size != "auto":
        if not isinstance(size, str):
            raise InvalidRequest("'size' must be 'auto' or look like 1024x768.", param=f"{prefix}size")
        try:
            parse_size(size)
        except ValueError as exc:
            raise InvalidRequest(str(exc), param=f"{prefix}size") from None
    mask = payload.get("mask")
    if mask is not None:
        if not isinstance(mask, str):
            raise InvalidRequest("'mask' must be a base64 image.", param=f"{prefix}mask")
        check_image(decode_base64_image(mask, f"{prefix}mask"), f"{prefix}mask")
    url = payload.get("image_url")
    if not (isinstance(url, str) and url and not url.startswith("data:")):  # inline: decoded now, as the runner will
        key = "image_url" if isinstance(url, str) and url else "image"
        check_image(decode_base64_image(payload[key], f"{prefix}{key}"), f"{prefix}{key}")


def _needs_one(payload: dict[str, Any], keys: tuple[str, str], prefix: str) -> None:
    if not any(isinstance(payload.get(k), str) and payload.get(k) for k in keys):
        raise InvalidRequest(f"Send '{keys[0]}' (base64) or '{keys[1]}'.", param=f"{prefix}{keys[0]}")


async def _input_bytes(payload: dict[str, Any], inline: str, url_key: str, *, allow_private: bool,
                       media: Any = None) -> bytes:
    url = payload.get(url_key)
    if isinstance(url, str) and url and not url.startswith("data:"):
        name = media.name_in(url) if media is not None else None
        if name is not None:  # media we made (a previous job's or agent node's output): read from our storage
            return await media.read(name, MAX_INPUT_BYTES)
        return await fetch_bytes(url, url_key, allow_private=allow_private, limit=MAX_INPUT_BYTES)
    return decode_base64_image(url or payload[inline], inline)


async def build_request(task: Task, payload: dict[str, Any], model_id: str, *, allow_private: bool,
                        media: Any = None) -> Any:
    """The sync route's request type for a job's payload; `media` (the media store) lets an input URL that names
    media we made be read from storage instead of fetched."""
    cls = PYDANTIC_TYPES.get(task)
    if task in (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO) and (payload.get("image_url") or payload.get("image")):
        data = await _input_bytes(payload, "image", "image_url", allow_private=allow_private, media=media)
        payload = {**{k: v for k, v in payload.items() if k != "image_url"}, "image": base64.b64encode(data).decode()}
    if cls is not None:
        data = {**payload, "model": model_id}
        if task == Task.TEXT_TO_IMAGE:
            data["response_format"] = "b64_json"  # we store the bytes ourselves
        if task == Task.CHAT:
            data["stream"] = False
        return _validated(cls, data, "")
    if task == Task.IMAGE_TO_IMAGE:
        raw = await _input_bytes(payload, "image", "image_url", allow_private=allow_private, media=media)
        mask = payload.get("mask")
        return ImageEdit(model=model_id, prompt=str(payload["prompt"]), image=check_image(raw, "image"),
                         mask=check_image(decode_base64_image(mask, "mask"), "mask") if isinstance(mask, str)
                         else None,  # decoded as validate_payload checked it: a data URL or strict base64
                         n=int(payload.get("n") or 1), size=str(payload.get("size") or "auto"), response_format="url",
                         seed=payload.get("seed"), strength=float(payload.get("strength") or 0.75),
                         steps=payload.get("steps"))
    raw = await _input_bytes(payload, "file", "audio_url", allow_private=allow_private, media=media)
    return AudioInput(model=model_id, data=raw, filename=str(payload.get("filename") or "audio"),
                      language=payload.get("language"), prompt=payload.get("prompt"),
                      response_format="verbose_json" if payload.get("timestamps") else "json")


def png_size(data: bytes) -> tuple[int | None, int | None]:
    if data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) >= 24:
        w, h = struct.unpack(">II", data[16:24])
        return w, h
    return None, None


async def store_result(task: Task, result: Any, media: Any) -> tuple[Any, Units]:
    """Media go to the media store; the job row keeps file names, which become signed URLs when read."""
    if isinstance(result, ImageResult):
        items = []
        for png in result.images:
            w, h = png_size(png)
            items.append({"file": (await media.save(png, "png", "img")).name, "content_type": "image/png",
                          "width": w, "height": h})
        return {"images": items, "revised_prompt": result.revised_prompt}, Units(images=len(items))
    if isinstance(result, VideoResult):
        return {"video": {"file": (await media.save(result.data, "mp4", "video")).name, "content_type": "video/mp4",
                          "duration_seconds": result.duration_seconds, "width": result.width,
                          "height": result.height, "fps": result.fps, "frames": result.frames}}, \
            Units(video_seconds=result.duration_seconds,
                  video_resolution=video_resolution(f"{result.width}x{result.height}"))
    if isinstance(result, AudioResult):
        ext = AUDIO_EXT.get(result.content_type, "bin")
        return {"audio": {"file": (await media.save(result.data, ext, "audio")).name, "content_type": result.content_type}}, \
            Units()
    if isinstance(result, BaseModel):
        result = result.model_dump(mode="json")
    elif hasattr(result, "__dataclass_fields__"):
        from dataclasses import asdict

        result = asdict(result)
    usage = result.get("usage") if isinstance(result, dict) else None
    units = Units(input_tokens=int((usage or {}).get("prompt_tokens") or 0),
                  output_tokens=int((usage or {}).get("completion_tokens") or 0))
    return result, units


def signed(result: Any, media: Any, base_url: str) -> Any:
    """A stored result with every {"file": name} turned into a fresh signed URL for whoever reads it now."""
    if isinstance(result, dict):
        out = {k: signed(v, media, base_url) for k, v in result.items() if k != "file"}
        if isinstance(result.get("file"), str):
            out["url"] = media.url(result["file"], base_url)
        return out
    if isinstance(result, list):
        return [signed(v, media, base_url) for v in result]
    return result


def job_request(body: dict[str, Any], catalog: Any) -> tuple[Any, Task, dict[str, Any]]:
    """`{model_id, task, payload}` as the job API and render take them: the model, its task, the payload (400s name
    the field: a missing one, an unknown model, a task the model does not serve)."""
    model_name = body.get("model_id")
    if not isinstance(model_name, str) or not model_name:
        raise InvalidRequest("'model_id' is required.", param="model_id")
    if not isinstance(body.get("task"), str):
        raise InvalidRequest("'task' is required.", param="task")
    task = parse_task(body["task"])
    payload = body.get("payload", {})
    if not isinstance(payload, dict):
        raise InvalidRequest("'payload' must be an object.", param="payload")
    model = catalog.get(model_name, param="model_id")
    if task not in model.tasks:
        raise InvalidRequest(f"Model '{model.id}' does not support {task.value}.", param="task",
                             code="unsupported_task")
    return model, task, payload
