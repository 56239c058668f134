"""Service routes: health, readiness, OpenAPI document, offline API reference."""

from __future__ import annotations

import httpx


def test_healthz_and_readyz(server):
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(server.url + "/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["database"] == "ok"


def test_readyz_says_draining_once_a_drain_begins(tmp_path):
    from ...conftest import make_settings, running

    with running(make_settings(tmp_path)) as srv:
        with httpx.Client(base_url=srv.url) as client:  # a load balancer's kept-alive connection
            assert client.get("/readyz").status_code == 200
            srv.thread.loop.call_soon_threadsafe(srv.app.state.ctx.shutdown.begin)
            drained = client.get("/readyz")
            assert drained.status_code == 503
            assert drained.json()["status"] == "draining" and drained.json()["checks"]["shutdown"] == "draining"


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


def test_every_response_has_a_request_id(server, stub):
    r = httpx.get(server.url + "/healthz")
    assert r.headers["x-request-id"].startswith("req_")
    r = httpx.post(server.v1 + "/chat/completions", headers={**server.headers(), "X-Request-Id": "trace-42"},
                   json={"model": "stub-gpt", "messages": [{"role": "user", "content": "hi"}]})
    assert r.headers["x-request-id"] == "trace-42"
    r = httpx.post(server.v1 + "/chat/completions", headers=server.headers(), content=b"{")
    assert r.status_code == 400 and r.headers["x-request-id"].startswith("req_")


def test_cors_is_off_by_default_and_configurable(server, tmp_path):
    from ...conftest import make_settings, running

    pre = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization,content-type"}
    assert "access-control-allow-origin" not in httpx.options(server.v1 + "/chat/completions", headers=pre).headers
    with running(make_settings(tmp_path, cors_origins=["https://app.example"])) as srv:
        r = httpx.options(srv.v1 + "/chat/completions", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.get(srv.v1 + "/models", headers={**srv.headers(), "Origin": "https://app.example"})
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"]
