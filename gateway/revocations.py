"""A live view of ``natter_revocations`` (KV watch): revoked sessions and per-user cut-offs.

auth_service writes ``u.<user_id>`` = ``{"before_ms"}`` (logout of all sessions, a password
change) and ``s.<sid>`` = ``{"user_id"}`` (one session) to ``natter_revocations``, and
``j.<jti>`` = ``{"expires_ms"}`` (a revoked service token, kept as long as the token could live)
to ``natter_token_revocations``. Every gateway watches both buckets, so a revocation reaches all
of them within milliseconds; PROTOCOL.md section 2 allows 2 s.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

from nats.js.kv import KeyValue

logger = logging.getLogger(__name__)

#: Called with (user_id, session_id or None for all sessions) on each new revocation.
OnRevoke = Callable[[str, str | None], None]


class Revocations:
    """In-memory revocation state, fed by :meth:`watch`."""

    def __init__(self) -> None:
        self.user_before_ms: dict[str, int] = {}
        self.sessions: set[str] = set()
        self.tokens: set[str] = set()

    def is_revoked(
        self, user_id: str, session_id: str | None, issued_ms: int, jti: str | None = None
    ) -> bool:
        """True if the session or the token (``jti``) is revoked, or the token predates the
        user's cut-off."""
        if session_id is not None and session_id in self.sessions:
            return True
        if jti is not None and jti in self.tokens:
            return True
        return issued_ms < self.user_before_ms.get(user_id, 0)

    def apply(self, key: str, value: bytes) -> tuple[str, str | None] | None:
        """Record one KV entry; returns ``(user_id, session_id|None)`` to act on, or None."""
        try:
            body = json.loads(value) if value else {}
        except ValueError:
            return None
        kind, _, ident = key.partition(".")
        if kind == "u" and isinstance(body.get("before_ms"), int):
            self.user_before_ms[ident] = max(self.user_before_ms.get(ident, 0), body["before_ms"])
            return ident, None
        if kind == "s" and isinstance(body.get("user_id"), str):
            self.sessions.add(ident)
            return body["user_id"], ident
        if kind == "j":  # a service token: it opens no socket, every later check refuses it
            self.tokens.add(ident)
        return None

    async def watch(self, kv: KeyValue, on_revoke: OnRevoke) -> None:
        """Follow the bucket forever (existing entries first), calling ``on_revoke`` per entry."""
        watcher = await kv.watchall()
        try:
            async for entry in watcher:
                if entry is None or entry.value is None or entry.operation is not None:
                    continue
                target = self.apply(entry.key, entry.value)
                if target is not None:
                    on_revoke(*target)
        finally:
            await watcher.stop()
