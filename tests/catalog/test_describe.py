"""The catalog's parameter lists are read from the request schemas: every bound they state is the one validation
enforces, so a client that stays inside them is accepted and one that steps outside is refused on that field."""

from __future__ import annotations

from typing import Any, Literal

import pytest
from pydantic import BaseModel, Field, ValidationError

from modelyard.catalog.describe import parameters, takes_extra
from modelyard.listing.entries import REQUEST_TYPES
from modelyard.protocols.openai.media import ImageRequest, parse_size
from modelyard.protocols.openai.schema import ChatRequest, Open
from modelyard.types import Task


class Inner(BaseModel):
    kind: Literal["a", "b"]
    weight: float = Field(default=1.0, gt=0, lt=10)


class Sample(Open):
    model: str
    name: str = Field(min_length=2, max_length=8)
    count: int | None = Field(default=None, ge=1, le=5)
    mode: Literal["fast", "slow"] = "fast"
    words: str | list[str] = "x"
    inner: Inner | None = None
    items: list[Inner] = Field(default_factory=list, max_length=3)


def _by_name(schema: type[BaseModel]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p for p in parameters(schema)}


def test_types_values_ranges_defaults_and_required_come_from_the_schema() -> None:
    got = _by_name(Sample)
    assert "model" not in got  # the catalog entry is the model
    assert got["name"] == {"name": "name", "type": "string", "min_length": 2, "max_length": 8, "required": True}
    assert got["count"] == {"name": "count", "type": "integer", "nullable": True, "minimum": 1, "maximum": 5,
                            "required": False, "default": None}
    assert got["mode"] == {"name": "mode", "type": "string", "enum": ["fast", "slow"], "required": False,
                           "default": "fast"}
    assert got["words"]["type"] == ["string", "array"] and got["words"]["items"] == {"type": "string"}
    inner = {f["name"]: f for f in got["inner"]["fields"]}
    assert got["inner"]["type"] == "object" and got["inner"]["nullable"] is True
    assert inner["kind"]["enum"] == ["a", "b"] and inner["kind"]["required"] is True
    assert inner["weight"]["exclusive_minimum"] == 0 and inner["weight"]["exclusive_maximum"] == 10
    assert got["items"]["max_items"] == 3 and got["items"]["items"]["type"] == "object"
    assert takes_extra(Sample) and not takes_extra(Inner)


@pytest.mark.parametrize("schema", [ChatRequest, ImageRequest])
def test_every_listed_bound_is_enforced_on_its_field(schema: type[BaseModel]) -> None:
    """For each numeric bound the catalog lists, the value on the bound passes and one past it fails naming the
    field: the list cannot promise what validation refuses, nor leave out what it refuses."""
    base = ({"model": "m", "messages": [{"role": "user", "content": "hi"}]} if schema is ChatRequest
            else {"model": "m", "prompt": "a fox"})
    checked = 0
    for p in parameters(schema):
        for bound, step in (("maximum", 1), ("minimum", -1)):
            if bound not in p:
                continue
            schema.model_validate({**base, p["name"]: p[bound]})
            with pytest.raises(ValidationError) as refused:
                schema.model_validate({**base, p["name"]: p[bound] + step})
            assert refused.value.errors()[0]["loc"][0] == p["name"]
            checked += 1
        for value in p.get("enum", ()):
            if p["type"] == "string":
                schema.model_validate({**base, p["name"]: value})
    assert checked >= 4


def test_image_size_rule_is_the_one_parse_size_applies() -> None:
    size = _by_name(ImageRequest)["size"]
    sides = size["sides"]
    parse_size(f"{sides['max']}x{sides['min']}")
    for bad in (f"{sides['max'] + sides['multiple_of']}x{sides['min']}", f"{sides['min'] + 1}x{sides['min']}"):
        with pytest.raises(ValueError):
            parse_size(bad)
    assert size["default"] == "auto"


def test_every_json_task_has_a_parameter_list() -> None:
    for task, schema in REQUEST_TYPES.items():
        listed = parameters(schema)
        assert listed and all({"name", "type", "required"} <= set(p) for p in listed), task
    assert {Task.CHAT, Task.COMPLETION, Task.TEXT_TO_IMAGE, Task.TEXT_TO_VIDEO} <= set(REQUEST_TYPES)
