"""Secrets at rest: values the database must hold readable (a worker's serving key) are sealed with Fernet.

A sealed value is `enc:v1:<Fernet token>` in the same string column the plain value used to fill, so no migration
was needed and a row written before encryption (no prefix) still reads; `modelyard secrets rotate` seals it.

Keys come from `secret_key` (`MODELYARD_SECRET_KEY`: one key, or several comma-separated, newest first),
`secret_key_file` (one key a line, newest first), or, when neither is set, a key generated at first start into
`<data_dir>/secret-key` (mode 0600), as the webhook and media signing keys are. A key is a Fernet key
(`modelyard secrets generate-key`); any other string of 16 or more characters is stretched into one with SHA-256.
Sealing always uses the first key; opening tries each (cryptography's MultiFernet), so a new key goes first, then
`modelyard secrets rotate` reseals every stored value with it, then the old key can be dropped.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import Column, Table, select, update

if TYPE_CHECKING:
    from ..config import Settings
    from .db import Store

PREFIX = "enc:v1:"
KEY_FILE = "secret-key"
MIN_PASSPHRASE = 16


class SecretKeyError(Exception):
    """The configured keys cannot open what the database holds, or are not keys at all."""


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet_key(text: str) -> bytes:
    """A Fernet key as given, or one stretched from a passphrase (SHA-256, so the same text gives the same key)."""
    raw = text.strip().encode()
    try:
        if len(base64.urlsafe_b64decode(raw)) == 32 and len(raw) == 44:
            return raw
    except (binascii.Error, ValueError):
        pass
    if len(raw) < MIN_PASSPHRASE:
        raise SecretKeyError(f"a secret key must be a Fernet key (`modelyard secrets generate-key`) or at least "
                             f"{MIN_PASSPHRASE} characters")
    return base64.urlsafe_b64encode(hashlib.sha256(raw).digest())


def _split(text: str) -> list[str]:
    return [part.strip() for line in text.splitlines() for part in line.split(",") if part.strip()]


class SecretBox:
    """Seals and opens stored secrets with the newest of its keys first."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise SecretKeyError("no secret key")
        self._fernets = [Fernet(_fernet_key(k)) for k in keys]
        self._multi = MultiFernet(self._fernets)
        self.count = len(keys)

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        if settings.secret_key:
            return cls(_split(settings.secret_key))
        if settings.secret_key_file:
            try:
                return cls(_split(Path(settings.secret_key_file).expanduser().read_text()))
            except OSError as exc:
                raise SecretKeyError(f"secret_key_file {settings.secret_key_file}: {exc.strerror}") from None
        return cls(_split(_data_dir_key(settings.data_dir)))

    def seal(self, plain: str) -> str:
        return PREFIX + self._multi.encrypt(plain.encode()).decode()

    def open(self, stored: str) -> str:
        """The plain value; one stored before encryption is returned as it is."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._multi.decrypt(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a secret in the database was sealed with a key that is not configured "
                                 "(MODELYARD_SECRET_KEY / secret_key_file, newest first, the old key after it)") from None

    def newest(self, stored: str) -> bool:
        """Sealed with the first key already (nothing for `rotate` to do)."""
        if not stored.startswith(PREFIX):
            return False
        try:
            self._fernets[0].decrypt(stored[len(PREFIX):].encode())
            return True
        except InvalidToken:
            return False

    def reseal(self, stored: str) -> str:
        """Sealed with the newest key (a plain value is sealed; a sealed one is re-encrypted)."""
        if not stored.startswith(PREFIX):
            return self.seal(stored)
        try:
            return PREFIX + self._multi.rotate(stored[len(PREFIX):].encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a secret in the database was sealed with a key that is not configured") from None


def secret_box(settings: Settings) -> SecretBox:
    """The settings' box, or SystemExit naming what is wrong with the key (at start, before anything runs)."""
    try:
        return SecretBox.from_settings(settings)
    except SecretKeyError as exc:
        raise SystemExit(f"error: {exc}") from None


def _data_dir_key(data_dir: Path) -> str:
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(generate_key() + "\n")
        except FileExistsError:
            pass  # another process made it first
    keys = _split(path.read_text())
    if not keys:
        raise SecretKeyError(f"{path} is empty: delete it to have a new key made, or put the key back")
    return keys[0] if len(keys) == 1 else ",".join(keys)


# ---------------------------------------------------------------- what the database holds sealed

def _sealed_columns() -> list[tuple[Table, Column, Column]]:
    """(table, key column, sealed column) for every secret stored: `check` and `rotate` walk these."""
    from .tables import workers

    return [(workers, workers.c.id, workers.c.secret)]


async def check(store: Store, box: SecretBox) -> int:
    """Open every stored secret once (at start): a wrong or missing key fails here, naming the fix, rather than
    on some later request. Returns how many were checked."""
    n = 0
    async with store.engine.connect() as conn:
        for _table, key, col in _sealed_columns():
            for row in (await conn.execute(select(key, col))).all():
                box.open(row[1])
                n += 1
    return n


async def rotate(store: Store, box: SecretBox) -> dict[str, int]:
    """Reseal every stored secret with the newest key (plain ones are sealed). Returns counts: resealed, current."""
    out = {"resealed": 0, "current": 0}
    async with store.engine.begin() as conn:
        for table, key, col in _sealed_columns():
            for row in (await conn.execute(select(key, col))).all():
                if box.newest(row[1]):
                    out["current"] += 1
                    continue
                await conn.execute(update(table).where(key == row[0]).values({col.name: box.reseal(row[1])}))
                out["resealed"] += 1
    return out
