"""Sessions, refresh tokens and revocations in KV (docs/subjects.md "KV buckets").

- ``natter_sessions`` ``<sid>``: ``{"user_id","created_ms","revoked"}``, one per login.
- ``natter_refresh`` ``<token_id>``: ``{"sid","user_id","secret_hash","state","expires_ms"}``,
  ``state`` ``active`` until the token is used once, then ``rotated`` (kept until the bucket TTL
  so that a second use is recognised as reuse, OAuth 2.0 Security BCP, RFC 9700 s4.14.2) with
  ``rotated_ms`` and ``successor``: the pair that replaced it, sealed with a key derived from
  the token's own secret, returned again to whoever presents the token within the 5 s reuse
  interval (PROTOCOL.md section 6).
- ``natter_revocations`` ``s.<sid>``: ``{"user_id"}`` and ``u.<user_id>``: ``{"before_ms"}``,
  watched by gateways to close sockets of revoked sessions/users (bucket TTL 1 day, longer than
  any access token).

A session's lifetime is absolute: every refresh token of a session expires ``refresh_ttl`` after
the login that created it.
"""

from __future__ import annotations

import hmac
import uuid
from dataclasses import dataclass
from typing import Final

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from auth_service.kv_json import Versioned, encode, get_json
from auth_service.tokens import RefreshToken, new_refresh_token, parse_refresh_token
from shared.errors import ErrorCode, ProtocolError

CAS_ATTEMPTS: Final = 20


@dataclass(frozen=True, slots=True)
class ResolvedRefresh:
    """A presented refresh token whose secret matched its stored record."""

    token: RefreshToken
    record: Versioned

    @property
    def sid(self) -> str:
        return str(self.record.value["sid"])

    @property
    def user_id(self) -> str:
        return str(self.record.value["user_id"])


class SessionStore:
    """Reads and writes sessions, refresh tokens and revocation entries."""

    def __init__(self, *, sessions: KeyValue, refresh: KeyValue, revocations: KeyValue) -> None:
        self._sessions = sessions
        self._refresh = refresh
        self._revocations = revocations

    async def create_session(self, user_id: str, *, now_ms: int) -> str:
        """A new session id (uuid4 hex) stored as ``{"user_id","created_ms","revoked":false}``."""
        sid = uuid.uuid4().hex
        await self._sessions.create(sid, encode({"user_id": user_id, "created_ms": now_ms, "revoked": False}))
        return sid

    async def get_session(self, sid: str) -> Versioned | None:
        """The session record, or ``None`` (unknown or expired)."""
        return await get_json(self._sessions, sid)

    async def issue_refresh(self, *, sid: str, user_id: str, expires_ms: int) -> RefreshToken:
        """A new active refresh token for session ``sid``; only its secret's hash is stored."""
        token = new_refresh_token()
        record = {
            "sid": sid,
            "user_id": user_id,
            "secret_hash": token.secret_hash,
            "state": "active",
            "expires_ms": expires_ms,
        }
        await self._refresh.create(token.token_id, encode(record))
        return token

    async def resolve(self, text: str) -> ResolvedRefresh | None:
        """The stored record of refresh token ``text`` if it exists and its secret matches
        (constant-time comparison); ``None`` for malformed, unknown or forged tokens. State and
        expiry are the caller's to judge."""
        token = parse_refresh_token(text)
        if token is None:
            return None
        record = await get_json(self._refresh, token.token_id)
        if record is None:
            return None
        stored_hash = record.value.get("secret_hash")
        if not isinstance(stored_hash, str) or not hmac.compare_digest(stored_hash, token.secret_hash):
            return None
        if not isinstance(record.value.get("sid"), str) or not isinstance(record.value.get("user_id"), str):
            return None
        return ResolvedRefresh(token=token, record=record)

    async def mark_rotated(self, resolved: ResolvedRefresh, *, successor: str, now_ms: int) -> bool:
        """Compare-and-set the token's state to ``rotated``, keeping when (``rotated_ms``) and the
        sealed pair that replaced it (``successor``, :func:`auth_service.tokens.seal_successor`)
        for the reuse interval.

        Returns:
            False when the record changed since it was read (a concurrent use won).
        """
        value = {**resolved.record.value, "state": "rotated", "rotated_ms": now_ms, "successor": successor}
        try:
            await self._refresh.update(resolved.token.token_id, encode(value), last=resolved.record.revision)
        except KeyWrongLastSequenceError:
            return False
        return True

    async def discard_refresh(self, text: str) -> None:
        """Delete the record of a refresh token that was issued but never handed out."""
        token = parse_refresh_token(text)
        if token is not None:
            await self._refresh.delete(token.token_id)

    async def revoke_session(self, sid: str, user_id: str) -> None:
        """Mark session ``sid`` revoked and write ``s.<sid>`` = ``{"user_id"}`` to
        ``natter_revocations`` (gateways close its sockets)."""
        await self._revocations.put(f"s.{sid}", encode({"user_id": user_id}))
        for _ in range(CAS_ATTEMPTS):
            session = await self.get_session(sid)
            if session is None or session.value.get("revoked") is True:
                return
            value = {**session.value, "revoked": True}
            try:
                await self._sessions.update(sid, encode(value), last=session.revision)
                return
            except KeyWrongLastSequenceError:
                continue
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def revoke_user(self, user_id: str, *, before_ms: int) -> None:
        """Write ``u.<user_id>`` = ``{"before_ms"}``: access tokens with ``iat_ms`` < before_ms
        and sessions created before it are revoked."""
        await self._revocations.put(f"u.{user_id}", encode({"before_ms": before_ms}))

    async def user_revoked_before(self, user_id: str) -> int:
        """``before_ms`` of the user's revocation entry, 0 when there is none."""
        entry = await get_json(self._revocations, f"u.{user_id}")
        before = entry.value.get("before_ms") if entry else None
        return before if isinstance(before, int) else 0
