"""Password hashing with argon2id, off the event loop and with bounded concurrency.

DESIGN.md rule 12 and the OWASP Password Storage Cheat Sheet: argon2id with at least m=19 MiB,
t=2, p=1. Each hash takes tens of milliseconds of CPU and ~19 MiB of memory, so it runs in a
worker thread (``asyncio.to_thread``) and at most ``concurrency`` run at once per replica.

Unknown users are verified against a dummy hash so that "no such user" and "wrong password" take
the same time (OWASP Authentication Cheat Sheet, "Authentication Responses").
"""

from __future__ import annotations

import asyncio
import secrets

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: PROTOCOL.md section 6: passwords have 8..128 characters; longer ones are never hashed.
MAX_PASSWORD_CHARS = 128


class PasswordService:
    """argon2id hashing and verification for one replica.

    Args:
        time_cost: iterations (t).
        memory_cost_kib: memory (m) in KiB.
        parallelism: lanes (p).
        concurrency: hashes/verifications running at once; more callers wait their turn.
    """

    def __init__(self, *, time_cost: int, memory_cost_kib: int, parallelism: int, concurrency: int) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost,
            memory_cost=memory_cost_kib,
            parallelism=parallelism,
            type=Type.ID,
        )
        self._semaphore = asyncio.Semaphore(concurrency)
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        """The PHC-format argon2id hash of ``password`` (``$argon2id$v=19$m=...``)."""
        async with self._semaphore:
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when ``password`` matches ``password_hash``; False on mismatch or a corrupt hash."""
        async with self._semaphore:
            return await asyncio.to_thread(self._verify_sync, password_hash, password)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    async def verify_dummy(self, password: str) -> bool:
        """Spend the same work as :meth:`verify` for an unknown user; always False."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)
        return False

    def needs_rehash(self, password_hash: str) -> bool:
        """True when ``password_hash`` was made with other parameters than the current ones."""
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except (InvalidHashError, ValueError):
            return True
