"""Authentication: find the key in whichever header the client's SDK uses, resolve it to a principal, cached."""

from __future__ import annotations

import hmac
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from starlette.requests import HTTPConnection

from ..errors import AuthenticationError, NotFound, PermissionDenied
from ..store.db import Store
from ..store.repo import OrgRepo, TokenRepo, hash_secret, new_id, utcnow
from ..store.writebehind import Sink, WriteBehind
from . import scopes as sc

log = logging.getLogger(__name__)
TOKEN_USES = "token_uses"  # the write-behind kind of batched token counters
USES_EVERY = 5.0  # seconds between counter batches: each is one receipt row, so not every writer tick
RECEIPT_DAYS = 7  # receipts older than this are pruned; a spool older than this would count its batches twice


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token, its org, and what it may do."""

    token_id: str
    org_id: str
    org_name: str
    plan: str
    scopes: frozenset[str]
    expires_at: datetime | None
    org_status: str = "active"  # "banned": every call is refused with 403
    bodies: str | None = None  # the org keeps request bodies in its request log: "raw" or "redact"
    # a console session's: the signed-in user and their role (None for a key), the session's id
    user_id: str | None = None
    role: str | None = None
    session_id: str | None = None

    def require(self, scope: str) -> None:
        if scope not in self.scopes:
            who = f"Your role ({self.role})" if self.role else "This API key"
            raise PermissionDenied(f"{who} lacks the '{scope}' scope needed for this request.")


def extract_key(conn: HTTPConnection) -> str | None:
    """Bearer (OpenAI), Key (fal), x-api-key (Anthropic), x-goog-api-key and ?key= (Gemini)."""
    h = conn.headers
    auth = h.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("bearer", "key") and value.strip():
            return value.strip()
    for name in ("x-api-key", "x-goog-api-key"):
        v = h.get(name)
        if v:
            return v.strip()
    return conn.query_params.get("key") or None


class SessionAuth(Protocol):
    """Console sessions (accounts/sessions.py): the principal behind a request's session cookie, or None."""

    async def authenticate(self, conn: HTTPConnection) -> Principal | None: ...

    def forget(self, token_id: str | None = None) -> None: ...


