"""The console's pages: where each lives, what it needs, and the Jinja2 environment that renders them."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from .. import __version__
from ..pipeline import scopes as sc

PACKAGE = resources.files(__package__)
STATIC_PREFIX = "/console/static"

USER = "user"  # any signed-in person (member and up)
ADMIN = "admin"  # an org's owners and admins (admin:read)
OPERATOR = "operator"  # the operator: an admin of the default organization


@dataclass(frozen=True)
class Page:
    path: str  # a Starlette path, e.g. "/jobs/{job_id}"
    name: str  # the template (templates/pages/<name>.html) and the script (static/pages/<name>.js), if any
    title: str
    needs: str = USER
    nav: str | None = None  # the label in the navigation; None for detail pages
    section: str | None = None  # the navigation entry a detail page belongs to


PAGES: tuple[Page, ...] = (
    Page("/", "overview", "Overview", nav="Overview"),
    Page("/playground", "playground", "Playground", nav="Playground"),
    Page("/models", "models", "Models", nav="Models"),
    Page("/models/{model_id:path}", "model", "Model", section="Models"),
    Page("/tokens", "tokens", "API tokens", nav="Tokens"),  # a member manages the tokens they made
    Page("/usage", "usage", "Usage", ADMIN, nav="Usage"),
    Page("/logs", "logs", "Request log", ADMIN, nav="Logs"),
    Page("/logs/{request_id}", "log", "Request", ADMIN, section="Logs"),
    Page("/jobs", "jobs", "Jobs", nav="Jobs"),
    Page("/jobs/{job_id}", "job", "Job", section="Jobs"),
    Page("/batches", "batches", "Batches", nav="Batches"),
    Page("/batches/{batch_id}", "batch", "Batch", section="Batches"),
    Page("/workflows", "workflows", "Workflows", nav="Workflows"),
    Page("/workflows/new", "workflow", "New workflow", section="Workflows"),
    Page("/workflows/{agent_id}", "workflow", "Workflow", section="Workflows"),
    Page("/runs", "runs", "Runs", nav="Runs"),
    Page("/runs/{run_id}", "run", "Run", section="Runs"),
    Page("/library", "library", "Library", nav="Library"),
    Page("/settings", "settings", "Settings", nav="Settings"),
    Page("/admin", "admin", "Admin", OPERATOR, nav="Admin"),
)

# Pages anyone may open: first-run setup, sign-in, accepting an invite.
PUBLIC: tuple[Page, ...] = (
    Page("/setup", "setup", "Set up Modelyard"),
    Page("/login", "login", "Sign in"),
    Page("/invite/{token}", "invite", "Join an organization"),
)


def allowed(page: Page, scopes: frozenset[str] | set[str], operator: bool) -> bool:
    if page.needs == OPERATOR:
        return operator and sc.ADMIN_READ in scopes
    if page.needs == ADMIN:
        return sc.ADMIN_READ in scopes
    return sc.USER_READ in scopes


def has_script(name: str) -> bool:
    return PACKAGE.joinpath("static", "pages", name + ".js").is_file()


@cache
def environment() -> Environment:
    env = Environment(loader=FileSystemLoader(str(PACKAGE.joinpath("templates"))),
                      autoescape=select_autoescape(default=True, default_for_string=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.globals.update(static=static_url, version=__version__)
    return env


def static_url(path: str) -> str:
    """A static file's URL; the version in the query lets browsers cache it until the next release."""
    return f"{STATIC_PREFIX}/{path}?v={__version__}"


def render(template: str, **values: Any) -> str:
    return environment().get_template(template).render(**values)
