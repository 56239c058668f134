"""`"async": true` on OpenAI-style generation routes: the request becomes a job and the answer a 202."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from ...catalog import Model
from ...errors import InvalidRequest, ModelyardError
from ...jobs.queue import Job
from ...pipeline.auth import Principal
from ...pipeline.regions import region_for
from ...types import Task
from ..render import app_context, base_url, json_response

OBJECT = {Task.CHAT: "chat.completion", Task.EMBEDDING: "embedding", Task.TEXT_TO_IMAGE: "image",
          Task.IMAGE_TO_IMAGE: "image", Task.TEXT_TO_VIDEO: "video", Task.IMAGE_TO_VIDEO: "video",
          Task.SPEECH: "audio.speech", Task.RERANK: "rerank", Task.SCORE: "score", Task.PII: "pii",
          Task.MODERATION: "moderation"}


def take_async(req: BaseModel) -> bool:
    """Pop the `async` flag so it never reaches an upstream (pass-through backends forward the raw body)."""
    extra = req.model_extra
    if not extra or "async" not in extra:
        return False
    flag = extra.pop("async")
    if "_raw" in getattr(req, "__private_attributes__", ()):
        req._raw = None  # type: ignore[attr-defined]
    if not isinstance(flag, bool):
        raise InvalidRequest("'async' must be true or false.", param="async")
    if flag and getattr(req, "stream", False):
        raise InvalidRequest("'async' cannot be combined with 'stream'.", param="stream")
    return flag


async def submit(request: Request, principal: Principal, model: Model, task: Task, req: BaseModel) -> Job:
    payload = req.model_dump(mode="json", exclude_unset=True)
    payload.pop("model", None)
    return await submit_payload(request, principal, model, task, payload)


async def submit_payload(request: Request, principal: Principal, model: Model, task: Task,
                         payload: dict[str, Any]) -> Job:
    ctx = app_context(request)
    return await ctx.jobs.submit(principal, model, task, payload, face="openai", base_url=base_url(request),
                                 client=request, region=region_for(request, ctx.settings.region_hosts))


def form_async(form: Any) -> bool:
    """The `async` field of a multipart upload (a string there): true/false, 1/0."""
    value = form.get("async")
    if value is None:
        return False
    if not isinstance(value, str) or value.strip().lower() not in ("true", "false", "1", "0"):
        raise InvalidRequest("'async' must be true or false.", param="async")
    return value.strip().lower() in ("true", "1")


def accepted(job: Job) -> Response:
    """202, pollable at /api/jobs/{id} and /fal/requests/{id}."""
    return json_response({"id": job.id, "object": f"{OBJECT.get(Task(job.task), job.task)}.async",
                          "status": job.status, "created": int(job.created_at)}, status=202)


def raise_job_error(job: Job) -> None:
    err: dict[str, Any] = job.error or {}
    exc = ModelyardError(err.get("message") or f"The job ended {job.status}.", param=err.get("param"),
                         code=err.get("code") or job.status, status=int(err.get("status") or 502))
    exc.type = err.get("type") or ("invalid_request_error" if exc.status < 500 else "api_error")
    raise exc