class Authenticator:
    """Resolves keys to principals with a short-lived cache so the hot path does no DB reads.

    A request without a key may carry a console session cookie instead; `sessions` (attached by the app) resolves
    it. That check runs only when no key was sent, so the key path costs what it did.

    A revocation through this process takes effect at once; through another replica, within `ttl` seconds.
    Usage counters (last use, request count) are batched to the DB by a background flush, never per request.
    """

    def __init__(self, store: Store, *, ttl: float = 10.0, max_entries: int = 100_000) -> None:
        self.tokens = TokenRepo(store)
        self.orgs = OrgRepo(store)
        self.ttl = ttl
        self.max_entries = max_entries
        self._cache: dict[str, tuple[Principal, float]] = {}
        self._uses: dict[str, tuple[int, datetime]] = {}
        self.writer: WriteBehind | None = None
        self._collected = time.monotonic()
        self._pruned = 0.0
        self.sessions: SessionAuth | None = None

    def attach(self, writer: WriteBehind) -> None:
        """Write the counters through the process's write-behind (spooled, replayed once by receipt)."""
        self.writer = writer
        writer.register(Sink(TOKEN_USES, self._write_uses, interval=0.0))
        writer.collector(self._collect)

    def _collect(self, due_only: bool) -> None:
        if not self._uses or (due_only and time.monotonic() - self._collected < USES_EVERY):
            return
        uses, self._uses = self._uses, {}
        self._collected = time.monotonic()
        self.writer.put(TOKEN_USES, {"id": new_id("tku"),  # type: ignore[union-attr]
                                     "uses": {t: [n, last.isoformat()] for t, (n, last) in uses.items()}})

    async def _write_uses(self, records: list[dict]) -> None:
        for r in records:
            counts = {t: (int(n), datetime.fromisoformat(last)) for t, (n, last) in r["uses"].items()}
            await self.tokens.record_use(counts, receipt=r["id"])
        if time.monotonic() - self._pruned > 3600:
            self._pruned = time.monotonic()
            await self.tokens.prune_receipts(utcnow() - timedelta(days=RECEIPT_DAYS))

    async def authenticate(self, conn: HTTPConnection, scope: str | None = None) -> Principal:
        key = extract_key(conn)
        if not key:
            principal = await self.sessions.authenticate(conn) if self.sessions is not None else None
            if principal is None:
                raise AuthenticationError(
                    "No API key provided. Send it as 'Authorization: Bearer <key>' (or x-api-key, x-goog-api-key, "
                    "?key=).", code="missing_api_key")
            if principal.org_status == "banned":
                raise PermissionDenied("API access is disabled for this account.", code="account_banned")
            if scope:
                principal.require(scope)
            return principal
        principal = await self.resolve(key)
        if principal.org_status == "banned":
            raise PermissionDenied("API access is disabled for this account.", code="account_banned")
        n, _ = self._uses.get(principal.token_id, (0, None))
        self._uses[principal.token_id] = (n + 1, utcnow())
        if scope:
            principal.require(scope)
        return principal

    async def resolve(self, key: str) -> Principal:
        digest = hash_secret(key)
        now = time.monotonic()
        hit = self._cache.get(digest)
        if hit is not None and hit[1] > now:
            principal = hit[0]
            if principal.expires_at is not None and principal.expires_at <= utcnow():
                self._cache.pop(digest, None)
                raise AuthenticationError("This API key has expired.", code="expired_api_key")
            return principal
        principal = await self._load(key)
        if len(self._cache) >= self.max_entries:
            self._cache.clear()
        self._cache[digest] = (principal, now + self.ttl)
        return principal

    async def _load(self, key: str) -> Principal:
        token = await self.tokens.by_secret(key)
        if token is None:
            raise AuthenticationError("Incorrect API key provided.")
        if token.status != "active":
            raise AuthenticationError("This API key has been revoked.", code="revoked_api_key")
        if token.expired:
            raise AuthenticationError("This API key has expired.", code="expired_api_key")
        org = await self.orgs.get(token.org_id)
        if org is None:
            raise AuthenticationError("This API key's organization no longer exists.")
        return Principal(token_id=token.id, org_id=org.id, org_name=org.name, plan=org.plan,
                         scopes=sc.expand(token.scopes), expires_at=token.expires_at, org_status=org.status,
                         bodies=org.bodies)

    def forget(self, token_id: str | None = None) -> None:
        """Drop cached principals (one token's, or all) after a revoke or an org change."""
        if self.sessions is not None:  # sessions signed in with that key, or every session's plan and status
            self.sessions.forget(token_id)
        if token_id is None:
            self._cache.clear()
            return
        for digest, (p, _) in list(self._cache.items()):
            if p.token_id == token_id:
                del self._cache[digest]

    async def flush_usage(self) -> None:
        if self.writer is not None:
            self._collect(False)
            await self.writer.flush()
            return
        uses, self._uses = self._uses, {}
        if not uses:
            return
        try:
            await self.tokens.record_use(uses)
        except Exception:  # a failed flush must not take the server down; the counts are advisory
            log.exception("could not record token usage; %d tokens' counts dropped", len(uses))


class StaticKeyAuthenticator:
    """A worker's auth: exactly one key (the serving key it gave the control plane) may call it."""

    def __init__(self, key: str) -> None:
        self._key = key.encode()
        self._principal = Principal(token_id="control-plane", org_id="control-plane", org_name="control-plane",
                                    plan="unlimited", scopes=sc.expand([sc.USER_WRITE]), expires_at=None)

    async def authenticate(self, conn: HTTPConnection, scope: str | None = None) -> Principal:
        key = extract_key(conn)
        if not key or not hmac.compare_digest(key.encode(), self._key):
            raise AuthenticationError("This worker only answers its control plane.")
        if scope:
            self._principal.require(scope)
        return self._principal

    def forget(self, token_id: str | None = None) -> None:
        return None

    async def flush_usage(self) -> None:
        return None


async def org_principal(orgs: OrgRepo, org_id: str, token_id: str | None) -> Principal:
    """Whom background work (a batch's lines, an agent run's nodes) is admitted for: its org as it is now (its plan
    may have changed since the work was submitted), with no scopes of its own."""
    org = await orgs.get(org_id)
    if org is None:
        raise NotFound(f"No organization '{org_id}'.")
    return Principal(token_id=token_id or "", org_id=org.id, org_name=org.name, plan=org.plan, scopes=frozenset(),
                     expires_at=None, org_status=org.status)
