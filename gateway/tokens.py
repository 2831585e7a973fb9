"""Local verification of access tokens (DESIGN.md rule 2: no round-trip per connect).

Public keys come from ``auth.jwks`` over NATS and are cached per ``kid``; an unknown ``kid``
triggers at most one refetch per second (key rotation). Decoding follows DESIGN.md rule 12 and
the OWASP JWT cheat sheet: an explicit algorithm list (RS256 only), and required ``exp``,
``iat``, ``sub``, ``aud``, ``iss``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from jose import ExpiredSignatureError, JWTError, jwk, jwt
from jose.backends.base import Key
from nats.aio.client import Client

from gateway.revocations import Revocations
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request_json

logger = logging.getLogger(__name__)

ALGORITHMS = ["RS256"]
_DECODE_OPTIONS = {
    "require_exp": True,
    "require_iat": True,
    "require_sub": True,
    "require_aud": True,
    "require_iss": True,
    "verify_at_hash": False,
}


@dataclass(frozen=True, slots=True)
class Claims:
    """The verified claims a socket or HTTP call acts with.

    ``expires_at`` is Unix seconds; ``issued_ms`` Unix milliseconds (compared to revocations).
    """

    user_id: str
    username: str
    session_id: str | None
    role: str
    expires_at: int
    issued_ms: int
    jti: str | None = None

    @property
    def is_service(self) -> bool:
        """A service or admin token (``natter service-token``), not a user's."""
        return self.role in ("service", "admin")

    @property
    def actor_id(self) -> str:
        """The ``user_id`` this token acts as in a room: the user's own id, or ``svc:<name>`` for
        a service or admin token (whose ``sub`` is ``svc-<name>``). PROTOCOL.md section 12 names
        a service's posts ``svc:<name>``; its deletes, member changes and sanctions carry the
        same id, so one service is one identity in a room's events."""
        if self.is_service:
            return f"svc:{self.user_id.removeprefix('svc-')}"
        return self.user_id


class TokenVerifier:
    """Verifies RS256 access tokens against the auth service's JWKS, and revocations.

    Args:
        nc: NATS connection used to fetch ``auth.jwks``.
        issuer, audience: expected ``iss`` / ``aud``.
        revocations: live view of ``natter_revocations``.
    """

    def __init__(
        self,
        nc: Client,
        *,
        issuer: str,
        audience: str,
        revocations: Revocations,
        request_timeout: float,
    ) -> None:
        self.nc = nc
        self.issuer = issuer
        self.audience = audience
        self.revocations = revocations
        self.request_timeout = request_timeout
        self._keys: dict[str, Key] = {}
        self._last_fetch = 0.0

    async def refresh_keys(self) -> None:
        """Fetch the JWKS; raises ``ProtocolError(unavailable)`` if auth does not answer."""
        self._last_fetch = time.monotonic()
        reply = await request_json(self.nc, subjects.AUTH_JWKS, {}, timeout=self.request_timeout)
        keys: dict[str, Key] = {}
        for entry in reply.get("keys", []):
            if entry.get("kty") == "RSA" and entry.get("kid"):
                keys[entry["kid"]] = jwk.construct(entry, "RS256")
        self._keys = keys or self._keys

    async def _key_for(self, kid: str) -> Key:
        key = self._keys.get(kid)
        if key is None and time.monotonic() - self._last_fetch > 1.0:
            try:
                await self.refresh_keys()
            except ProtocolError:
                raise
            key = self._keys.get(kid)
        if key is None:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Unknown signing key")
        return key

    async def verify(self, token: str) -> Claims:
        """Verify ``token`` and return its :class:`Claims`.

        Raises:
            ProtocolError: ``token_expired`` if ``exp`` passed; ``auth_failed`` for anything
                else wrong (bad signature, algorithm, audience, issuer, missing claim, revoked);
                ``unavailable`` if keys are needed and auth does not answer.
        """
        try:
            header = jwt.get_unverified_header(token)
        except JWTError as error:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Malformed token") from error
        if header.get("alg") not in ALGORITHMS:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Unsupported token algorithm")
        key = await self._key_for(str(header.get("kid", "")))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=ALGORITHMS,
                audience=self.audience,
                issuer=self.issuer,
                options=_DECODE_OPTIONS,
            )
        except ExpiredSignatureError as error:
            raise ProtocolError(ErrorCode.TOKEN_EXPIRED, "Token expired") from error
        except JWTError as error:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Invalid token") from error
        user_id = claims.get("sub")
        if not isinstance(user_id, str) or subjects.USER_ID_RE.fullmatch(user_id) is None:
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Invalid subject")
        issued_ms = claims.get("iat_ms")
        if not isinstance(issued_ms, int):
            issued_ms = int(claims["iat"]) * 1000
        result = Claims(
            user_id=user_id,
            username=str(claims.get("name", "")),
            session_id=claims.get("sid") if isinstance(claims.get("sid"), str) else None,
            role=str(claims.get("role", "user")),
            expires_at=int(claims["exp"]),
            issued_ms=issued_ms,
            jti=claims.get("jti") if isinstance(claims.get("jti"), str) else None,
        )
        if self.revocations.is_revoked(result.user_id, result.session_id, result.issued_ms, result.jti):
            raise ProtocolError(ErrorCode.AUTH_FAILED, "Session revoked")
        return result
