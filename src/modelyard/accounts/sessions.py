"""Console sessions: created at sign-in, looked up from the cookie (cached briefly, like keys), expired, revoked."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any, Callable

from starlette.requests import HTTPConnection

from ..errors import AuthenticationError, NotFound, PermissionDenied
from ..pipeline import scopes as sc
from ..pipeline.auth import Principal
from ..store.db import Store
from ..store.repo import OrgRepo, TokenRepo, hash_secret, new_id
from . import csrf
from .repo import AccountRepo

COOKIE = "modelyard_session"
ORG_HEADER = "x-modelyard-org"
ROLE_SCOPES = {"owner": sc.expand([sc.ADMIN_WRITE]), "admin": sc.expand([sc.ADMIN_WRITE]),
               "member": sc.expand([sc.USER_WRITE])}


@dataclass
class SessionState:
    """A session row as the cache keeps it; `last_seen_at` moves with every request this process serves."""

    id: str
    user_id: str | None
    token_id: str | None
    org_id: str
    csrf_token: str
    created_at: float
    last_seen_at: float
    expires_at: float
    revoked_at: float | None
    cached_until: float = 0.0  # monotonic

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "created_at": self.created_at, "expires_at": self.expires_at}


class Sessions:
    """Sessions live in the `sessions` table; the cookie carries a random token whose sha256 is the row's key.

    Lookups are cached for `ttl` seconds per process (as keys are): a sign-out through this process applies at once,
    through another replica within `ttl`. Idle expiry reads `last_seen_at`, written back at most every
    `touch_every` seconds, never per request.
    """

    def __init__(self, store: Store, *, idle: float, max_age: float, ttl: float,
                 clock: Callable[[], float] = time.time, max_entries: int = 100_000) -> None:
        self.repo = AccountRepo(store)
        self.orgs = OrgRepo(store)
        self.tokens = TokenRepo(store)
        self.idle = idle
        self.max_age = max_age
        self.ttl = ttl
        self.clock = clock  # epoch seconds (tests pass one they move)
        self.touch_every = min(60.0, idle / 2)
        self.max_entries = max_entries
        self._states: dict[str, SessionState] = {}  # token sha256 -> state
        self._principals: dict[tuple[str, str | None], tuple[Principal, float]] = {}

    # ---------------------------------------------------------------- create, look up, revoke

    async def create(self, org_id: str, *, user_id: str | None = None, token_id: str | None = None,
                     address: str | None = None, user_agent: str | None = None) -> tuple[str, SessionState]:
        """A new session; returns the cookie's token (never stored) and the state."""
        token = secrets.token_urlsafe(32)
        now = self.clock()
        row = {"id": new_id("ses"), "token_hash": hash_secret(token), "user_id": user_id, "token_id": token_id,
               "org_id": org_id, "csrf_token": csrf.new_token(), "created_at": now, "last_seen_at": now,
               "expires_at": now + self.max_age, "revoked_at": None, "address": (address or "")[:100] or None,
               "user_agent": (user_agent or "")[:300] or None}
        await self.repo.create_session(row)
        return token, _state(row)

    async def lookup(self, token: str) -> SessionState | None:
        """The live session behind a cookie's token, or None (unknown, signed out, idle too long, too old)."""
        digest = hash_secret(token)
        now = self.clock()
        state = self._states.get(digest)
        if state is None or state.cached_until <= time.monotonic():
            row = await self.repo.session(digest)
            if row is None:
                self._states.pop(digest, None)
                return None
            fresh = _state(row)
            if state is not None:  # this process saw requests the row has not heard of yet
                fresh.last_seen_at = max(fresh.last_seen_at, state.last_seen_at)
            if self._live(fresh, now) and now - row["last_seen_at"] >= self.touch_every:
                await self.repo.touch_session(fresh.id, now)
            fresh.cached_until = time.monotonic() + self.ttl
            if len(self._states) >= self.max_entries:
                self._states.clear()
                self._principals.clear()
            self._states[digest] = state = fresh
        if not self._live(state, now):
            return None
        state.last_seen_at = max(state.last_seen_at, now)
        return state

    def _live(self, state: SessionState, now: float) -> bool:
        return state.revoked_at is None and now < state.expires_at and now < state.last_seen_at + self.idle

    async def revoke(self, state: SessionState) -> None:
        await self.repo.revoke_sessions(self.clock(), session_id=state.id)
        self._forget({state.id})

    async def revoke_all(self, state: SessionState) -> int:
        """Every session of this session's user (or, for a key's session, of that key), this one included."""
        if state.user_id is not None:
            ids = await self.repo.revoke_sessions(self.clock(), user_id=state.user_id)
        else:
            ids = await self.repo.revoke_sessions(self.clock(), token_id=state.token_id)
        self._forget(set(ids) | {state.id})
        return len(ids)

    async def select_org(self, state: SessionState, org_id: str) -> None:
        await self.repo.select_org(state.id, org_id)
        state.org_id = org_id
        self._forget_principals({state.id})

    def forget(self, token_id: str | None = None) -> None:
        """Drop cached principals: all (an org's plan or status changed), or those acting as one key."""
        if token_id is None:
            self._principals.clear()
            return
        for key in [k for k, (p, _) in self._principals.items() if p.token_id == token_id]:
            del self._principals[key]

    def forget_user(self, user_id: str) -> None:
        """Drop cached principals of a user whose memberships changed (role, removal)."""
        ids = {s.id for s in self._states.values() if s.user_id == user_id}
        self._forget_principals(ids)

    def _forget(self, ids: set[str]) -> None:
        for digest in [d for d, s in self._states.items() if s.id in ids]:
            self._states[digest].revoked_at = self.clock()
            del self._states[digest]
        self._forget_principals(ids)

    def _forget_principals(self, ids: set[str]) -> None:
        for key in [k for k in self._principals if k[0] in ids]:
            del self._principals[key]

    # ---------------------------------------------------------------- the authenticator's hook

    async def authenticate(self, conn: HTTPConnection) -> Principal | None:
        """The principal behind the request's session cookie (None without one), after the CSRF check."""
        token = conn.cookies.get(COOKIE)
        if not token:
            return None
        state = await self.lookup(token)
        if state is None:
            raise AuthenticationError("Your session has ended (signed out or expired); sign in again.",
                                      code="session_expired")
        await csrf.check(conn, state.csrf_token)
        return await self.principal(state, conn.headers.get(ORG_HEADER))

    async def principal(self, state: SessionState, org_ref: str | None = None) -> Principal:
        key = (state.id, org_ref)
        hit = self._principals.get(key)
        if hit is not None and hit[1] > time.monotonic():
            return hit[0]
        principal = await (self._user_principal(state, org_ref) if state.user_id is not None
                           else self._key_principal(state, org_ref))
        if len(self._principals) >= self.max_entries:
            self._principals.clear()
        self._principals[key] = (principal, time.monotonic() + self.ttl)
        return principal

    async def _user_principal(self, state: SessionState, org_ref: str | None) -> Principal:
        org = await self.orgs.get(org_ref or state.org_id)
        role = await self.repo.role(state.user_id, org.id) if org is not None else None  # type: ignore[arg-type]
        if org is None or role is None:
            if org_ref:  # an org the user is not in reads as one that does not exist
                raise NotFound(f"No organization '{org_ref}'.", code="organization_not_found")
            raise PermissionDenied("You are no longer a member of this organization; choose another.",
                                   code="not_a_member")
        return Principal(token_id=f"user:{state.user_id}", org_id=org.id, org_name=org.name, plan=org.plan,
                         scopes=ROLE_SCOPES.get(role, frozenset()), expires_at=None, org_status=org.status,
                         user_id=state.user_id, role=role, session_id=state.id)

    async def _key_principal(self, state: SessionState, org_ref: str | None) -> Principal:
        token = await self.tokens.get(state.token_id)  # type: ignore[arg-type]
        if token is None or token.status != "active" or token.expired:
            raise AuthenticationError("The key this session signed in with is no longer valid; sign in again.",
                                      code="session_expired")
        org = await self.orgs.get(token.org_id)
        if org is None:
            raise AuthenticationError("This session's organization no longer exists.", code="session_expired")
        if org_ref and org_ref not in (org.id, org.name):
            raise NotFound(f"No organization '{org_ref}'.", code="organization_not_found")
        return Principal(token_id=token.id, org_id=org.id, org_name=org.name, plan=org.plan,
                         scopes=sc.expand(token.scopes), expires_at=token.expires_at, org_status=org.status,
                         session_id=state.id)


def _state(row: dict[str, Any]) -> SessionState:
    return SessionState(**{k: row[k] for k in ("id", "user_id", "token_id", "org_id", "csrf_token", "created_at",
                                               "last_seen_at", "expires_at", "revoked_at")})
