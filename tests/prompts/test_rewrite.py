"""Prompt rewrite's two pure parts: the chat call it makes of a request, and the prompts it reads from the answer."""

from __future__ import annotations

from typing import Any

import pytest

from modelyard.catalog.builtin import SMOLLM2_ID
from modelyard.config import PROMPT_REWRITE_INSTRUCTIONS, Settings
from modelyard.errors import InvalidRequest
from modelyard.prompts.rewrite import RewriteRequest, prompts_from, rewrite_chat
from modelyard.types import Task


def _answer(*contents: Any) -> dict[str, Any]:
    return {"choices": [{"index": i, "message": {"role": "assistant", "content": c}} for i, c in enumerate(contents)]}


def test_the_chat_call_carries_the_tasks_instructions_the_prompt_and_n() -> None:
    task, chat = rewrite_chat(Settings(), RewriteRequest(prompt="a fox", task="fal/text-to-video", n=3,
                                                         style="film noir"))
    assert task is Task.TEXT_TO_VIDEO and chat.model == SMOLLM2_ID and chat.n == 3
    assert chat.messages[0].role == "system" and chat.messages[0].text() == PROMPT_REWRITE_INSTRUCTIONS["text-to-video"]
    assert "camera motion" in chat.messages[0].text()
    assert chat.messages[1].text() == "a fox\n\nStyle: film noir"


def test_instructions_and_model_are_configuration() -> None:
    settings = Settings(prompt_rewrite_model="other-model", prompt_rewrite_instructions={
        "text-to-image": "Only say: subject, composition, lighting.", "chat": ""})
    task, chat = rewrite_chat(settings, RewriteRequest(prompt="a fox"))
    assert task is Task.TEXT_TO_IMAGE and chat.model == "other-model"
    assert chat.messages[0].text() == "Only say: subject, composition, lighting."
    assert rewrite_chat(settings, RewriteRequest(prompt="a fox", model_id="mine"))[1].model == "mine"
    with pytest.raises(InvalidRequest) as off:  # an empty instruction turns a task off
        rewrite_chat(settings, RewriteRequest(prompt="a fox", task="chat"))
    assert off.value.param == "task"


@pytest.mark.parametrize("prompt", ["", "  \n\t", "x" * 21])
def test_empty_and_over_long_prompts_are_refused_naming_prompt(prompt: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        rewrite_chat(Settings(prompt_rewrite_max_chars=20), RewriteRequest(prompt=prompt))
    assert refused.value.param == "prompt"


def test_prompts_are_the_models_words_cleaned_of_labels_markers_and_quotes() -> None:
    got = prompts_from(_answer('Enhanced prompt: "A red fox in fresh snow, low sun."',
                               "1. A fox\n   at dawn, backlit",
                               "**Prompt:** A fox, wide shot", "Here is the rewritten prompt: A fox, close up",
                               "The fox prompt is: not a label, kept whole"))
    assert got == ["A red fox in fresh snow, low sun.", "A fox at dawn, backlit", "A fox, wide shot", "A fox, close up",
                   "The fox prompt is: not a label, kept whole"]


def test_fewer_usable_answers_give_fewer_prompts_never_made_up_ones() -> None:
    assert prompts_from(_answer("A fox.", "  ", None, "A fox.", '""')) == ["A fox."]
    assert prompts_from({"choices": []}) == [] and prompts_from({}) == []
