"""What the account routes and the CLI call: first-run setup, sign-in (rate limited), invites, members, profiles."""

from __future__ import annotations

import asyncio
import re
import secrets
from typing import Any

from ..bootstrap import DEFAULT_ORG
from ..config import LimitRuleConfig, PlanConfig, Settings
from ..errors import (
    AuthenticationError,
    InvalidRequest,
    ModelyardError,
    NotFound,
    PermissionDenied,
    RateLimited,
)
from ..pipeline import scopes as sc
from ..pipeline.auth import Authenticator, Principal
from ..pipeline.limits import Limiter
from ..store.db import Store
from ..store.repo import Conflict, OrgRepo, hash_secret
from .passwords import Passwords, check_policy
from .repo import ROLES, AccountRepo, User
from .sessions import Sessions, SessionState

EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]{1,200}@[^@\s\x00-\x1f\x7f]{1,200}\.[^@\s\x00-\x1f\x7f]+$")
USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
BAD_LOGIN = "Incorrect email or password."  # the same words whether or not the email exists
PLAN = "login"


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not EMAIL.match(email):
        raise InvalidRequest("That is not an email address.", param="email")
    return email


def check_username(username: str) -> str:
    if not USERNAME.match(username):
        raise InvalidRequest("A username is 1-40 letters, digits, '.', '_' or '-', starting with a letter or digit.",
                             param="username")
    return username


def conflict(exc: Conflict, param: str | None = None) -> ModelyardError:
    return ModelyardError(str(exc), status=409, code="conflict", param=param)


class LoginGuard:
    """Sign-in attempts per account and per client address per minute, on the rate limiter's counters (Redis
    when configured, so every replica shares them)."""

    def __init__(self, per_account: int, per_address: int, redis_url: str | None, prefix: str,
                 clock: Any) -> None:
        rules = [LimitRuleConfig(scope="token", class_="all", window="minute", count=per_account),
                 LimitRuleConfig(scope="org", class_="all", window="minute", count=per_address)]
        self.limiter = Limiter({PLAN: PlanConfig(limits=rules)}, redis_url, prefix + "login:", clock=clock)

    async def attempt(self, address: str, account: str) -> None:
        try:
            await self.limiter.admit(PLAN, address, hash_secret(account), "api", None)
        except RateLimited as exc:
            raise RateLimited("Too many sign-in attempts; retry after the window resets.",
                              retry_after=exc.retry_after) from None

    async def aclose(self) -> None:
        await self.limiter.aclose()


