"""One helper every admin route calls to write the audit log: who (the key or the person), what, before/after, from where."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request

from ..pipeline.auth import Principal
from ..store.audit_repo import AuditRepo


async def audit(request: Request, principal: Principal, action: str, *, org_id: str | None,
                target: str | None = None, before: Any = None, after: Any = None) -> None:
    """Record an admin action (secrets are scrubbed from before/after by the repository)."""
    ctx = request.app.state.ctx
    state = request.scope.get("state") or {}
    kind = "user" if principal.user_id is not None else "key"  # a signed-in person's token_id is "user:<id>"
    await AuditRepo(ctx.store).record(action=action, actor_kind=kind, actor_id=principal.token_id,
                                      actor_org_id=principal.org_id, org_id=org_id, target=target, before=before,
                                      after=after, client_ip=request.client.host if request.client else None,
                                      request_id=state.get("request_id"))
