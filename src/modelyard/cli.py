"""The `modelyard` command: serve, worker, runner, migrate, keys, orgs, users, models, secrets, doctor, import."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from datetime import datetime, timedelta, timezone
from typing import Any

from . import __version__
from .config import Settings, load_settings


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    return load_settings(getattr(args, "config", None), data_dir=getattr(args, "data_dir", None), **extra)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML config file (default: $MODELYARD_CONFIG or ./modelyard.yaml)")
    p.add_argument("--data-dir", help="where the SQLite file, media and admin key live (default ./modelyard-data)")


def _setup_logging(settings: Settings) -> None:
    from .logs import setup_logging

    setup_logging(settings)


# ---------------------------------------------------------------- serve

def cmd_serve(args: argparse.Namespace) -> int:
    from .server.process import limit_malloc_arenas

    limit_malloc_arenas()  # before any thread starts (the database driver's come next)
    import uvicorn

    from .bootstrap import announce, bootstrap
    from .server.app import SETTINGS_FILE_ENV, create_app, write_settings_file
    from .store.db import Store
    from .store.secrets import secret_box

    settings = _settings(args, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
                         log_format=args.log_format)
    _setup_logging(settings)

    async def prepare() -> None:
        store = Store(settings.resolved_database_url, secrets=secret_box(settings))
        try:
            announce(await bootstrap(settings, store))
        finally:
            await store.aclose()

    # Migrations and the first-start admin key happen once, here, before any worker process exists.
    asyncio.run(prepare())
    settings = settings.model_copy(update={"bootstrap_on_startup": False})  # done above, once
    if settings.workers > 1:
        # uvicorn's worker processes import the app by name: they get these resolved settings as one file
        app: Any = "modelyard.server.app:app_from_env"
        os.environ[SETTINGS_FILE_ENV] = str(write_settings_file(settings))
        if settings.metrics_enabled:  # the workers keep their values in files there; a scrape sums them
            from .telemetry.metrics import prepare_multiprocess
            prepare_multiprocess(settings.data_dir / "run" / "prometheus")
    else:
        app = create_app(settings, freeze_gc=True)
    if bool(args.ssl_certfile) != bool(args.ssl_keyfile):
        print("error: --ssl-certfile and --ssl-keyfile go together", file=sys.stderr)
        return 2
    from .server.shutdown import CUT_MARGIN_SECONDS

    # uvicorn re-raises the signal it shut down on, under the handler found at start: a drain that went as planned
    # then ends this process with 0, not "killed by SIGTERM" (the app's own drain is chained in at start)
    signal.signal(signal.SIGTERM, lambda *_: None)
    scheme = "https" if args.ssl_certfile else "http"
    print(f"Modelyard {__version__} on {scheme}://{settings.host}:{settings.port}  (data: {settings.data_dir.resolve()}, "
          f"database: {settings.resolved_database_url.split('://')[0]}, console: /, API reference: /reference)", flush=True)
    uvicorn.run(app, factory=isinstance(app, str), host=settings.host, port=settings.port,
                workers=settings.workers if settings.workers > 1 else None, log_level=settings.log_level,
                loop="auto", http="auto", proxy_headers=True,
                timeout_graceful_shutdown=settings.shutdown_grace_seconds + CUT_MARGIN_SECONDS,
                access_log=args.access_log, ssl_certfile=args.ssl_certfile, ssl_keyfile=args.ssl_keyfile,
                log_config=None)  # uvicorn's lines go through our handler: one format, secrets masked
    return 0


# ---------------------------------------------------------------- runner

def cmd_runner(args: argparse.Namespace) -> int:
    from .jobs.standalone import run_runner

    settings = _settings(args, log_level=args.log_level, log_format=args.log_format,
                         **({"job_concurrency": args.concurrency} if args.concurrency else {}))
    _setup_logging(settings)
    print(f"Modelyard job runner (database: {settings.resolved_database_url.split('://')[0]}, "
          f"concurrency {settings.job_concurrency})", flush=True)
    try:
        asyncio.run(run_runner(settings, name=args.name))
    except KeyboardInterrupt:
        pass
    return 0


# ---------------------------------------------------------------- worker

def cmd_worker(args: argparse.Namespace) -> int:
    import socket

    from .server.process import limit_malloc_arenas

    limit_malloc_arenas()

    import uvicorn

    from .config import WorkerSettings
    from .server.app import create_app

    token = args.token or os.environ.get("MODELYARD_WORKER_TOKEN")
    if not token:
        print("error: give the worker token with --token or MODELYARD_WORKER_TOKEN "
              "(create one with `modelyard keys create --scopes worker`)", file=sys.stderr)
        return 2
    host, port = args.host or "127.0.0.1", args.port or 8001
    shown_host = socket.gethostname() if host in ("0.0.0.0", "::") else host
    worker = WorkerSettings(control_plane=args.control_plane, token=token,
                            models=[m.strip() for m in args.models.split(",") if m.strip()],
                            name=args.name or f"{socket.gethostname()}-{port}",
                            advertise_url=args.advertise_url or f"http://{shown_host}:{port}", region=args.region,
                            heartbeat_seconds=args.heartbeat)
    settings = load_settings(args.config, data_dir=args.data_dir or "modelyard-worker-data", host=host, port=port,
                             worker=worker, log_level=args.log_level, log_format=args.log_format)
    _setup_logging(settings)
    app = create_app(settings, freeze_gc=True)
    print(f"Modelyard worker '{worker.name}' serving {', '.join(worker.models)} on {worker.advertise_url} for "
          f"{worker.control_plane}", flush=True)
    uvicorn.run(app, host=host, port=port, log_level=settings.log_level, access_log=False, log_config=None)
    return 0


# ---------------------------------------------------------------- migrate

def cmd_migrate(args: argparse.Namespace) -> int:
    from .store.db import Store

    settings = _settings(args)

    async def run() -> None:
        store = Store(settings.resolved_database_url)
        try:
            await store.migrate()
        finally:
            await store.aclose()

    asyncio.run(run())
    print("database is at the newest schema")
    return 0


# ---------------------------------------------------------------- orgs and keys

async def _with_repos(settings: Settings, fn):
    from .store.db import Store
    from .store.repo import OrgRepo, TokenRepo

    store = Store(settings.resolved_database_url)
    try:
        await store.migrate()
        return await fn(OrgRepo(store), TokenRepo(store))
    finally:
        await store.aclose()


async def _audit(repos: Any, action: str, org_id: str | None, target: str | None, before: Any = None,
                 after: Any = None) -> None:
    """The CLI writes the audit log too: the actor is the operating-system user on this host."""
    import getpass
    import socket

    from .store.audit_repo import AuditRepo

    try:
        who = getpass.getuser()
    except Exception:  # no passwd entry (a container's arbitrary uid)
        who = f"uid {os.getuid()}"
    await AuditRepo(repos).record(action=action, actor_kind="cli", actor_id=f"{who}@{socket.gethostname()}",
                                  org_id=org_id, target=target, before=before, after=after)


def _print(rows: list[dict[str, Any]], cols: list[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
        return
    widths = {c: max([len(c)] + [len(str(r.get(c) or "")) for r in rows]) for c in cols}
    print("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(str(r.get(c) if r.get(c) is not None else "").ljust(widths[c]) for c in cols))


def cmd_orgs(args: argparse.Namespace) -> int:
    from .store.repo import Conflict

    settings = _settings(args)
    if args.action == "create":
        from .pipeline.limits import build_rules

        if args.plan not in build_rules(settings.plans):
            print(f"error: unknown plan '{args.plan}'; configured: {', '.join(sorted(build_rules(settings.plans)))}",
                  file=sys.stderr)
            return 2

        async def create(orgs, _tokens):
            org = await orgs.create(args.name, plan=args.plan)
            await _audit(orgs, "organization.create", org.id, org.id, after=org.public())
            return org
        try:
            org = asyncio.run(_with_repos(settings, create))
        except Conflict as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        _print([org.public()], ["id", "name", "plan", "status"], args.json)
        return 0

    if args.action in ("show", "update", "top-up"):
        return _org_account(args, settings)

    async def list_(orgs, _tokens):
        return await orgs.list()
    _print([o.public() for o in asyncio.run(_with_repos(settings, list_))], ["id", "name", "plan", "status", "created_at"], args.json)
    return 0


def _org_account(args: argparse.Namespace, settings: Settings) -> int:
    """show / update / top-up: the operator API's account management, straight on the database."""
    from .bootstrap import DEFAULT_ORG
    from .pipeline.limits import build_rules
    from .store.billing_repo import WalletRepo

    if args.action == "top-up" and args.amount_cents <= 0:
        print("error: --amount-cents must be a positive number of cents", file=sys.stderr)
        return 2

    async def run(orgs, _tokens):
        org = await orgs.get(args.org)
        if org is None:
            raise LookupError(f"no organization '{args.org}' (see `modelyard orgs list`)")
        wallets = WalletRepo(orgs)  # repos take anything with an .engine
        if args.action == "update":
            if args.plan and args.plan not in build_rules(settings.plans):
                raise LookupError(f"unknown plan '{args.plan}'; configured: {', '.join(sorted(build_rules(settings.plans)))}")
            if args.status == "banned" and org.name == DEFAULT_ORG:
                raise LookupError("the operator's own organization cannot be banned")
            before = org
            org = await orgs.update(org.id, plan=args.plan, status=args.status)
            changed = [k for k in ("plan", "status") if getattr(args, k)]
            await _audit(orgs, "organization.update", org.id, org.id, before={k: before.public()[k] for k in changed},
                         after={k: org.public()[k] for k in changed})
        elif args.action == "top-up":
            balance, row = await wallets.top_up(org.id, args.amount_cents * 10_000, args.note)
            await _audit(orgs, "wallet.top_up", org.id, row["id"], after={
                "amount_micros": row["amount_micros"], "note": row["note"], "balance_micros": balance})
        return org, await wallets.balance(org.id)
    try:
        org, balance = asyncio.run(_with_repos(settings, run))
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    row = {**org.public(), "balance_cents": balance // 10_000, "balance_dollars": f"{balance // 10_000 / 100:.2f}"}
    _print([row], ["id", "name", "plan", "status", "balance_dollars"], args.json)
    if args.action != "show":
        print("(running servers apply plan and status changes within their key cache TTL)", file=sys.stderr)
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    from .bootstrap import DEFAULT_ORG
    from .pipeline import scopes as sc

    settings = _settings(args)
    if args.action == "create":
        try:
            scopes = sc.normalize(args.scopes.split(","))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        expires = datetime.now(timezone.utc) + timedelta(days=args.expires_in_days) if args.expires_in_days else None

        async def create(orgs, tokens):
            org = await orgs.get(args.org or DEFAULT_ORG)
            if org is None:
                raise LookupError(f"no organization '{args.org or DEFAULT_ORG}' (see `modelyard orgs list`)")
            token, secret = await tokens.create(org.id, args.name, scopes, expires_at=expires)
            await _audit(tokens, "token.create", org.id, token.id, after=token.public())
            return token, secret
        try:
            token, secret = asyncio.run(_with_repos(settings, create))
        except LookupError as exc:
            print(f"error: {exc.args[0]}", file=sys.stderr)
            return 1
        if args.json:
            print(json.dumps({**token.public(), "secret": secret}, indent=2))
        else:
            print(f"created {token.id} in {token.org_id} with scopes {', '.join(token.scopes)}")
            print("secret (shown once, store it now):")
            print(secret)
        return 0
    if args.action == "revoke":
        async def revoke(_orgs, tokens):
            before = await tokens.get(args.token_id)
            token = await tokens.revoke(args.token_id)
            if token is not None:
                await _audit(tokens, "token.revoke", token.org_id, token.id,
                             before={"status": before.status if before else None}, after={"status": token.status})
            return token
        token = asyncio.run(_with_repos(settings, revoke))
        if token is None:
            print(f"error: no token '{args.token_id}'", file=sys.stderr)
            return 1
        print(f"{token.id}: {token.status} (servers drop cached keys within {settings.auth_cache_ttl:g}s)")
        return 0

    async def list_(orgs, tokens):
        org_id = None
        if args.org:
            org = await orgs.get(args.org)
            if org is None:
                raise LookupError(f"no organization '{args.org}'")
            org_id = org.id
        return await tokens.list(org_id)
    try:
        rows = [t.public() for t in asyncio.run(_with_repos(settings, list_))]
    except LookupError as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        return 1
    for r in rows:
        r["scopes"] = ",".join(r["scopes"])
    _print(rows, ["id", "org_id", "name", "display", "scopes", "status", "expires_at", "last_used_at"], args.json)
    return 0


def cmd_users(args: argparse.Namespace) -> int:
    from .accounts.cli import cmd_users as run

    return run(args, _settings(args))


def cmd_models(args: argparse.Namespace) -> int:
    from .catalog import build_catalog

    catalog = build_catalog(_settings(args))
    rows = [{"id": m.id, "type": m.type, "tasks": ",".join(sorted(t.value for t in m.tasks)),
             "deployments": ",".join(f"{d.name}:{d.config.backend}" for d in m.deployments),
             "aliases": ",".join(m.aliases)} for m in catalog]
    _print(rows, ["id", "type", "tasks", "deployments", "aliases"], args.json)
    return 0


# ---------------------------------------------------------------- secrets, doctor, import

def cmd_secrets(args: argparse.Namespace) -> int:
    from .store.secrets import SecretKeyError, generate_key, rotate, secret_box

    if args.action == "generate-key":
        print(generate_key())
        return 0
    from .store.db import Store

    settings = _settings(args)
    box = secret_box(settings)

    async def run() -> dict[str, int]:
        store = Store(settings.resolved_database_url, secrets=box)
        try:
            await store.migrate()
            return await rotate(store, box)
        finally:
            await store.aclose()
    try:
        counts = asyncio.run(run())
    except SecretKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"resealed {counts['resealed']} stored secret(s) with the newest key; {counts['current']} already were")
    if box.count > 1:
        print("every stored secret now opens with the first key alone: the others can be removed", file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .ops.doctor import run_doctor

    return run_doctor(_settings(args), as_json=args.json, probe=not args.no_probe, timeout=args.timeout)


def cmd_import(args: argparse.Namespace) -> int:
    from .ops.litellm import import_litellm

    return import_litellm(args.source, args.output, force=args.force)


# ---------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="modelyard", description="Self-hosted AI inference platform.")
    p.add_argument("--version", action="version", version=f"modelyard {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="start the API server")
    _common(s)
    s.add_argument("--host", help="bind address (default 127.0.0.1)")
    s.add_argument("--port", type=int, help="port (default 8000)")
    s.add_argument("--workers", type=int, help="gateway processes (default 1)")
    s.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    s.add_argument("--log-format", choices=["text", "json"], help="json: one JSON object per line")
    s.add_argument("--access-log", action="store_true", help="log every request")
    s.add_argument("--ssl-certfile", help="serve HTTPS with this certificate (PEM)")
    s.add_argument("--ssl-keyfile", help="the certificate's private key (PEM)")
    s.set_defaults(fn=cmd_serve)

    r = sub.add_parser("runner", help="run async jobs from the shared database (no HTTP)")
    _common(r)
    r.add_argument("--concurrency", type=int, help="jobs worked on at once (default: job_concurrency)")
    r.add_argument("--name", help="runner name shown as the lease owner (default host:pid)")
    r.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    r.add_argument("--log-format", choices=["text", "json"], help="json: one JSON object per line")
    r.set_defaults(fn=cmd_runner)

    w = sub.add_parser("worker", help="host models for a control plane (registers, then sends heartbeats)")
    _common(w)
    w.add_argument("--control-plane", required=True, help="the gateway's base URL, e.g. http://gateway:8000")
    w.add_argument("--token", help="a key with the 'worker' scope (or set MODELYARD_WORKER_TOKEN)")
    w.add_argument("--models", required=True, help="comma-separated model ids this worker hosts")
    w.add_argument("--name", help="unique worker name (default: <hostname>-<port>)")
    w.add_argument("--region", help="region of this worker's deployments")
    w.add_argument("--host", help="bind address (default 127.0.0.1)")
    w.add_argument("--port", type=int, help="port (default 8001)")
    w.add_argument("--advertise-url", help="URL the control plane calls (default http://<host>:<port>)")
    w.add_argument("--heartbeat", type=float, default=2.0, help="seconds between heartbeats")
    w.add_argument("--log-level", choices=["critical", "error", "warning", "info", "debug"])
    w.add_argument("--log-format", choices=["text", "json"], help="json: one JSON object per line")
    w.set_defaults(fn=cmd_worker)

    m = sub.add_parser("migrate", help="bring the database schema up to date")
    _common(m)
    m.set_defaults(fn=cmd_migrate)

    o = sub.add_parser("orgs", help="manage organizations")
    osub = o.add_subparsers(dest="action", required=True)
    oc = osub.add_parser("create", help="create an organization")
    oc.add_argument("name")
    oc.add_argument("--plan", default="free")
    ol = osub.add_parser("list", help="list organizations")
    os_ = osub.add_parser("show", help="an organization with its balance")
    os_.add_argument("org", help="id or name")
    ou = osub.add_parser("update", help="change an organization's plan or status")
    ou.add_argument("org", help="id or name")
    ou.add_argument("--plan")
    ou.add_argument("--status", choices=["active", "banned"])
    ot = osub.add_parser("top-up", help="add money to an organization's wallet (a ledger row)")
    ot.add_argument("org", help="id or name")
    ot.add_argument("--amount-cents", type=int, required=True)
    ot.add_argument("--note")
    for q in (oc, ol, os_, ou, ot):
        _common(q)
        q.add_argument("--json", action="store_true")
    o.set_defaults(fn=cmd_orgs)

    k = sub.add_parser("keys", help="manage API keys")
    ksub = k.add_subparsers(dest="action", required=True)
    kc = ksub.add_parser("create", help="create a key; its secret is printed once")
    kc.add_argument("--org", help="organization id or name (default: the default organization)")
    kc.add_argument("--name", default="key")
    kc.add_argument("--scopes", default="user:read,user:write",
                    help="comma-separated: user:read, user:write, admin:read, admin:write, worker")
    kc.add_argument("--expires-in-days", type=float)
    kl = ksub.add_parser("list", help="list keys (never their secrets)")
    kl.add_argument("--org")
    kr = ksub.add_parser("revoke", help="revoke a key")
    kr.add_argument("token_id")
    for q in (kc, kl, kr):
        _common(q)
        q.add_argument("--json", action="store_true")
    k.set_defaults(fn=cmd_keys)

    from .accounts.cli import add_parser as add_users

    add_users(sub, _common, cmd_users)

    md = sub.add_parser("models", help="list the models this configuration serves")
    _common(md)
    md.add_argument("--json", action="store_true")
    md.set_defaults(fn=cmd_models)

    se = sub.add_parser("secrets", help="secrets at rest: reseal with the newest key, make a key")
    sesub = se.add_subparsers(dest="action", required=True)
    sr = sesub.add_parser("rotate", help="reseal every stored secret with the first key of MODELYARD_SECRET_KEY")
    _common(sr)
    sesub.add_parser("generate-key", help="print a new key for MODELYARD_SECRET_KEY")
    se.set_defaults(fn=cmd_secrets)

    dr = sub.add_parser("doctor", help="check the database, Redis, storage, deployments, workers and clock")
    _common(dr)
    dr.add_argument("--json", action="store_true")
    dr.add_argument("--no-probe", action="store_true", help="do not send deployments a probe request")
    dr.add_argument("--timeout", type=float, default=10.0, help="seconds each check may take")
    dr.set_defaults(fn=cmd_doctor)

    im = sub.add_parser("import", help="convert another gateway's configuration into a Modelyard config")
    imsub = im.add_subparsers(dest="kind", required=True)
    il = imsub.add_parser("litellm", help="a LiteLLM proxy config.yaml")
    il.add_argument("source", help="the LiteLLM config.yaml")
    il.add_argument("-o", "--output", default="modelyard.yaml", help="where to write (default modelyard.yaml; - for stdout)")
    il.add_argument("--force", action="store_true", help="overwrite the output file")
    im.set_defaults(fn=cmd_import)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
