"""The console's overview, usage explorer and request log in Chromium, after real calls with the openai SDK: the
calls appear in /logs with their model and status and open in a detail view, /usage groups them by model and by
key (the CSV has the rows, the URL keeps the view), the overview shows the request count and the balance, and a
member sees what their role may read."""

from __future__ import annotations

import csv
import io
import re
from typing import Any, Iterator

import httpx
import openai
import pytest
from playwright.sync_api import expect

from ..conftest import make_settings, running, upstream_models
from ..support.accounts import create_org, top_up
from .conftest import PASSWORD, Person, set_up_owner, shot

ADMIN_EMAIL = "ops-admin@example.com"
MEMBER_EMAIL = "ops-member@example.com"
PRICE_MICROS = 2000  # stub-priced: $0.002 a request
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, stub_server: Any) -> Iterator[Any]:
    """The console's server (as tests/console/conftest.py builds it) with one priced model more, so spend shows."""
    models = upstream_models(stub_server[0].url)
    priced = {**models[0], "id": "stub-priced", "aliases": [], "price": {"per_request": PRICE_MICROS / 1e6}}
    settings = make_settings(tmp_path_factory.mktemp("console-obs"), models=[*models, priced],
                             cooldown_failures=1_000_000, prompt_rewrite_model="stub-gpt")
    with running(settings) as srv:
        srv.owner = set_up_owner(srv)
        yield srv


def _join(srv: Any, org_id: str, role: str, email: str) -> None:
    invite = httpx.post(f"{srv.url}/api/organizations/{org_id}/invites", headers=srv.headers(), json={"role": role})
    assert invite.status_code == 201, invite.text
    r = httpx.post(srv.url + "/api/auth/accept-invite", timeout=60,
                   json={"token": invite.json()["token"], "email": email, "password": PASSWORD,
                         "username": email.split("@")[0]})
    assert r.status_code == 201, r.text


def _key(srv: Any, org_id: str, name: str) -> tuple[str, str]:
    r = httpx.post(f"{srv.url}/api/organizations/{org_id}/tokens", headers=srv.headers(),
                   json={"name": name, "scopes": ["user:read", "user:write"]})
    assert r.status_code == 201, r.text
    return r.json()["secret"], r.json()["token"]["id"]


@pytest.fixture(scope="module")
def scene(console: Any) -> dict[str, Any]:
    """An org with $10, an admin and a member, two keys, and six calls: 3 + 2 that succeed, 1 that fails."""
    org = create_org(console, "pro", name="Acme Labs")
    top_up(console, org["id"], 1000)
    _join(console, org["id"], "admin", ADMIN_EMAIL)
    _join(console, org["id"], "member", MEMBER_EMAIL)
    ci, ci_id = _key(console, org["id"], "ci-key")
    batch, batch_id = _key(console, org["id"], "batch-key")
    n = 0
    for secret, model, times in ((ci, "stub-gpt", 3), (batch, "stub-priced", 2)):
        client = openai.OpenAI(api_key=secret, base_url=console.v1, max_retries=0)
        for _ in range(times):
            n += 1
            out = client.chat.completions.create(model=model, messages=HI, extra_headers={"x-request-id": f"req-obs-{n}"})
            assert out.choices[0].message.content
    with pytest.raises(openai.APIError):
        openai.OpenAI(api_key=ci, base_url=console.v1, max_retries=0).chat.completions.create(
            model="stub-dead", messages=HI, extra_headers={"x-request-id": "req-obs-dead"})
    return {"org": org, "ci": ci, "ci_id": ci_id, "batch_id": batch_id}


