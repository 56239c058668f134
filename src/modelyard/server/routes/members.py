"""An organization's people (invites, members, roles) and a signed-in user's own profile."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import Response

from ...errors import InvalidRequest
from ...pipeline import scopes as sc
from ...store.repo import TokenRepo
from ..audit import audit
from ..body import parse_json
from ..openapi import json_body
from ..render import app_context, base_url, json_response
from .orgs import ORG, _org_for
from .session import accounts

router = APIRouter(tags=["Members"])
Role = Literal["owner", "admin", "member"]
NO_NUL = r"^[^\x00]*$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InviteBody(_Body):
    email: str | None = Field(default=None, max_length=320)
    role: Role = "member"


class RoleBody(_Body):
    role: Role


class ProfilePatch(_Body):
    username: str | None = Field(default=None, max_length=40)
    bio: str | None = Field(default=None, max_length=2000, pattern=NO_NUL)  # PostgreSQL text holds no NUL
    location: str | None = Field(default=None, max_length=200, pattern=NO_NUL)


@router.post(ORG + "/invites", summary="Invite someone by a one-time link (owners and admins); the link is shown once",
             status_code=201, openapi_extra=json_body(InviteBody))
async def create_invite(request: Request, org_id: str) -> Response:
    _, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    body = await parse_json(request, InviteBody)
    invite = await accounts(request).invite(principal, org.id, body.email, body.role)
    await audit(request, principal, "invite.create", org_id=org.id, target=invite["id"],
                after={"role": invite["role"], "email": invite["email"], "expires_at": invite["expires_at"]})
    invite["url"] = base_url(request).rstrip("/") + "/invite/" + invite["token"]
    return json_response(invite, status=201)


@router.get(ORG + "/members", summary="The organization's members and their roles")
async def list_members(request: Request, org_id: str) -> Response:
    _, _, org = await _org_for(request, org_id, sc.ADMIN_READ)
    return json_response({"object": "list", "data": await accounts(request).repo.members(org.id)})


@router.patch(ORG + "/members/{user_id}", summary="Change a member's role (owners and admins)",
              openapi_extra=json_body(RoleBody))
async def change_role(request: Request, org_id: str, user_id: str) -> Response:
    _, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    body = await parse_json(request, RoleBody)
    before = await accounts(request).repo.role(user_id, org.id)
    await accounts(request).change_member(principal, org.id, user_id, body.role)
    await audit(request, principal, "member.update", org_id=org.id, target=user_id, before={"role": before},
                after={"role": body.role})
    return json_response({"user_id": user_id, "organization_id": org.id, "role": body.role})


@router.delete(ORG + "/members/{user_id}", summary="Remove a member (owners and admins)")
async def remove_member(request: Request, org_id: str, user_id: str) -> Response:
    ctx, principal, org = await _org_for(request, org_id, sc.ADMIN_WRITE)
    before = await accounts(request).repo.role(user_id, org.id)
    await accounts(request).change_member(principal, org.id, user_id, None)
    # the tokens they made in this org leave with them
    revoked = await TokenRepo(ctx.store).revoke_created_by(org.id, "user:" + user_id)
    for token_id in revoked:
        ctx.auth.forget(token_id)
    await audit(request, principal, "member.remove", org_id=org.id, target=user_id, before={"role": before},
                after={"role": None, "tokens_revoked": revoked})
    return json_response({"user_id": user_id, "organization_id": org.id, "removed": True,
                          "tokens_revoked": revoked})


async def _user_id(request: Request, scope: str) -> str:
    principal = await app_context(request).calls.authorize(request, scope)
    if principal.user_id is None:
        raise InvalidRequest("A profile belongs to a signed-in person, not to an API key.", code="not_a_user")
    return principal.user_id


@router.get("/api/v1/me/profile", summary="The signed-in user's profile")
async def get_profile(request: Request) -> Response:
    user_id = await _user_id(request, sc.USER_READ)
    user = await accounts(request).repo.user(user_id)
    return json_response(user.public() if user else {})


@router.patch("/api/v1/me/profile", summary="Change the signed-in user's username, bio or location",
              openapi_extra=json_body(ProfilePatch))
async def patch_profile(request: Request) -> Response:
    user_id = await _user_id(request, sc.USER_READ)  # one's own profile needs no write scope on the org
    body = await parse_json(request, ProfilePatch)
    user = await accounts(request).update_profile(user_id, body.model_dump(exclude_unset=True))
    return json_response(user.public())
