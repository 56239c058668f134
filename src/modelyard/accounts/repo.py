"""The users, memberships, invites and sessions tables: the only code that writes them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

from ..store.db import Store
from ..store.repo import Conflict, new_id
from ..store.tables import invites, memberships, organizations, sessions, users

ROLES = ("owner", "admin", "member")


@dataclass(frozen=True)
class User:
    id: str
    email: str
    username: str
    password_hash: str
    bio: str | None
    location: str | None
    created_at: float

    def public(self) -> dict[str, Any]:
        return {"id": self.id, "email": self.email, "username": self.username, "bio": self.bio,
                "location": self.location, "created_at": self.created_at}


def _user(m: Mapping[str, Any]) -> User:
    return User(**{k: m[k] for k in User.__dataclass_fields__})


def _conflict(exc: IntegrityError) -> Conflict:
    text = str(exc.orig).lower()
    field = "username" if "username" in text else "email"
    return Conflict(f"that {field} is already taken")


class AccountRepo:
    def __init__(self, store: Store) -> None:
        self.engine = store.engine

    # ---------------------------------------------------------------- users

    async def count_users(self) -> int:
        async with self.engine.connect() as conn:
            return int((await conn.execute(select(func.count()).select_from(users))).scalar_one())

    async def create_user(self, email: str, username: str, password_hash: str, now: float,
                          org_id: str | None = None, role: str | None = None, *, only_if_none: bool = False) -> User:
        """A user, and their first membership when `org_id` is given, in one transaction. `only_if_none`: only
        while no user exists (the first-run setup), else Conflict."""
        row = {"id": new_id("usr"), "email": email, "username": username, "password_hash": password_hash,
               "bio": None, "location": None, "created_at": now}
        try:
            async with self.engine.begin() as conn:
                if only_if_none and conn.dialect.name == "postgresql":
                    # two first visits at once must not both see "no user yet": setups take turns (the lock ends
                    # with the transaction). SQLite's single writer already serializes them.
                    await conn.execute(text("SELECT pg_advisory_xact_lock(7263001)"))
                if only_if_none and (await conn.execute(select(func.count()).select_from(users))).scalar_one():
                    raise Conflict("setup is done: a user exists already")
                await conn.execute(insert(users).values(**row))
                if org_id is not None:
                    await conn.execute(insert(memberships).values(user_id=row["id"], org_id=org_id, role=role,
                                                                  created_at=now))
        except IntegrityError as exc:
            raise _conflict(exc) from None
        return _user(row)

    async def user(self, user_id: str) -> User | None:
        return await self._one_user(users.c.id == user_id)

    async def user_by_email(self, email: str) -> User | None:
        return await self._one_user(users.c.email == email)

    async def _one_user(self, where: Any) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(where))).first()
        return _user(row._mapping) if row else None

    async def emails(self, user_ids: list[str]) -> dict[str, str]:
        """user id -> email, for the ids that exist."""
        if not user_ids:
            return {}
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users.c.id, users.c.email).where(users.c.id.in_(user_ids)))).all()
        return {r[0]: r[1] for r in rows}

    async def list_users(self) -> list[User]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.created_at))).all()
        return [_user(r._mapping) for r in rows]

    async def update_profile(self, user_id: str, values: dict[str, Any]) -> User | None:
        if values:
            try:
                async with self.engine.begin() as conn:
                    await conn.execute(update(users).where(users.c.id == user_id).values(**values))
            except IntegrityError as exc:
                raise _conflict(exc) from None
        return await self.user(user_id)

    # ---------------------------------------------------------------- memberships

    async def add_membership(self, user_id: str, org_id: str, role: str, now: float) -> None:
        try:
            async with self.engine.begin() as conn:
                await conn.execute(insert(memberships).values(user_id=user_id, org_id=org_id, role=role,
                                                              created_at=now))
        except IntegrityError:
            raise Conflict("already a member of this organization") from None

    async def role(self, user_id: str, org_id: str) -> str | None:
        q = select(memberships.c.role).where(memberships.c.user_id == user_id, memberships.c.org_id == org_id)
        async with self.engine.connect() as conn:
            return (await conn.execute(q)).scalar_one_or_none()

    async def organizations_of(self, user_id: str) -> list[dict[str, Any]]:
        q = (select(organizations.c.id, organizations.c.name, memberships.c.role)
             .join(memberships, memberships.c.org_id == organizations.c.id)
             .where(memberships.c.user_id == user_id).order_by(memberships.c.created_at))
        async with self.engine.connect() as conn:
            return [{"id": r.id, "name": r.name, "role": r.role} for r in (await conn.execute(q)).all()]

    async def members(self, org_id: str) -> list[dict[str, Any]]:
        q = (select(users.c.id, users.c.email, users.c.username, memberships.c.role, memberships.c.created_at)
             .join(memberships, memberships.c.user_id == users.c.id)
             .where(memberships.c.org_id == org_id).order_by(memberships.c.created_at))
        async with self.engine.connect() as conn:
            return [{"user_id": r.id, "email": r.email, "username": r.username, "role": r.role,
                     "joined_at": r.created_at} for r in (await conn.execute(q)).all()]

    async def set_role(self, user_id: str, org_id: str, role: str | None) -> bool:
        """Change a member's role, or remove them (`role=None`); False when they are not a member."""
        where = (memberships.c.user_id == user_id, memberships.c.org_id == org_id)
        async with self.engine.begin() as conn:
            if role is None:
                result = await conn.execute(delete(memberships).where(*where))
            else:
                result = await conn.execute(update(memberships).where(*where).values(role=role))
        return result.rowcount == 1

    async def count_owners(self, org_id: str) -> int:
        q = select(func.count()).select_from(memberships).where(memberships.c.org_id == org_id,
                                                                 memberships.c.role == "owner")
        async with self.engine.connect() as conn:
            return int((await conn.execute(q)).scalar_one())

    # ---------------------------------------------------------------- invites

    async def create_invite(self, org_id: str, token_hash: str, email: str | None, role: str, created_by: str,
                            now: float, expires_at: float) -> dict[str, Any]:
        row = {"id": new_id("inv"), "org_id": org_id, "token_hash": token_hash, "email": email, "role": role,
               "created_by": created_by, "created_at": now, "expires_at": expires_at, "used_at": None,
               "used_by": None}
        async with self.engine.begin() as conn:
            await conn.execute(insert(invites).values(**row))
        return row

    async def invite(self, token_hash: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(invites).where(invites.c.token_hash == token_hash))).first()
        return dict(row._mapping) if row else None

    async def use_invite(self, invite_id: str, user_id: str, now: float) -> bool:
        """Mark an invite used; only one caller ever gets True (the update is conditional)."""
        q = (update(invites).where(invites.c.id == invite_id, invites.c.used_at.is_(None),
                                   invites.c.expires_at > now).values(used_at=now, used_by=user_id))
        async with self.engine.begin() as conn:
            return (await conn.execute(q)).rowcount == 1

    # ---------------------------------------------------------------- sessions

    async def create_session(self, row: dict[str, Any]) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(insert(sessions).values(**row))

    async def session(self, token_hash: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(sessions).where(sessions.c.token_hash == token_hash))).first()
        return dict(row._mapping) if row else None

    async def touch_session(self, session_id: str, now: float) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(last_seen_at=now))

    async def select_org(self, session_id: str, org_id: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(update(sessions).where(sessions.c.id == session_id).values(org_id=org_id))

    async def revoke_sessions(self, now: float, *, session_id: str | None = None, user_id: str | None = None,
                              token_id: str | None = None) -> list[str]:
        """Revoke one session, or every live session of a user (or of a key); returns the ids revoked."""
        q = select(sessions.c.id).where(sessions.c.revoked_at.is_(None))
        if session_id is not None:
            q = q.where(sessions.c.id == session_id)
        elif user_id is not None:
            q = q.where(sessions.c.user_id == user_id)
        else:
            q = q.where(sessions.c.token_id == token_id)
        async with self.engine.begin() as conn:
            ids = [r.id for r in (await conn.execute(q)).all()]
            if ids:
                await conn.execute(update(sessions).where(sessions.c.id.in_(ids)).values(revoked_at=now))
        return ids