def _api(console: Any, path: str, **params: Any) -> Any:
    r = httpx.get(console.url + path, headers=console.headers(), params=params, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def _rows(page: Any) -> Any:
    return page.locator("table.data tbody tr").filter(has=page.locator("a[href^='/logs/']"))


def test_the_calls_appear_in_the_log_filter_page_and_open(person: Person, console: Any, scene: dict[str, Any]) -> None:
    page = person.sign_in(ADMIN_EMAIL, then="/logs")
    rows = _rows(page)
    expect(rows).to_have_count(6)
    api = _api(console, f"/api/organizations/{scene['org']['id']}/request-log")["data"]
    assert [t.strip() for t in rows.locator("td:last-child").all_inner_texts()] == [r["request_id"] for r in api]
    dead = rows.filter(has_text="req-obs-dead")
    expect(dead).to_contain_text("stub-dead")
    expect(dead.locator(".badge")).to_have_text("failed")
    expect(dead).to_contain_text("ci-key")  # the key's name, not its id
    expect(rows.filter(has_text="req-obs-4")).to_contain_text("stub-priced")
    expect(rows.filter(has_text="req-obs-4")).to_contain_text("batch-key")
    expect(rows.filter(has_text="req-obs-4")).to_contain_text("$0.002")
    shot(page, "logs")

    # filters go to the API and into the URL; a reload shows the same view
    page.get_by_label("Status").select_option("failed")
    expect(rows).to_have_count(1)
    expect(page).to_have_url(re.compile(r"/logs\?status=failed$"))
    page.get_by_label("Status").select_option("")
    page.get_by_label("Model").select_option("stub-priced")
    expect(rows).to_have_count(2)
    page.reload()
    expect(page.get_by_label("Model")).to_have_value("stub-priced")
    expect(rows).to_have_count(2)
    expect(rows.filter(has_text="stub-gpt")).to_have_count(0)
    page.get_by_role("button", name="Clear filters").click()
    expect(rows).to_have_count(6)

    # paging with the API's cursor
    page.goto("/logs?limit=4")
    expect(rows).to_have_count(4)
    page.get_by_role("button", name="Load more").click()
    expect(rows).to_have_count(6)
    expect(page.get_by_role("button", name="Load more")).to_be_hidden()

    # a row opens its detail
    rows.filter(has_text="req-obs-dead").locator("td").first.click()
    expect(page).to_have_url(re.compile(r"/logs/req-obs-dead$"))
    expect(page.get_by_role("heading", name=re.compile("stub-dead"))).to_be_visible()
    expect(page.get_by_role("heading", name=re.compile("stub-dead")).locator(".badge")).to_contain_text("failed")
    expect(page.locator("dl.kv")).to_contain_text("ci-key")
    expect(page.get_by_text("request logging is off for this organization")).to_be_visible()
    shot(page, "log-detail")
    assert not person.errors, person.errors


def _table(page: Any) -> dict[str, list[str]]:
    """The usage table as {group: [cells]}."""
    out = {}
    for row in page.get_by_role("table", name="Usage by group").locator("tbody tr").all():
        cells = [c.strip() for c in row.locator("td").all_inner_texts()]
        if len(cells) > 1:
            out[cells[0]] = cells[1:]
    return out


def test_usage_groups_by_model_and_key_exports_csv_and_keeps_the_view_in_the_url(
        person: Person, console: Any, scene: dict[str, Any]) -> None:
    org_id = scene["org"]["id"]
    page = person.sign_in(ADMIN_EMAIL, then="/usage")
    table = page.get_by_role("table", name="Usage by group")
    page.get_by_label("Group by").select_option("model")
    expect(table.locator("tbody tr").filter(has_text="stub-dead")).to_have_count(1)
    by_model = _table(page)
    api = {r["model_id"]: r for r in _api(console, f"/api/organizations/{org_id}/usage/series",
                                          group_by="model")["data"]}
    assert {m: int(cells[0]) for m, cells in by_model.items()} == {m: r["requests"] for m, r in api.items()}
    assert {m: int(cells[0]) for m, cells in by_model.items()} == {"stub-gpt": 3, "stub-priced": 2, "stub-dead": 1}
    assert by_model["stub-dead"][1] == "1" and by_model["stub-priced"][5] == "$0.004"

    page.get_by_label("Metric").select_option("spend")
    page.get_by_label("Group by").select_option("key")
    expect(table.locator("tbody tr").filter(has_text="batch-key")).to_contain_text("$0.004")
    by_key = _table(page)
    assert by_key["ci-key"][0] == "4" and by_key["batch-key"][0] == "2"
    assert next(iter(by_key)) == "batch-key"  # sorted by the metric: spend
    expect(page).to_have_url(re.compile(r"metric=spend&group=key"))
    shot(page, "usage")

    with page.expect_download() as info:
        page.get_by_role("button", name="Download CSV").click()
    download = info.value
    assert re.fullmatch(r"usage-by-key-\d{4}-\d\d-\d\d-to-\d{4}-\d\d-\d\d\.csv", download.suggested_filename)
    with open(download.path(), encoding="utf-8") as fh:
        lines = list(csv.DictReader(io.StringIO(fh.read())))
    csv_rows = {r["key_name"]: r for r in lines}
    assert csv_rows["batch-key"]["key"] == scene["batch_id"] and csv_rows["batch-key"]["requests"] == "2"
    assert csv_rows["batch-key"]["price_micros"] == str(2 * PRICE_MICROS)
    assert csv_rows["ci-key"]["key"] == scene["ci_id"] and csv_rows["ci-key"]["failed"] == "1"

    # a filter narrows it, and the link reproduces the view
    page.get_by_label("Status").select_option("failed")
    expect(table.locator("tbody tr").filter(has_text="batch-key")).to_have_count(0)
    url = page.url
    assert "status=failed" in url
    page.reload()
    expect(page.get_by_label("Metric")).to_have_value("spend")
    expect(page.get_by_label("Group by")).to_have_value("key")
    expect(page.get_by_label("Status")).to_have_value("failed")
    expect(table.locator("tbody tr").filter(has_text="ci-key")).to_have_count(1)
    expect(table.locator("tbody tr").filter(has_text="batch-key")).to_have_count(0)
    assert page.url == url
    assert not person.errors, person.errors


def test_the_overview_shows_the_requests_and_the_balance(person: Person, console: Any, scene: dict[str, Any]) -> None:
    org_id = scene["org"]["id"]
    page = person.sign_in(ADMIN_EMAIL, then="/")
    series = _api(console, f"/api/organizations/{org_id}/usage/series")["totals"]
    balance = _api(console, f"/api/organizations/{org_id}")["balance_cents"]
    stat = lambda name: page.get_by_role("group", name=name, exact=True).locator(".value")
    expect(stat("Requests")).to_have_text(str(series["requests"]))
    expect(stat("Balance")).to_have_text(f"${balance / 100:.2f}")
    assert balance == 999  # $10 less $0.004, in whole cents rounded down
    expect(stat("Spend")).to_have_text("$0.004")
    expect(stat("Error rate")).not_to_have_text("…")
    expect(stat("p95 latency")).to_have_text(re.compile(r"\d+(\.\d)? m?s"))
    expect(stat("Days left")).to_have_text(re.compile(r"^[\d,]+$"))
    expect(page.locator(".chart canvas").first).to_be_visible()
    expect(page.get_by_role("list", name="Model status").get_by_role("listitem").filter(has_text="stub-gpt")).to_contain_text("online")
    shot(page, "overview")
    assert not person.errors, person.errors


def test_a_member_sees_the_wallet_and_models_and_why_not_usage(person: Person, console: Any, scene: dict[str, Any]) -> None:
    page = person.sign_in(MEMBER_EMAIL, then="/")
    expect(page.get_by_text("need an owner or admin role")).to_be_visible()
    balance = _api(console, f"/api/organizations/{scene['org']['id']}")["balance_cents"]
    expect(page.get_by_role("group", name="Balance").locator(".value")).to_have_text(f"${balance / 100:.2f}")
    expect(page.get_by_role("group", name="Requests")).to_have_count(0)
    expect(page.get_by_role("list", name="Model status")).to_contain_text("stub-gpt")
    shot(page, "overview-member")
    assert page.goto("/usage").status == 403
    assert not person.errors, person.errors


def test_a_kept_body_shows_in_the_detail(person: Person, console: Any, scene: dict[str, Any]) -> None:
    org_id = scene["org"]["id"]
    page = person.sign_in(ADMIN_EMAIL, then="/logs")
    person.api("PATCH", f"/api/organizations/{org_id}", {"request_logging": {"bodies": True}})
    client = openai.OpenAI(api_key=scene["ci"], base_url=console.v1, max_retries=0)
    client.chat.completions.create(model="stub-gpt", messages=[{"role": "user", "content": "keep this prompt"}],
                                   extra_headers={"x-request-id": "req-obs-body"})
    try:
        page.goto("/logs/req-obs-body")
        expect(page.get_by_label("Request body")).to_contain_text("keep this prompt")
        expect(page.get_by_label("Response body")).to_be_visible()
        expect(page.get_by_text("bodies kept")).to_be_visible()
        shot(page, "log-detail-body")
    finally:
        person.api("PATCH", f"/api/organizations/{org_id}", {"request_logging": {"bodies": False}})
    assert not person.errors, person.errors
