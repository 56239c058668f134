"""Passwords: argon2id hashes via argon2-cffi, verified off the event loop; never stored or logged plain."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ..errors import InvalidRequest

MIN_LENGTH = 8
MAX_LENGTH = 1024  # argon2 takes any length; a bound keeps one request from costing more than another


def check_policy(password: str, param: str = "password") -> None:
    if len(password) < MIN_LENGTH:
        raise InvalidRequest(f"A password needs at least {MIN_LENGTH} characters.", param=param)
    if len(password) > MAX_LENGTH:
        raise InvalidRequest(f"A password may have at most {MAX_LENGTH} characters.", param=param)


class Passwords:
    """argon2id with the library's defaults (RFC 9106's low-memory profile). Hashing and verifying take tens of
    milliseconds of CPU by design, so both run in a thread."""

    def __init__(self) -> None:
        self.hasher = PasswordHasher()  # argon2id is its default type
        self._dummy: str | None = None

    def hash_sync(self, password: str) -> str:
        return self.hasher.hash(password)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self.hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`. With no stored hash (unknown email) it verifies against a dummy,
        so a wrong email costs what a wrong password does and the answer's timing says nothing."""
        if stored is None:
            if self._dummy is None:
                self._dummy = await self.hash("not-a-password-anyone-has")
            stored = self._dummy
            password = password + "\x00"  # never matches the dummy
        try:
            return await asyncio.to_thread(self.hasher.verify, stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False
