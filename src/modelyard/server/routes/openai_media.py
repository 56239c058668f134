"""OpenAI routes beyond chat: embeddings, rerank, score, PII, moderations, audio, images, videos."""

from __future__ import annotations

import base64
import time
from typing import Any

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from ...backends.media_input import check_image
from ...catalog import Model
from ...errors import InvalidRequest, NotFound
from ...jobs.tasks import png_size
from ...library.items import Media as LibraryMedia
from ...pipeline import scopes as sc
from ...pipeline.auth import Principal
from ...pipeline.regions import region_for
from ...protocols.openai.transcripts import render as render_transcript
from ...types import Task
from ...context import AppContext
from ...protocols.openai.media import (AudioInput, EmbeddingRequest, ImageEdit, ImageRequest, ModerationRequest,
                                       PIIRequest, RerankRequest, ScoreRequest, SpeechRequest, VideoRequest,
                                       parse_size)
from ..body import parse_json
from ..forms import file_field, multipart_doc, number_field, read_form, text_field
from ..openapi import json_body
from ..render import app_context, base_url, json_response
from . import async_jobs

router = APIRouter(tags=["OpenAI"])
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


async def _authorized(request: Request) -> tuple[Any, Principal]:
    ctx = app_context(request)
    return ctx, await ctx.calls.authorize(request, sc.USER_WRITE, paid=True)


def _model_for(ctx: AppContext, name: str | None, task: Task) -> Model:
    if name:
        return ctx.router.resolve(name, task)
    model = ctx.catalog.first_for(task)
    if model is None:
        raise NotFound(f"No model here serves {task.value}; name one in 'model'.", param="model", code="model_not_found")
    return model


async def _async(request: Request, principal: Principal, name: str | None, task: Task, req: Any) -> Response | None:
    """`"async": true`: queue the request as a job and answer 202 (None: run it now, as usual)."""
    if not async_jobs.take_async(req):
        return None
    model = _model_for(app_context(request), name, task)
    return async_jobs.accepted(await async_jobs.submit(request, principal, model, task, req))


async def _run(request: Request, principal: Principal, name: str | None, task: Task, req: Any) -> Any:
    """One call of `task` through the call path; the route renders what it returns."""
    return (await _run_on(request, principal, name, task, req))[0]


async def _run_on(request: Request, principal: Principal, name: str | None, task: Task, req: Any) -> tuple[Any, Model]:
    """`_run`, and the model that served it (media results name it in the library)."""
    ctx = app_context(request)
    model = _model_for(ctx, name, task)
    region = region_for(request, ctx.settings.region_hosts)
    async with ctx.calls.start(principal, model, task, req, client=request) as call:
        result, _ = await call.run(ctx.router.run(model, task, req, region))
    return result, model


def _json_task(path: str, body: type, task: Task, summary: str) -> None:
    """Register a route that reads a JSON body of type `body`, runs `task`, and answers the backend's JSON."""

    async def handler(request: Request) -> Response:
        _, principal = await _authorized(request)
        req = await parse_json(request, body)
        queued = await _async(request, principal, req.model, task, req)
        if queued is not None:
            return queued
        return json_response(await _run(request, principal, req.model, task, req))

    handler.__name__ = task.value.replace("-", "_")
    router.add_api_route(path, handler, methods=["POST"], summary=summary, openapi_extra=json_body(body))


for _path, _body, _task, _summary in (
    ("/embeddings", EmbeddingRequest, Task.EMBEDDING, "Create embeddings"),
    ("/rerank", RerankRequest, Task.RERANK, "Rerank documents against a query"),
    ("/score", ScoreRequest, Task.SCORE, "Score text pairs"),
    ("/pii", PIIRequest, Task.PII, "Detect and redact personal data"),
    ("/moderations", ModerationRequest, Task.MODERATION, "Classify text for policy violations"),
):
    _json_task(_path, _body, _task, _summary)


@router.post("/audio/speech", summary="Text to speech", openapi_extra=json_body(SpeechRequest))
async def speech(request: Request) -> Response:
    _, principal = await _authorized(request)
    req = await parse_json(request, SpeechRequest)
    queued = await _async(request, principal, req.model, Task.SPEECH, req)
    if queued is not None:
        return queued
    result, model = await _run_on(request, principal, req.model, Task.SPEECH, req)
    # the bytes are answered inline: the library saves its copy in the background
    _keep(request, principal, model, Task.SPEECH, req.model_dump(), raw=[(result.data, result.content_type)])
    return Response(result.data, media_type=result.content_type)


