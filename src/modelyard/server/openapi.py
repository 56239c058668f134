"""The OpenAPI document: routes parse bodies themselves, so their schemas are registered here."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

DESCRIPTION = """\
Modelyard serves the OpenAI API (also under `/openai/v1` and `/api/v1`) over local models and upstream providers.

Authenticate with `Authorization: Bearer <key>` (also accepted: `x-api-key`, `x-goog-api-key`, `?key=`).
Errors use OpenAI's envelope: `{"error": {"message", "type", "param", "code"}}`.
"""

_BODIES: dict[str, type[BaseModel]] = {}


def json_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its JSON body itself."""
    _BODIES[model.__name__] = model
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}}


def install(app: FastAPI) -> None:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
        _, defs = models_json_schema([(m, "validation") for m in _BODIES.values()],
                                     ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(defs.get("$defs", {}))
        bearer = {"bearerAuth": {"type": "http", "scheme": "bearer"}}
        schema["components"].setdefault("securitySchemes", {}).update(bearer)
        schema["security"] = [{"bearerAuth": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = build  # type: ignore[method-assign]
