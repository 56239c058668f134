"""What a batch line's `url` means: the request type its body is read as, the task it runs, and its answer's body."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, ValidationError

from ..backends.via_chat import complete_via_chat
from ..catalog import Deployment, Model
from ..errors import InvalidRequest, ModelNotFound, NotFound
from ..pipeline.calls import estimate_units, result_units
from ..pipeline.units import Units
from ..protocols.openai.completions import CompletionRequest
from ..protocols.openai.media import (EmbeddingRequest, ImageRequest, ModerationRequest, RerankRequest, ScoreRequest,
                                      SpeechRequest)
from ..protocols.openai.responses import ResponsesRequest
from ..protocols.openai.schema import ChatRequest
from ..protocols.openai.wire import describe_validation_error
from ..responses import turn as ra
from ..types import Task

if TYPE_CHECKING:
    from ..context import AppContext


@dataclass(frozen=True)
class Endpoint:
    url: str
    task: Task
    schema: type[BaseModel]


ENDPOINTS: dict[str, Endpoint] = {e.url: e for e in (
    Endpoint("/v1/chat/completions", Task.CHAT, ChatRequest),
    Endpoint("/v1/completions", Task.COMPLETION, CompletionRequest),
    Endpoint("/v1/responses", Task.CHAT, ResponsesRequest),
    Endpoint("/v1/embeddings", Task.EMBEDDING, EmbeddingRequest),
    Endpoint("/v1/moderations", Task.MODERATION, ModerationRequest),
    Endpoint("/v1/images/generations", Task.TEXT_TO_IMAGE, ImageRequest),
    Endpoint("/v1/rerank", Task.RERANK, RerankRequest),
    Endpoint("/v1/score", Task.SCORE, ScoreRequest),
    Endpoint("/v1/audio/speech", Task.SPEECH, SpeechRequest),
)}


@dataclass
class Line:
    """A line ready to admit: its parsed request, the model and task it runs, and what the gate reads and prices."""

    endpoint: Endpoint
    req: Any
    model: Model
    task: Task
    admitted: Any  # what admission filters and estimates (a Responses turn's chat; else the request itself)
    turn: Any = None

    @property
    def estimate(self) -> Units:
        return estimate_units(self.task, self.admitted)


def model_name(body: dict[str, Any]) -> str | None:
    name = body.get("model")
    return name if isinstance(name, str) and name else None


def check_model(ctx: AppContext, endpoint: Endpoint, name: str | None, plan: str) -> None:
    """The model a line names exists here and the org's plan may call it (validation's rules)."""
    if name is None:
        if endpoint.task == Task.MODERATION and ctx.catalog.first_for(Task.MODERATION) is not None:
            return  # moderations may leave the model out, as the sync route allows
        raise InvalidRequest("'model' is required.", param="body.model", code="missing_required_parameter")
    model = ctx.catalog.find(name)
    if model is None:
        raise ModelNotFound(name, param="body.model")
    if not ctx.gate.plan_allows(plan, model.id):  # admission's own rule, checked here for the whole file at once
        raise InvalidRequest(f"The model '{model.id}' is not available on the '{plan}' plan.", param="body.model",
                             code="model_not_in_plan")


async def prepare(ctx: AppContext, endpoint: Endpoint, body: dict[str, Any], org_id: str) -> Line:
    """Read a line's body as its endpoint's request (a 400 naming `body.<field>` otherwise) and pick what runs it."""
    try:
        req = endpoint.schema.model_validate(body)
    except ValidationError as exc:
        message, param = describe_validation_error(exc)
        raise InvalidRequest(message, param=f"body.{param}" if param else "body") from None
    if "_raw" in getattr(req, "__private_attributes__", ()):
        # as parse_json keeps it for the sync route: the estimate reads its size, pass-through upstreams its JSON
        req._raw = orjson.dumps(body)  # type: ignore[attr-defined]
    extra = getattr(req, "model_extra", None) or {}
    if extra.get("async") is not None:
        raise InvalidRequest("A batch line runs in the batch; leave 'async' out.", param="body.async")
    if getattr(req, "stream", False):
        raise InvalidRequest("A batch line cannot stream; leave 'stream' out.", param="body.stream")
    task = endpoint.task
    name = getattr(req, "model", None)
    model = ctx.catalog.first_for(task) if name is None else ctx.catalog.get(name, param="body.model")
    if model is None:
        raise NotFound(f"No model here serves {task.value}; name one in 'model'.", param="body.model",
                       code="model_not_found")
    if task == Task.COMPLETION and not (Task.COMPLETION in model.tasks and ctx.router.serves(model, task)):
        # served as one-message chats (backends/via_chat.py), as the sync route does
        return Line(endpoint, req, ctx.router.resolve(model.id, Task.CHAT), Task.COMPLETION, req)
    model = ctx.router.resolve(model.id, task)
    if endpoint.url == "/v1/responses":
        turn = await ra.prepare(req, org_id, ctx.responses, ctx.search)  # type: ignore[arg-type]
        return Line(endpoint, req, model, task, turn.chat, turn)
    return Line(endpoint, req, model, task, req)


async def execute(ctx: AppContext, line: Line, region: str | None, base_url: str
                  ) -> tuple[Any, Units | None, Deployment]:
    """Run an admitted line on the router: (the endpoint's response body as JSON, what it consumed, who served)."""
    router, req, model = ctx.router, line.req, line.model
    url = line.endpoint.url
    if url == "/v1/responses":
        chat, deployment = await ra.answer(line.turn, model, region, router, ctx.search)
        chat = _json(chat)
        return ra.complete(line.turn, chat, deployment.model_id, ctx.responses), \
            result_units(Task.CHAT, line.admitted, chat, line.estimate), deployment
    if url == "/v1/completions" and not (Task.COMPLETION in model.tasks and router.serves(model, Task.COMPLETION)):
        served: list[Deployment] = []

        async def chat(c: ChatRequest) -> dict[str, Any]:
            resp, d = await router.chat(model, c, region)
            served.append(d)
            return _json(resp)

        body = await complete_via_chat(req, model.id, chat)
        return body, result_units(Task.COMPLETION, req, body, line.estimate), served[-1]
    result, deployment = await router.run(model, line.task, req, region)
    if url == "/v1/images/generations":
        return await _images(ctx, req, result, base_url), Units(images=len(result.images)), deployment
    if url == "/v1/audio/speech":
        return {"object": "audio.speech", "content_type": result.content_type,
                "data": base64.b64encode(result.data).decode()}, result_units(line.task, req, result, None), deployment
    body = _json(result)
    return body, result_units(line.task, req, result, line.estimate), deployment


def _json(result: Any) -> Any:
    """A backend's result as plain JSON (upstream bytes, pydantic models and dataclasses included)."""
    if isinstance(result, (bytes, bytearray)):
        return orjson.loads(result)
    if isinstance(result, BaseModel):
        return result.model_dump(mode="json")
    if hasattr(result, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(result)
    return result


async def _images(ctx: AppContext, req: ImageRequest, result: Any, base_url: str) -> dict[str, Any]:
    """`url` items are signed media links (valid `media_url_ttl`); `b64_json` keeps the bytes in the line."""
    data = []
    for png in result.images:
        item: dict[str, Any] = {"revised_prompt": result.revised_prompt}
        if req.response_format == "b64_json":
            item["b64_json"] = base64.b64encode(png).decode()
        else:
            item["url"] = ctx.media.url((await ctx.media.save(png, "png", "img")).name, base_url)
        data.append(item)
    return {"created": int(time.time()), "data": data}