_AUDIO_FIELDS = {"file": {"type": "string", "format": "binary"}, "model": {"type": "string"},
                 "language": {"type": "string"}, "prompt": {"type": "string"},
                 "response_format": {"type": "string", "enum": list(TRANSCRIPT_FORMATS)},
                 "temperature": {"type": "number"}}


async def _audio_input(request: Request, translation: bool) -> AudioInput:
    form = await read_form(request)
    data, filename = await file_field(form, "file", app_context(request).settings.max_upload_bytes)  # type: ignore[misc]
    grans = [g for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
             if isinstance(g, str)]
    for g in grans:
        if g not in ("word", "segment"):
            raise InvalidRequest("timestamp_granularities takes 'word' and/or 'segment'.", param="timestamp_granularities")
    response_format = text_field(form, "response_format", choices=TRANSCRIPT_FORMATS, default="json")
    if grans and response_format != "verbose_json":
        raise InvalidRequest("timestamp_granularities needs response_format 'verbose_json'.", param="timestamp_granularities")
    language = None if translation else text_field(form, "language")
    if language is not None and not (2 <= len(language) <= 3 and language.isalpha()):
        raise InvalidRequest("'language' is an ISO-639-1 code such as 'en'.", param="language")
    return AudioInput(model=text_field(form, "model", required=True), data=data, filename=filename,  # type: ignore[arg-type]
                      language=language, prompt=text_field(form, "prompt"), response_format=response_format,  # type: ignore[arg-type]
                      temperature=number_field(form, "temperature", float, default=0.0, low=0, high=1),
                      timestamp_granularities=grans or ["segment"])


async def _transcribe(request: Request, task: Task) -> Response:
    ctx, principal = await _authorized(request)
    req = await _audio_input(request, translation=task == Task.TRANSLATION)
    if async_jobs.form_async(await read_form(request)):  # the form is parsed once; this reads it again from cache
        payload = {"file": base64.b64encode(req.data).decode(), "filename": req.filename, "language": req.language,
                   "prompt": req.prompt, "timestamps": req.response_format == "verbose_json"}
        model = _model_for(ctx, req.model, task)
        return async_jobs.accepted(await async_jobs.submit_payload(
            request, principal, model, task, {k: v for k, v in payload.items() if v is not None}))
    result = await _run(request, principal, req.model, task, req)
    body, media_type = render_transcript(result, req.response_format)
    if isinstance(body, dict):
        return json_response(body)
    return Response(body, media_type=media_type)


@router.post("/audio/transcriptions", summary="Speech to text",
             openapi_extra=multipart_doc({**_AUDIO_FIELDS, "timestamp_granularities[]": {"type": "array", "items": {
                 "type": "string", "enum": ["word", "segment"]}}}, ["file", "model"]))
async def transcriptions(request: Request) -> Response:
    return await _transcribe(request, Task.TRANSCRIPTION)


@router.post("/audio/translations", summary="Speech to English text",
             openapi_extra=multipart_doc({k: v for k, v in _AUDIO_FIELDS.items() if k != "language"}, ["file", "model"]))
async def translations(request: Request) -> Response:
    return await _transcribe(request, Task.TRANSLATION)


def _keep(request: Request, principal: Principal, model: Model, task: Task, params: dict[str, Any], *,
          stored: list[LibraryMedia] | None = None, raw: list[tuple[bytes, str]] | None = None) -> None:
    """The result as a library item (queued, never awaited). A model host has no library: its gateway keeps it."""
    library = app_context(request).library
    if library is not None:
        library.capture(principal.org_id, model.id, task.value, params, route="openai", stored=stored, raw=raw)


async def _image_data(request: Request, principal: Principal, model: Model, task: Task, params: dict[str, Any],
                      images: list[bytes], response_format: str, revised: str | None) -> dict[str, Any]:
    """The images answer; the same images become one library item (saved ones by name, inline ones later)."""
    ctx = app_context(request)
    data, stored = [], []
    for png in images:
        item: dict[str, Any] = {"revised_prompt": revised}
        if response_format == "b64_json":
            item["b64_json"] = base64.b64encode(png).decode()
        else:
            saved = await ctx.media.save(png, "png", "img")
            w, h = png_size(png)
            stored.append(LibraryMedia(saved.name, saved.content_type, bytes=len(png), width=w, height=h))
            item["url"] = ctx.media.url(saved.name, base_url(request))
        data.append(item)
    _keep(request, principal, model, task, params, stored=stored,
          raw=None if stored else [(png, "image/png") for png in images])
    return {"created": int(time.time()), "data": data}


