"""A request schema's parameters as the catalog lists them, read from the pydantic model the route validates with."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

# JSON Schema keyword -> the name the catalog gives it. Only what the schema declares is listed: a bound written in
# a validator's code and not in the schema is not, so the routes' schemas declare what they check (Field(ge=...)).
_BOUNDS = {"minimum": "minimum", "maximum": "maximum", "exclusiveMinimum": "exclusive_minimum",
           "exclusiveMaximum": "exclusive_maximum", "minLength": "min_length", "maxLength": "max_length",
           "minItems": "min_items", "maxItems": "max_items", "pattern": "pattern", "format": "format"}
_MAX_DEPTH = 2  # nested objects are described this deep (a chat message's fields); deeper ones are just "object"


def parameters(schema: type[BaseModel], *, skip: tuple[str, ...] = ("model",)) -> list[dict[str, Any]]:
    """Every field a request of `schema` takes, in declaration order: name, JSON type, allowed values or range,
    default, required. `skip`: fields the route fills itself (the model is the catalog entry's own)."""
    doc = schema.model_json_schema(mode="validation")
    return _fields(doc, doc.get("$defs", {}), skip, 0)


def takes_extra(schema: type[BaseModel]) -> bool:
    """Whether fields the schema does not name are accepted (and passed on to upstream providers)."""
    return schema.model_config.get("extra") == "allow"


def _fields(doc: dict[str, Any], defs: dict[str, Any], skip: tuple[str, ...], depth: int) -> list[dict[str, Any]]:
    required = set(doc.get("required", ()))
    out = []
    for name, prop in doc.get("properties", {}).items():
        if name in skip:
            continue
        entry: dict[str, Any] = {"name": name, **_describe(prop, defs, depth), "required": name in required}
        if not entry["required"]:
            entry["default"] = prop.get("default")
        out.append(entry)
    return out


def _describe(prop: dict[str, Any], defs: dict[str, Any], depth: int) -> dict[str, Any]:
    """One property: its branches (a union's members) merged into types, values, bounds and nested fields."""
    types: list[str] = []
    items: list[dict[str, Any]] = []  # an array branch's items (a union may hold arrays of different things)
    info: dict[str, Any] = {}
    nullable = False
    for branch in _branches(prop, defs):
        kind = branch.get("type")
        if kind is None and "const" in branch:
            kind = _json_type(branch["const"])
        if kind is None and "enum" in branch:
            kind = _json_type(branch["enum"][0]) if branch["enum"] else None
        if kind == "null":
            nullable = True
            continue
        if kind is None:
            kind = "object" if "properties" in branch else "any"
        if kind not in types:
            types.append(kind)
        values = branch.get("enum", [branch["const"]] if "const" in branch else None)
        if values is not None:
            info.setdefault("enum", []).extend(v for v in values if v not in info.get("enum", ()))
        info.update({ours: branch[theirs] for theirs, ours in _BOUNDS.items() if theirs in branch})
        if "description" in branch and "description" not in info:
            info["description"] = branch["description"]
        info.update({key[2:]: value for key, value in branch.items() if key.startswith("x-")})
        if kind == "object" and "properties" in branch and depth < _MAX_DEPTH:
            info["fields"] = _fields(branch, defs, (), depth + 1)
        if kind == "array" and isinstance(branch.get("items"), dict):
            item = _describe(branch["items"], defs, depth)
            if item not in items:
                items.append(item)
    if items:
        info["items"] = items[0] if len(items) == 1 else {"any_of": items}
    described: dict[str, Any] = {"type": types[0] if len(types) == 1 else types}
    if nullable:
        described["nullable"] = True
    if "description" in prop:
        info["description"] = prop["description"]
    return {**described, **info}


def _branches(prop: dict[str, Any], defs: dict[str, Any]) -> list[dict[str, Any]]:
    """A property's alternatives, with `$ref`s to shared definitions resolved."""
    found = []
    for branch in prop.get("anyOf") or prop.get("oneOf") or [prop]:
        ref = branch.get("$ref")
        if isinstance(ref, str):
            branch = {**defs.get(ref.rsplit("/", 1)[-1], {}), **{k: v for k, v in branch.items() if k != "$ref"}}
        found.extend(_branches(branch, defs) if ("anyOf" in branch or "oneOf" in branch) and branch is not prop
                     else [branch])
    return found


def _json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    return "array" if isinstance(value, list) else "object"
