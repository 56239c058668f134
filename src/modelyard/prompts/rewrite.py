"""Prompt rewrite: a short prompt enhanced for a task by a text model, billed as the chat call it is."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from ..catalog.builtin import SMOLLM2_ID
from ..errors import InvalidRequest
from ..jobs.tasks import task_named
from ..pipeline.auth import Principal
from ..pipeline.calls import Client
from ..protocols.openai.schema import ChatRequest
from ..types import Task

if TYPE_CHECKING:
    from ..context import AppContext

DEFAULT_TASK = Task.TEXT_TO_IMAGE
# What small models put around the text they were asked for: a label line ("Prompt:", "Enhanced prompt:"), list
# markers, quotes. Removed, never added to: the prompts returned are the model's own words.
_LABEL = re.compile(r"^\s*(?:\*\*)?(?:[A-Za-z]+\s+){0,4}(?:prompt|instruction|request|version)(?:\*\*)?\s*:(?:\*\*)?\s*",
                    re.IGNORECASE)
_MARKER = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s+")
_QUOTES = "\"'\u201c\u201d\u2018\u2019`"


class RewriteRequest(BaseModel):
    """POST /api/prompt-rewrite."""

    model_config = ConfigDict(extra="forbid")

    prompt: str
    task: str | None = Field(default=None, description="the task the prompt is for (default text-to-image); aliases "
                                                       "such as fal/text-to-image accepted")
    style: str | None = Field(default=None, max_length=200, description="a style to steer toward, e.g. 'watercolor'")
    model_id: str | None = Field(default=None, description="the chat model that rewrites (default: the configured one)")
    n: int = Field(default=1, ge=1, le=4, description="how many alternatives to ask for")


def rewrite_chat(settings: Any, req: RewriteRequest) -> tuple[Task, ChatRequest]:
    """The task the prompt is for and the chat call that rewrites it. Raises for an empty or over-long prompt and
    for a task no instructions are configured for."""
    text = req.prompt.strip()
    if not text:
        raise InvalidRequest("'prompt' is empty; send the prompt to rewrite.", param="prompt")
    if len(req.prompt) > settings.prompt_rewrite_max_chars:
        raise InvalidRequest(f"'prompt' is longer than {settings.prompt_rewrite_max_chars} characters.",
                             param="prompt")
    task = task_named(req.task, "task") if req.task else DEFAULT_TASK
    instructions = settings.prompt_rewrite_instructions.get(task.value)
    if instructions is None:
        offered = ", ".join(sorted(settings.prompt_rewrite_instructions))
        raise InvalidRequest(f"Prompts for '{task.value}' cannot be rewritten here (offered: {offered}).",
                             param="task", code="unsupported_task")
    if req.style and req.style.strip():
        text = f"{text}\n\nStyle: {req.style.strip()}"
    chat = ChatRequest(model=req.model_id or settings.prompt_rewrite_model or SMOLLM2_ID,
                       messages=[{"role": "system", "content": instructions}, {"role": "user", "content": text}],
                       n=req.n, temperature=settings.prompt_rewrite_temperature,
                       max_tokens=settings.prompt_rewrite_max_tokens)
    return task, chat


def prompts_from(response: dict[str, Any]) -> list[str]:
    """One prompt per choice, cleaned of labels, list markers and quotes; empty answers and repeats dropped. A model
    that gave fewer usable answers than asked for yields fewer prompts (the route does not ask again)."""
    found: list[str] = []
    for choice in response.get("choices") or ():
        content = (choice.get("message") or {}).get("content")
        if not isinstance(content, str):
            continue
        lines = [_MARKER.sub("", line).strip() for line in content.strip().splitlines()]
        if lines and _LABEL.match(lines[0]):
            lines[0] = _LABEL.sub("", lines[0], count=1)
        text = " ".join(line for line in lines if line).strip().strip(_QUOTES).strip()
        if text and text not in found:
            found.append(text)
    return found


async def rewrite(ctx: AppContext, principal: Principal, req: RewriteRequest, *, client: Client | None = None,
                  region: str | None = None) -> dict[str, Any]:
    """Rewrite `req.prompt` through the call path: plan, limits, the content filter (on the prompt, named `prompt`
    in a refusal), the wallet, and a usage row, as any chat call on the model used."""
    task, chat = rewrite_chat(ctx.settings, req)
    model = ctx.router.resolve(chat.model, Task.CHAT, param="model_id")
    async with ctx.calls.start(principal, model, Task.CHAT, chat, client=client, field="prompt") as call:
        response, _ = await call.run(ctx.router.chat(model, chat, region))
    return {"object": "prompt_rewrite", "original": req.prompt, "task": task.value, "prompts": prompts_from(response),
            "model": model.id, "usage": response.get("usage")}