@router.post("/images/generations", summary="Create images", openapi_extra=json_body(ImageRequest))
async def image_generations(request: Request) -> Response:
    _, principal = await _authorized(request)
    req = await parse_json(request, ImageRequest)
    queued = await _async(request, principal, req.model, Task.TEXT_TO_IMAGE, req)
    if queued is not None:
        return queued
    result, model = await _run_on(request, principal, req.model, Task.TEXT_TO_IMAGE, req)
    return json_response(await _image_data(request, principal, model, Task.TEXT_TO_IMAGE, req.model_dump(),
                                           result.images, req.response_format, result.revised_prompt))


@router.post("/images/edits", summary="Edit an image (optionally within a mask)",
             openapi_extra=multipart_doc({"image": {"type": "string", "format": "binary"},
                                          "mask": {"type": "string", "format": "binary"}, "prompt": {"type": "string"},
                                          "model": {"type": "string"}, "n": {"type": "integer"},
                                          "size": {"type": "string"},
                                          "response_format": {"type": "string", "enum": ["url", "b64_json"]}},
                                         ["image", "prompt", "model"]))
async def image_edits(request: Request) -> Response:
    ctx, principal = await _authorized(request)
    form = await read_form(request)
    limit = ctx.settings.max_upload_bytes
    image_field = "image" if form.get("image") is not None else "image[]"
    image_bytes, _ = await file_field(form, image_field, limit)  # type: ignore[misc]
    mask = await file_field(form, "mask", limit, required=False)
    size = text_field(form, "size", default="auto")
    if size != "auto":
        try:
            parse_size(size)  # type: ignore[arg-type]
        except ValueError as exc:
            raise InvalidRequest(str(exc), param="size") from None
    prompt = text_field(form, "prompt", required=True)
    if len(prompt) > 4000:  # type: ignore[arg-type]
        raise InvalidRequest("'prompt' is longer than 4000 characters.", param="prompt")
    edit = ImageEdit(
        model=text_field(form, "model", required=True), prompt=prompt,  # type: ignore[arg-type]
        image=check_image(image_bytes, "image"), mask=check_image(mask[0], "mask") if mask else None,
        n=number_field(form, "n", int, default=1, low=1, high=10), size=size,  # type: ignore[arg-type]
        response_format=text_field(form, "response_format", choices=("url", "b64_json"), default="url"),  # type: ignore[arg-type]
        seed=number_field(form, "seed", int, default=None, low=0, high=2**32 - 1),
        strength=number_field(form, "strength", float, default=0.75, low=0.05, high=1.0))
    if async_jobs.form_async(form):
        payload = {"prompt": edit.prompt, "image": base64.b64encode(image_bytes).decode(), "n": edit.n,
                   "size": edit.size, "seed": edit.seed, "strength": edit.strength,
                   "mask": base64.b64encode(mask[0]).decode() if mask else None}
        model = _model_for(ctx, edit.model, Task.IMAGE_TO_IMAGE)
        return async_jobs.accepted(await async_jobs.submit_payload(
            request, principal, model, Task.IMAGE_TO_IMAGE, {k: v for k, v in payload.items() if v is not None}))
    result, model = await _run_on(request, principal, edit.model, Task.IMAGE_TO_IMAGE, edit)
    params = {"prompt": edit.prompt, "n": edit.n, "size": edit.size, "seed": edit.seed, "strength": edit.strength}
    return json_response(await _image_data(request, principal, model, Task.IMAGE_TO_IMAGE, params, result.images,
                                           edit.response_format, result.revised_prompt))


@router.post("/videos/generations", summary="Create a video (blocks until it is ready)",
             openapi_extra=json_body(VideoRequest))
async def video_generations(request: Request) -> Response:
    """The blocking video route, run as a job: waits up to `job_wait_seconds`, then answers 202 with the job."""
    ctx, principal = await _authorized(request)
    req = await parse_json(request, VideoRequest)
    task = Task.IMAGE_TO_VIDEO if req.image else Task.TEXT_TO_VIDEO
    wants_async = async_jobs.take_async(req)
    job = await async_jobs.submit(request, principal, _model_for(ctx, req.model, task), task, req)
    if not wants_async:
        job = await ctx.jobs.wait(job, ctx.settings.job_wait_seconds)
    if not job.final:
        return async_jobs.accepted(job)
    if job.status != "completed":
        async_jobs.raise_job_error(job)
    video = ctx.jobs.result(job, base_url(request))["video"]
    return json_response({"created": int(job.created_at), "id": job.id, "data": [{
        "url": video["url"], "content_type": video["content_type"], "duration_seconds": video["duration_seconds"],
        "width": video["width"], "height": video["height"], "fps": video["fps"], "frames": video["frames"]}]})
