"""First start: migrate, create the operator's default organization and its admin token."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .pipeline import scopes as sc
from .store.secrets import SecretKeyError
from .store.secrets import check as check_secrets
from .store.db import Store
from .store.repo import OrgRepo, TokenRepo

log = logging.getLogger(__name__)

DEFAULT_ORG = "default"
OPERATOR_PLAN = "unlimited"
ADMIN_KEY_FILE = "admin-key"
CONFIGURED_ADMIN = "admin (from configuration)"


@dataclass
class BootstrapResult:
    org_id: str
    new_admin_secret: str | None  # only on the start that created it; printed once, never again
    admin_key_file: Path | None


async def bootstrap(settings: Settings, store: Store) -> BootstrapResult:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.media_dir.mkdir(parents=True, exist_ok=True)
    await store.migrate()
    if store.secrets is not None:
        try:
            await check_secrets(store, store.secrets)
        except SecretKeyError as exc:
            raise SystemExit(f"error: {exc}") from None
    orgs, tokens = OrgRepo(store), TokenRepo(store)
    org = await orgs.get(DEFAULT_ORG)
    if org is None:
        org = await orgs.create(DEFAULT_ORG, plan=OPERATOR_PLAN)
        log.info("created the default organization %s", org.id)
    if settings.admin_key:
        if len(settings.admin_key) < 16:
            log.warning("MODELYARD_ADMIN_KEY is shorter than 16 characters; anyone who guesses it is an admin")
        current = await tokens.by_secret(settings.admin_key)
        if current is None:
            current, _ = await tokens.create(org.id, CONFIGURED_ADMIN, [sc.ADMIN_WRITE], secret=settings.admin_key)
        # Rotating the configured key must retire the one it replaces.
        for old in await tokens.list(org.id):
            if old.name == CONFIGURED_ADMIN and old.id != current.id and old.status == "active":
                await tokens.revoke(old.id)
                log.info("revoked %s: the configured admin key changed", old.id)
        return BootstrapResult(org.id, None, None)
    if any(t.name == "admin" for t in await tokens.list(org.id)):
        return BootstrapResult(org.id, None, None)
    _, secret = await tokens.create(org.id, "admin", [sc.ADMIN_WRITE])
    path = settings.data_dir / ADMIN_KEY_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    os.chmod(path, 0o600)
    return BootstrapResult(org.id, secret, path)


def announce(result: BootstrapResult) -> None:
    if result.new_admin_secret:
        print(
            "\n  Modelyard created an admin API key for the default organization. It is shown once:\n\n"
            f"      {result.new_admin_secret}\n\n"
            f"  A copy readable only by you is in {result.admin_key_file}\n",
            flush=True,
        )
