"""The OpenAI Responses request (POST /v1/responses): input items and tools, validated at the edge."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, model_validator

from .schema import Open

_NAME = re.compile(r"[A-Za-z0-9_.\-]{1,64}")
WEB_SEARCH_TYPES = frozenset({"web_search", "web_search_preview", "web_search_2025_08_26",
                              "web_search_preview_2025_03_11"})
ToolType = Literal["function", "web_search", "web_search_preview", "web_search_2025_08_26",
                   "web_search_preview_2025_03_11"]


class ResponseTool(Open):
    """A client `function` tool (flat, as OpenAI sends it, or nested under `function` as Chat does) or the hosted
    `web_search` tool. Other hosted tools (file_search, code_interpreter, ...) are refused by the type check."""

    type: ToolType
    name: str | None = Field(default=None, min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.\-]+$")
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None
    function: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _function_needs_name(self) -> ResponseTool:
        if self.type == "function":
            if self.name is None and self.function is not None:
                # Chat's nested shape, which the API reference shows: lift it to the flat Responses shape
                self.name = self.function.get("name")
                self.description = self.description or self.function.get("description")
                self.parameters = self.parameters or self.function.get("parameters")
                self.strict = self.strict if self.strict is not None else self.function.get("strict")
            if not isinstance(self.name, str) or not self.name:
                raise ValueError("a 'function' tool needs 'name'")
            if not _NAME.fullmatch(self.name):
                raise ValueError("a function name is 1-64 letters, digits, '_', '.' or '-'")
        return self

    @property
    def hosted(self) -> bool:
        return self.type in WEB_SEARCH_TYPES


class InputPart(Open):
    type: Literal["input_text", "output_text", "text", "input_image", "refusal", "input_file"]
    text: str | None = None
    image_url: str | None = None
    refusal: str | None = None

    @model_validator(mode="after")
    def _needs_payload(self) -> InputPart:
        if self.type in ("input_text", "output_text", "text") and self.text is None:
            raise ValueError(f"an '{self.type}' part needs 'text'")
        if self.type == "input_image" and not self.image_url:
            raise ValueError("an 'input_image' part needs 'image_url'")
        return self


class InputItem(Open):
    """One input item: a message (`type` optional, as EasyInputMessage allows), a function call the model made,
    a function call's output, or a previous turn's web search call (context only)."""

    type: Literal["message", "function_call", "function_call_output", "web_search_call", "item_reference"] = "message"
    id: str | None = None
    role: Literal["user", "assistant", "system", "developer"] | None = None
    content: str | list[InputPart] | None = None
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | list[InputPart] | None = None
    status: str | None = None

    @model_validator(mode="after")
    def _fields_for_type(self) -> InputItem:
        if self.type == "message":
            if self.role is None:
                raise ValueError("a message item needs 'role'")
            if self.content is None:
                raise ValueError("a message item needs 'content'")
        elif self.type == "function_call":
            missing = [f for f in ("call_id", "name", "arguments") if getattr(self, f) is None]
            if missing:
                raise ValueError(f"a function_call item needs {', '.join(repr(m) for m in missing)}")
        elif self.type == "function_call_output":
            if not self.call_id:
                raise ValueError("a function_call_output item needs 'call_id'")
            if self.output is None:
                raise ValueError("a function_call_output item needs 'output'")
        elif self.type == "item_reference":
            raise ValueError("'item_reference' items are not supported; send the item itself or use "
                             "'previous_response_id'")
        return self

    def text(self) -> str:
        value = self.content if self.type == "message" else self.output
        if value is None:
            return ""
        if isinstance(value, str):
            return value
        return "".join(p.text or p.refusal or "" for p in value)


class TextFormat(Open):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    @model_validator(mode="after")
    def _schema_needed(self) -> TextFormat:
        if self.type == "json_schema" and not isinstance(self.schema_, dict):
            raise ValueError("a 'json_schema' format needs 'schema'")
        return self


class TextConfig(Open):
    format: TextFormat | None = None


class ResponsesRequest(Open):
    """POST /v1/responses. `async` (the API reference's extension) is refused with hosted tools, as that reference says."""

    model: str = Field(min_length=1)
    input: str | list[InputItem] | None = None
    instructions: str | None = None
    tools: list[ResponseTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_output_tokens: int | None = Field(default=None, ge=1)
    text: TextConfig | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = Field(default=None, min_length=1)
    metadata: dict[str, str] | None = Field(default=None, max_length=16)
    user: str | None = None
    truncation: Literal["auto", "disabled"] | None = None
    background: bool | None = None
    async_: bool = Field(default=False, alias="async")

    @property
    def function_tools(self) -> list[ResponseTool]:
        return [t for t in self.tools or [] if t.type == "function"]

    @property
    def hosted_tools(self) -> list[ResponseTool]:
        return [t for t in self.tools or [] if t.hosted]

    @property
    def input_items(self) -> list[InputItem]:
        if self.input is None:
            return []
        if isinstance(self.input, str):
            return [InputItem(type="message", role="user", content=self.input)]
        return list(self.input)
