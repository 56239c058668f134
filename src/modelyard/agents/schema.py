"""The JSON Schema of an agent document (served at GET /api/agents/schema; docs/agents.md explains it)."""

from __future__ import annotations

from typing import Any

from .dag import DEFAULT_MAX_CONCURRENCY, MAX_ATTEMPTS_CAP, MAX_COORD, MAX_TIMEOUT

_TEMPLATE_NOTE = ("Strings may hold templates: ${input.<name>}, ${nodes.<id>.result.<path>}, and in a map's payload "
                  "or a $each template ${item.<path>}. A string that is exactly one template keeps the value's JSON "
                  "type; $${ writes a literal ${. {\"$each\": \"${…}\", \"template\": …} inside a list expands once "
                  "per element.")
_PAYLOAD = {"type": "object", "description": "The task's request, as its sync route takes it (without 'model'). "
            + _TEMPLATE_NOTE}
_RETRY = {"type": "object", "additionalProperties": False, "properties": {
    "max_attempts": {"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS_CAP, "default": 3},
    "backoff_seconds": {"type": "number", "minimum": 0, "maximum": 3600,
                        "description": "The first retry's delay; each further one doubles it."}}}
_STEP_PROPS: dict[str, Any] = {
    "model_id": {"type": "string", "description": "A model id or alias from GET /v1/models."},
    "task": {"type": "string", "examples": ["text-to-image", "fal/text-to-image", "openai/chat-completion", "chat"]},
    "inputs": _PAYLOAD,
    "payload": _PAYLOAD,
    "outputs": {"type": "array", "items": {"type": "string"}, "examples": [["images[0].url"]],
                "description": "Paths into the result the node shows (as {path: value}); references read the whole "
                               "result."},
    "retry": _RETRY,
    "timeout_seconds": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_TIMEOUT},
    "cache": {"type": "boolean", "default": False,
              "description": "Reuse the output of an earlier node of your organization with the same model, task "
                             "and resolved payload."},
}
TASK_NODE = {"type": "object", "required": ["model_id", "task"], "additionalProperties": False,
             "properties": {"type": {"const": "task"}, "description": {"type": "string"}, **_STEP_PROPS},
             "not": {"required": ["inputs", "payload"]}}
MAP_NODE = {"type": "object", "required": ["type", "items", "node"], "additionalProperties": False, "properties": {
    "type": {"const": "map"},
    "description": {"type": "string"},
    "items": {"type": "string", "pattern": r"^\$\{[^}]+\}$", "examples": ["${input.prompts}"],
              "description": "One template resolving to an array; each element runs the inner node once."},
    "node": {"type": "object", "required": ["model_id", "task"], "additionalProperties": False,
             "properties": _STEP_PROPS, "not": {"required": ["inputs", "payload"]}},
    "max_concurrency": {"type": "integer", "minimum": 1, "default": DEFAULT_MAX_CONCURRENCY},
    "tolerance": {"type": "number", "minimum": 0, "maximum": 1, "default": 0,
                  "description": "The fraction of items allowed to fail; the node fails as soon as more have."},
    "outputs": _STEP_PROPS["outputs"],
}}
_NODE_ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{1,64}$"}
DAG = {"type": "object", "required": ["nodes"], "properties": {
    "nodes": {"oneOf": [
        {"type": "object", "propertyNames": _NODE_ID, "minProperties": 1,
         "additionalProperties": {"oneOf": [TASK_NODE, MAP_NODE]}},
        {"type": "array", "minItems": 1, "items": {"allOf": [{"type": "object", "required": ["id"],
                                                              "properties": {"id": _NODE_ID}}]}}]},
    "edges": {"type": "array", "description": "Order between nodes that share no data (references imply edges).",
              "items": {"oneOf": [{"type": "array", "prefixItems": [_NODE_ID, _NODE_ID], "minItems": 2,
                                   "maxItems": 2},
                                  {"type": "object", "required": ["from", "to"], "additionalProperties": False,
                                   "properties": {"from": _NODE_ID, "to": _NODE_ID}}]}},
    "layout": {"type": "object", "propertyNames": _NODE_ID,
               "description": "Where an editor drew each node (the console's workflow editor keeps it); runs never "
                              "read it.",
               "additionalProperties": {"type": "object", "required": ["x", "y"], "additionalProperties": False,
                                        "properties": {"x": {"type": "number", "minimum": -MAX_COORD,
                                                             "maximum": MAX_COORD},
                                                       "y": {"type": "number", "minimum": -MAX_COORD,
                                                             "maximum": MAX_COORD}}}},
}}
DOCUMENT_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://modelyard.dev/schemas/agent.json",
    "title": "Agent",
    "type": "object",
    "required": ["name", "dag"],
    "properties": {"name": {"type": "string", "minLength": 1, "maxLength": 200},
                   "description": {"type": "string", "maxLength": 2000}, "dag": DAG},
}
