"""`modelyard users create|list`: the operator's first user, straight on the database (password prompted or piped)."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
from typing import Any, Callable

from ..config import Settings
from ..errors import ModelyardError


def add_parser(sub: Any, common: Callable[[argparse.ArgumentParser], None], fn: Callable[..., int]) -> None:
    u = sub.add_parser("users", help="manage console users (people who sign in)")
    usub = u.add_subparsers(dest="action", required=True)
    uc = usub.add_parser("create", help="create a user with a role in an organization")
    uc.add_argument("--email", required=True)
    uc.add_argument("--org", default="default", help="organization id or name (default: default)")
    uc.add_argument("--role", choices=["owner", "admin", "member"], default="member")
    uc.add_argument("--username", help="default: the email's local part")
    uc.add_argument("--password-stdin", action="store_true", help="read the password from stdin (else prompted)")
    ul = usub.add_parser("list", help="list users and their organizations (never passwords)")
    for q in (uc, ul):
        common(q)
        q.add_argument("--json", action="store_true")
    u.set_defaults(fn=fn)


def read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise ValueError("the passwords differ")
    return first


async def run(args: argparse.Namespace, settings: Settings, password: str | None) -> list[dict[str, Any]]:
    from ..bootstrap import DEFAULT_ORG, OPERATOR_PLAN
    from ..pipeline.auth import Authenticator
    from ..store.db import Store
    from ..store.repo import OrgRepo
    from .service import Accounts

    store = Store(settings.resolved_database_url)
    try:
        await store.migrate()
        accounts = Accounts(settings, store, Authenticator(store))
        if args.action == "create":
            if args.org == DEFAULT_ORG and await OrgRepo(store).get(DEFAULT_ORG) is None:
                await OrgRepo(store).create(DEFAULT_ORG, plan=OPERATOR_PLAN)  # before the first `serve`
            user, org = await accounts.create_user(args.email, password or "", args.username, args.org, args.role)
            return [{**user.public(), "organizations": [org]}]
        return [{**u.public(), "organizations": await accounts.repo.organizations_of(u.id)}
                for u in await accounts.repo.list_users()]
    finally:
        await store.aclose()


def cmd_users(args: argparse.Namespace, settings: Settings) -> int:
    try:
        password = read_password(args.password_stdin) if args.action == "create" else None
        rows = asyncio.run(run(args, settings, password))
    except (ValueError, ModelyardError) as exc:
        print(f"error: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    for r in rows:
        orgs = ",".join(f"{o['name']}:{o['role']}" for o in r["organizations"])
        print(f"{r['id']}  {r['email']}  {r['username']}  {orgs}")
    return 0
