"""Users in KV ``natter_users`` (docs/subjects.md "KV buckets").

Keys: ``name.<lowercase username>`` holds the user id (plain ASCII) and is written with
``kv.create``, which is atomic across replicas, so a username is unique case-insensitively even
when two replicas register it at the same moment; ``id.<user_id>`` holds the user JSON
``{"user_id","username","password_hash","created_at","role"}`` plus, after a logout with
``all: true``, ``sessions_revoked_before_ms`` (sessions created earlier stay revoked even after
the 1-day revocation entry expires).
"""

from __future__ import annotations

import logging
import re
import uuid
from typing import Any, Final

from nats.js.errors import KeyNotFoundError
from nats.js.kv import KeyValue

from auth_service.kv_json import LOST_RACE, Versioned, encode, get_json
from shared.errors import ErrorCode, ProtocolError
from shared.protocol import utc_timestamp
from shared.subjects import USER_ID_RE

logger = logging.getLogger(__name__)

#: PROTOCOL.md section 6.
USERNAME_RE: Final = re.compile(r"^[A-Za-z0-9_]{3,32}$")
CAS_ATTEMPTS: Final = 20


def name_key(username: str) -> str | None:
    """``name.<lowercase username>``, or ``None`` if ``username`` cannot be a registered name."""
    if USERNAME_RE.fullmatch(username) is None:
        return None
    return f"name.{username.lower()}"


def id_key(user_id: str) -> str | None:
    """``id.<user_id>``, or ``None`` if ``user_id`` is not a valid id (so never a bad KV key)."""
    if USER_ID_RE.fullmatch(user_id) is None:
        return None
    return f"id.{user_id}"


def public_user(record: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a user: ``{"user_id","username","created_at"}`` (never the hash)."""
    return {"user_id": record["user_id"], "username": record["username"], "created_at": record["created_at"]}


class UserStore:
    """Reads and writes users in ``natter_users``."""

    def __init__(self, kv: KeyValue) -> None:
        self._kv = kv

    async def create(self, *, username: str, password_hash: str) -> dict[str, Any]:
        """Create a user with a fresh ``user_id`` (uuid4 hex) and role ``user``.

        Returns:
            The stored user record.

        Raises:
            ProtocolError: ``conflict`` "Username already taken" if the name exists in any case;
                ``validation_error`` for an impossible username.
        """
        key = name_key(username)
        if key is None:
            raise ProtocolError(ErrorCode.VALIDATION_ERROR, "username: invalid")
        user_id = uuid.uuid4().hex
        try:
            name_revision = await self._kv.create(key, user_id.encode())
        except LOST_RACE as error:
            raise ProtocolError(ErrorCode.CONFLICT, "Username already taken") from error
        record: dict[str, Any] = {
            "user_id": user_id,
            "username": username,
            "password_hash": password_hash,
            "created_at": utc_timestamp(),
            "role": "user",
        }
        try:
            await self._kv.create(f"id.{user_id}", encode(record))
        except BaseException:
            # Do not leave the name reserved for a user that does not exist.
            try:
                await self._kv.delete(key, last=name_revision)
            except Exception:
                logger.warning("could not release username key after a failed registration")
            raise
        return record

    async def find_by_id(self, user_id: str) -> Versioned | None:
        """The user record with its revision, or ``None``."""
        key = id_key(user_id)
        return None if key is None else await get_json(self._kv, key)

    async def find_by_name(self, username: str) -> Versioned | None:
        """The user record for ``username`` (any case), or ``None``."""
        key = name_key(username)
        if key is None:
            return None
        try:
            entry = await self._kv.get(key)
        except KeyNotFoundError:
            return None
        user_id = (entry.value or b"").decode(errors="replace")
        return await self.find_by_id(user_id)

    async def replace_password_hash(self, user: Versioned, password_hash: str) -> bool:
        """Store a new hash (rehash on login) if the record did not change since it was read.

        Returns:
            False when another replica wrote the record first (the old hash stays valid).
        """
        record = {**user.value, "password_hash": password_hash}
        try:
            await self._kv.update(f"id.{record['user_id']}", encode(record), last=user.revision)
        except LOST_RACE:
            return False
        return True

    async def revoke_sessions_before(self, user_id: str, before_ms: int) -> None:
        """Record on the user that every session created before ``before_ms`` is revoked
        (compare-and-set loop; the value only ever grows)."""
        for _ in range(CAS_ATTEMPTS):
            user = await self.find_by_id(user_id)
            if user is None:
                return
            if int(user.value.get("sessions_revoked_before_ms", 0)) >= before_ms:
                return
            record = {**user.value, "sessions_revoked_before_ms": before_ms}
            try:
                await self._kv.update(f"id.{user_id}", encode(record), last=user.revision)
                return
            except LOST_RACE:
                continue
        raise ProtocolError(ErrorCode.UNAVAILABLE)
