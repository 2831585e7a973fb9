"""Failed-login throttling per username and per client address, shared by all replicas.

OWASP Authentication Cheat Sheet ("Login Throttling"): after ``max_failures`` failed logins for a
username (and 4x that many from one client address) further attempts are refused with
``rate_limited`` and ``retry_after`` *before* the password is checked, until ``window`` seconds
have passed since the last failure. A successful login clears the username's counter.

Counters live in KV ``natter_login_failures`` (bucket TTL 900 s): ``u.<lowercase username>`` and
``ip.<address>``, value ``{"count": N, "last_ms": ms}``. Increments are compare-and-set
(``kv.create`` / ``kv.update(last=revision)``, retried on conflict), so failures counted by
different replicas at the same moment are all counted.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

from nats.js.errors import KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from auth_service.kv_json import encode, get_json
from shared.errors import ErrorCode, ProtocolError

_UNSAFE_RE: Final = re.compile(r"[^A-Za-z0-9_-]")
#: The per-address limit is this many times the per-username limit (a NAT or proxy may carry
#: several honest users).
IP_LIMIT_FACTOR: Final = 4
CAS_ATTEMPTS: Final = 20


def username_key(username: str) -> str:
    """``u.<lowercase username>`` with any character outside ``[A-Za-z0-9_-]`` replaced by ``_``
    (registered names never contain one; the rest must still be a valid KV key)."""
    return f"u.{_UNSAFE_RE.sub('_', username.lower())}"


def ip_key(client_ip: str) -> str:
    """``ip.<client_ip>`` with any character outside ``[A-Za-z0-9_-]`` replaced by ``_``
    (``10.0.0.1`` -> ``ip.10_0_0_1``, ``::1`` -> ``ip.__1``)."""
    return f"ip.{_UNSAFE_RE.sub('_', client_ip)}"


@dataclass(frozen=True, slots=True)
class FailureCount:
    """Failures counted for one key, and when the last one happened (ms since the epoch)."""

    count: int
    last_ms: int


def parse_count(value: dict[str, Any]) -> FailureCount:
    """Decode a stored counter; anything malformed counts as zero failures."""
    count, last_ms = value.get("count"), value.get("last_ms")
    if not isinstance(count, int) or not isinstance(last_ms, int):
        return FailureCount(0, 0)
    return FailureCount(count, last_ms)


def live_count(stored: FailureCount, *, now_ms: int, window_seconds: int) -> int:
    """The count that still applies at ``now_ms``: 0 once ``window_seconds`` passed since the
    last failure."""
    return stored.count if now_ms - stored.last_ms < window_seconds * 1000 else 0


def retry_after_seconds(stored: FailureCount, *, now_ms: int, window_seconds: int) -> int:
    """Whole seconds (>= 1, rounded up) until the window after the last failure ends."""
    remaining_ms = stored.last_ms + window_seconds * 1000 - now_ms
    return max(1, math.ceil(remaining_ms / 1000))


class LoginThrottle:
    """Counts failed logins in ``natter_login_failures`` and refuses throttled attempts."""

    def __init__(self, kv: KeyValue, *, max_failures: int, window_seconds: int) -> None:
        self._kv = kv
        self.max_failures = max_failures
        self.window_seconds = window_seconds

    def _keys(self, username: str, client_ip: str | None) -> list[tuple[str, int]]:
        keys = [(username_key(username), self.max_failures)]
        if client_ip:
            keys.append((ip_key(client_ip), self.max_failures * IP_LIMIT_FACTOR))
        return keys

    async def check(self, username: str, client_ip: str | None, *, now_ms: int) -> None:
        """Refuse the attempt if the username or the address reached its limit.

        Raises:
            ProtocolError: ``rate_limited`` "Too many failed logins" with ``retry_after`` (s).
        """
        retry_after = 0
        for key, limit in self._keys(username, client_ip):
            stored = await get_json(self._kv, key)
            if stored is None:
                continue
            count = parse_count(stored.value)
            if live_count(count, now_ms=now_ms, window_seconds=self.window_seconds) >= limit:
                wait = retry_after_seconds(count, now_ms=now_ms, window_seconds=self.window_seconds)
                retry_after = max(retry_after, wait)
        if retry_after:
            raise ProtocolError(ErrorCode.RATE_LIMITED, "Too many failed logins", retry_after=retry_after)

    async def record_failure(self, username: str, client_ip: str | None, *, now_ms: int) -> None:
        """Add one failure to the username's and the address's counters."""
        for key, _limit in self._keys(username, client_ip):
            await self._increment(key, now_ms=now_ms)

    async def _increment(self, key: str, *, now_ms: int) -> None:
        for _ in range(CAS_ATTEMPTS):
            stored = await get_json(self._kv, key)
            try:
                if stored is None:
                    await self._kv.create(key, encode({"count": 1, "last_ms": now_ms}))
                else:
                    previous = live_count(
                        parse_count(stored.value), now_ms=now_ms, window_seconds=self.window_seconds
                    )
                    value = encode({"count": previous + 1, "last_ms": now_ms})
                    await self._kv.update(key, value, last=stored.revision)
                return
            except KeyWrongLastSequenceError:
                continue  # another replica counted a failure in between: re-read and retry
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def clear(self, username: str) -> None:
        """Forget the username's failures (after a successful login); the address keeps its count."""
        key = username_key(username)
        if await get_json(self._kv, key) is not None:
            await self._kv.delete(key)
