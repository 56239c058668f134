"""The scope vocabulary and what each scope implies."""

from __future__ import annotations

from typing import Iterable

USER_READ = "user:read"
USER_WRITE = "user:write"
ADMIN_READ = "admin:read"
ADMIN_WRITE = "admin:write"
WORKER = "worker"  # for `modelyard worker` talking to the control plane; grants nothing else

ALL = (USER_READ, USER_WRITE, ADMIN_READ, ADMIN_WRITE, WORKER)
DEFAULT = (USER_READ, USER_WRITE)

# Admins can do what users can; write implies read. Worker is deliberately isolated.
_IMPLIES: dict[str, frozenset[str]] = {
    ADMIN_WRITE: frozenset({ADMIN_WRITE, ADMIN_READ, USER_WRITE, USER_READ}),
    ADMIN_READ: frozenset({ADMIN_READ, USER_READ}),
    USER_WRITE: frozenset({USER_WRITE, USER_READ}),
    USER_READ: frozenset({USER_READ}),
    WORKER: frozenset({WORKER}),
}


def normalize(scopes: Iterable[str]) -> list[str]:
    """Validate scope names; keep the order given, drop duplicates."""
    out: list[str] = []
    for raw in scopes:
        s = raw.strip()
        if not s:
            continue
        if s not in _IMPLIES:
            raise ValueError(f"unknown scope '{s}'; known scopes: {', '.join(ALL)}")
        if s not in out:
            out.append(s)
    if not out:
        raise ValueError("a token needs at least one scope")
    return out


def expand(scopes: Iterable[str]) -> frozenset[str]:
    granted: set[str] = set()
    for s in scopes:
        granted |= _IMPLIES.get(s, frozenset())
    return frozenset(granted)
