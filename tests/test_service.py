"""Service routes: health, readiness, OpenAPI document, offline API reference."""

from __future__ import annotations

import httpx


def test_healthz_and_readyz(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_openapi_documents_chat_with_its_schema(server):
    doc = httpx.get(server.url + "/openapi.json").json()
    op = doc["paths"]["/v1/chat/completions"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/ChatRequest"
    chat = doc["components"]["schemas"]["ChatRequest"]
    assert {"model", "messages"} <= set(chat["required"])
    assert "/v1/models" in doc["paths"]


def test_reference_works_offline(server):
    page = httpx.get(server.url + "/reference")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    # every asset the page loads is served by us, none from a CDN
    assert "http://" not in page.text and "https://" not in page.text
    for asset in ("swagger-ui.css", "swagger-ui-bundle.js"):
        r = httpx.get(f"{server.url}/reference/assets/{asset}")
        assert r.status_code == 200 and len(r.content) > 10_000
    assert httpx.get(server.url + "/reference/assets/../../etc/passwd").status_code == 404
