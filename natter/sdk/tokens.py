"""Access/refresh token pair and the refresh schedule.

The access token is a JWT (PROTOCOL.md section 2) whose ``exp`` and ``iat`` the client reads
without verifying it (the gateway verifies; the client only needs to know when to refresh).
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass
from typing import Any


def jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, decoded WITHOUT verification; ``{}`` if it is not a JWT."""
    parts = token.split(".")
    if len(parts) != 3:
        return {}
    payload = parts[1] + "=" * (-len(parts[1]) % 4)
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload.encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


@dataclass
class Tokens:
    """What login/refresh return (PROTOCOL.md section 6), with times in Unix seconds.

    Attributes:
        access_token: the JWT for the socket and the HTTP API.
        refresh_token: the rotating refresh token (``None``: the client cannot refresh).
        user_id / username: whose tokens these are.
        expires_at: the access token's expiry (its ``exp``, else now + ``expires_in``).
        issued_at: the access token's ``iat``, else the time it was received.
    """

    access_token: str
    refresh_token: str | None
    user_id: str
    username: str
    expires_at: float
    issued_at: float

    @classmethod
    def from_response(cls, body: dict[str, Any], now: float | None = None) -> Tokens:
        """Build from a login/refresh body (``access_token``, ``refresh_token``, ``expires_in``,
        ``user_id``, ``username``)."""
        return cls.from_access_token(
            str(body["access_token"]),
            refresh_token=body.get("refresh_token"),
            expires_in=_number(body.get("expires_in")),
            user_id=str(body.get("user_id") or ""),
            username=str(body.get("username") or ""),
            now=now,
        )

    @classmethod
    def from_access_token(
        cls,
        access_token: str,
        *,
        refresh_token: str | None = None,
        expires_in: float | None = None,
        user_id: str = "",
        username: str = "",
        now: float | None = None,
    ) -> Tokens:
        """Build from a bare access token (its claims fill what is not given)."""
        now = time.time() if now is None else now
        claims = jwt_claims(access_token)
        exp = _number(claims.get("exp"))
        iat = _number(claims.get("iat"))
        if exp is None:
            exp = now + (expires_in if expires_in is not None else 900.0)
        return cls(
            access_token=access_token,
            refresh_token=refresh_token,
            user_id=user_id or str(claims.get("sub") or ""),
            username=username or str(claims.get("name") or ""),
            expires_at=exp,
            issued_at=iat if iat is not None else now,
        )

    def expires_within(self, seconds: float, now: float | None = None) -> bool:
        """Whether the access token expires within ``seconds`` from ``now``."""
        now = time.time() if now is None else now
        return self.expires_at - now <= seconds


def refresh_at(*, issued_at: float, expires_at: float, lead: float = 60.0, fraction: float = 0.8) -> float:
    """When to refresh (Unix seconds): ``lead`` seconds before expiry, but never before
    ``fraction`` of the lifetime has passed (so a short-lived token is refreshed at 80% of its
    life, a 15-minute one 60 s before it expires)."""
    lifetime = max(0.0, expires_at - issued_at)
    return max(issued_at + fraction * lifetime, expires_at - lead)