class Accounts:
    """People and their sessions; hangs off the AppContext (`ctx.accounts`)."""

    def __init__(self, settings: Settings, store: Store, auth: Authenticator) -> None:
        self.settings = settings
        self._setup_turn = asyncio.Lock()  # across processes, the repo's transaction decides (see create_user)
        self.repo = AccountRepo(store)
        self.orgs = OrgRepo(store)
        self.auth = auth
        self.passwords = Passwords()
        self.sessions = Sessions(store, idle=settings.session_idle_seconds, max_age=settings.session_max_seconds,
                                 ttl=settings.auth_cache_ttl)
        self.guard = LoginGuard(settings.login_attempts_per_account, settings.login_attempts_per_address,
                                settings.redis_url, settings.redis_key_prefix, clock=lambda: self.sessions.clock())
        auth.sessions = self.sessions

    def now(self) -> float:
        return self.sessions.clock()

    async def aclose(self) -> None:
        await self.guard.aclose()

    # ---------------------------------------------------------------- users

    async def create_user(self, email: str, password: str, username: str | None, org_ref: str, role: str, *,
                          first: bool = False) -> tuple[User, dict[str, Any]]:
        """A user with a membership in `org_ref` (id or name). `first`: only while no user exists (setup)."""
        email = normalize_email(email)
        username = check_username(username or email.split("@")[0])
        check_policy(password)
        if role not in ROLES:
            raise InvalidRequest(f"role is one of {', '.join(ROLES)}.", param="role")
        org = await self.orgs.get(org_ref)
        if org is None:
            raise NotFound(f"No organization '{org_ref}'.", code="organization_not_found")
        hashed = await self.passwords.hash(password)
        try:
            user = await self.repo.create_user(email, username, hashed, self.now(), org.id, role, only_if_none=first)
        except Conflict as exc:
            raise conflict(exc) from None
        return user, {"id": org.id, "name": org.name, "role": role}

    async def setup(self, email: str, password: str, username: str | None) -> tuple[User, SessionState, str]:
        async with self._setup_turn:  # two first visits at once: one wins, the other is told setup is done
            if await self.repo.count_users():
                raise ModelyardError("Setup is done: a user exists already. Sign in instead.", status=409,
                                     code="conflict")
            user, org = await self.create_user(email, password, username, DEFAULT_ORG, "owner", first=True)
        token, state = await self.sessions.create(org["id"], user_id=user.id)
        return user, state, token

    async def login(self, email: str, password: str, address: str, user_agent: str | None
                    ) -> tuple[User, SessionState, str]:
        account = email.strip().lower()
        await self.guard.attempt(address, account)
        user = await self.repo.user_by_email(account) if EMAIL.match(account) else None
        ok = await self.passwords.verify(user.password_hash if user else None, password)
        if user is None or not ok:
            raise AuthenticationError(BAD_LOGIN, code="invalid_credentials")
        orgs = await self.repo.organizations_of(user.id)
        if not orgs:
            raise AuthenticationError(BAD_LOGIN, code="invalid_credentials")  # nothing to sign in to
        token, state = await self.sessions.create(orgs[0]["id"], user_id=user.id, address=address,
                                                  user_agent=user_agent)
        return user, state, token

    async def login_key(self, key: str, address: str, user_agent: str | None) -> tuple[Principal, SessionState, str]:
        """An operator's headless sign-in: a session for an admin key's org, with the key's scopes."""
        await self.guard.attempt(address, "key:" + hash_secret(key))
        principal = await self.auth.resolve(key)
        if sc.ADMIN_READ not in principal.scopes:
            raise PermissionDenied("Only a key with admin scopes can sign in to the console.")
        token, state = await self.sessions.create(principal.org_id, token_id=principal.token_id, address=address,
                                                  user_agent=user_agent)
        return principal, state, token

    async def describe(self, state: SessionState, principal: Principal) -> dict[str, Any]:
        """What the console needs about who is signed in."""
        body: dict[str, Any] = {"session": state.public(), "csrf_token": state.csrf_token,
                                "organization": {"id": principal.org_id, "name": principal.org_name,
                                                 "role": principal.role},
                                "scopes": sorted(principal.scopes)}
        if state.user_id is not None:
            user = await self.repo.user(state.user_id)
            body["user"] = user.public() if user else None
            body["organizations"] = await self.repo.organizations_of(state.user_id)
        else:
            body["user"] = None
            body["token_id"] = state.token_id
            body["organizations"] = [{"id": principal.org_id, "name": principal.org_name, "role": None}]
        return body

    async def update_profile(self, user_id: str, values: dict[str, Any]) -> User:
        if "username" in values:
            if values["username"] is None:
                del values["username"]  # a username can change, not go away
            else:
                check_username(values["username"])
        try:
            user = await self.repo.update_profile(user_id, values)
        except Conflict as exc:
            raise conflict(exc, "username") from None
        if user is None:
            raise NotFound("No such user.")
        return user

    # ---------------------------------------------------------------- invites

    async def invite(self, principal: Principal, org_id: str, email: str | None, role: str) -> dict[str, Any]:
        if role not in ROLES:
            raise InvalidRequest(f"role is one of {', '.join(ROLES)}.", param="role")
        if role == "owner" and principal.role not in (None, "owner"):
            raise PermissionDenied("Only an owner can invite an owner.", param="role")
        token = secrets.token_urlsafe(32)
        now = self.now()
        row = await self.repo.create_invite(org_id, hash_secret(token), normalize_email(email) if email else None,
                                            role, principal.token_id, now,
                                            now + self.settings.invite_ttl_hours * 3600)
        return {"id": row["id"], "token": token, "role": role, "email": row["email"],
                "expires_at": row["expires_at"]}

    async def accept(self, token: str, signed_in: SessionState | None, email: str | None, password: str | None,
                     username: str | None) -> tuple[User, dict[str, Any], SessionState | None, str | None]:
        """Join the invite's org: as the signed-in user, or as a new user made from the fields given. Returns the
        user, the membership, and a new session when one was made."""
        invite = await self.repo.invite(hash_secret(token))
        now = self.now()
        if invite is None or invite["used_at"] is not None or invite["expires_at"] <= now:
            raise NotFound("This invite link is unknown, used or expired.", code="invite_not_found")
        org = await self.orgs.get(invite["org_id"])
        if org is None:
            raise NotFound("This invite link is unknown, used or expired.", code="invite_not_found")
        membership = {"id": org.id, "name": org.name, "role": invite["role"]}
        if signed_in is not None and signed_in.user_id is not None:
            user = await self.repo.user(signed_in.user_id)
            if user is None:
                raise AuthenticationError("Sign in again.", code="session_expired")
            if invite["email"] and invite["email"] != user.email:
                raise PermissionDenied("This invite is for another email address.", param="email")
            if await self.repo.role(user.id, org.id) is not None:
                raise ModelyardError("You are already a member of this organization.", status=409, code="conflict")
            if not await self.repo.use_invite(invite["id"], user.id, now):
                raise NotFound("This invite link is unknown, used or expired.", code="invite_not_found")
            await self.repo.add_membership(user.id, org.id, invite["role"], now)
            self.sessions.forget_user(user.id)
            return user, membership, None, None
        if not email or not password:
            raise InvalidRequest("Send email, password and username to create your account (or sign in first).",
                                 param="email" if not email else "password")
        if invite["email"] and invite["email"] != normalize_email(email):
            raise PermissionDenied("This invite is for another email address.", param="email")
        if await self.repo.user_by_email(normalize_email(email)) is not None:
            raise ModelyardError("An account with this email exists: sign in, then open the link again.",
                                 status=409, code="conflict", param="email")
        user, _ = await self.create_user(email, password, username, org.id, invite["role"])
        if not await self.repo.use_invite(invite["id"], user.id, now):  # raced another acceptance: undo ours
            await self.repo.set_role(user.id, org.id, None)
            raise NotFound("This invite link is unknown, used or expired.", code="invite_not_found")
        session_token, state = await self.sessions.create(org.id, user_id=user.id)
        return user, membership, state, session_token

    # ---------------------------------------------------------------- members

    async def change_member(self, principal: Principal, org_id: str, user_id: str, role: str | None) -> None:
        """Set a member's role, or remove them (`role=None`). Owners are an owner's business; an org keeps one."""
        current = await self.repo.role(user_id, org_id)
        if current is None:
            raise NotFound(f"No member '{user_id}'.", code="member_not_found")
        if role is not None and role not in ROLES:
            raise InvalidRequest(f"role is one of {', '.join(ROLES)}.", param="role")
        if "owner" in (current, role) and principal.role not in (None, "owner"):
            raise PermissionDenied("Only an owner can change an owner's membership or make one.", param="role")
        if current == "owner" and role != "owner" and await self.repo.count_owners(org_id) <= 1:
            raise ModelyardError("An organization keeps at least one owner.", status=409, code="conflict")
        await self.repo.set_role(user_id, org_id, role)
        self.sessions.forget_user(user_id)
