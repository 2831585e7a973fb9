"""Login and registration throttling that slows attackers without locking anyone out.

OWASP Authentication Cheat Sheet ("Login Throttling", "Account Lockout"): a hard lockout after N
failures lets anyone lock a victim out by failing on purpose. natter instead counts failures in
three places and turns each count into a *progressive delay*, never longer than
:data:`MAX_DELAY_SECONDS` (60 s):

* ``ua.<user>.<address>``: failures of one username from one client address. After
  ``pair_free`` (5) of them, the next attempt must wait 1, 2, 4 ... 60 s after the last failure.
* ``ip.<address>``: failures from one address, any username (password spraying). After
  ``address_free`` (50).
* ``u.<user>``: failures of one username from anywhere (a distributed guesser). After
  ``user_free`` (10). An address that logged in as that user successfully within 30 days
  (``natter_login_known``) is exempt from this one, so an attacker spending the username's
  slots cannot keep its owner out.

A throttled attempt is refused with ``rate_limited`` and ``retry_after`` *before* the password is
checked, and is not counted (only checked failures are). A count is forgotten once
``window_seconds`` pass without a failure; a successful login clears the username's and the
pair's counts. So at any moment the right password gets through after at most a minute, while a
guesser gets one try a minute per username, per address and per (username, address).

Registration is throttled per address with a token bucket (``reg.<address>``): ``register_burst``
at once, then ``register_per_second``.

Counters live in KV ``natter_login_failures`` (bucket TTL 900 s); every update is
compare-and-set (``kv.create`` / ``kv.update(last=revision)``, retried), so replicas never lose
a count.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
from dataclasses import dataclass
from typing import Any, Final

from nats.js.kv import KeyValue

from auth_service.kv_json import LOST_RACE, encode, get_json
from shared.errors import ErrorCode, ProtocolError

_UNSAFE_RE: Final = re.compile(r"[^A-Za-z0-9_-]")
CAS_ATTEMPTS: Final = 20
#: Seconds per lost compare-and-set of the upper bound of the jittered pause before re-reading.
LOST_RACE_PAUSE: Final = 0.002


async def lost_race_pause(attempt: int) -> None:
    """Pause before re-reading a counter whose compare-and-set lost (``attempt`` from 0): up to
    :data:`LOST_RACE_PAUSE` x (attempt + 1) seconds, jittered. Concurrent writers (people
    registering at once behind one address) spread out instead of colliding again, and on a
    cluster a read answered by a replica that had not yet applied the winning write (KV gets are
    direct gets, which any replica may answer) is not repeated at once. Without the pause a CI
    run saw one of six registrations made at once on a 3-node cluster refused "Too many
    registrations" (all 20 attempts lost) with the address's bucket nearly full."""
    await asyncio.sleep(random.uniform(0, LOST_RACE_PAUSE * (attempt + 1)))


#: The longest any single counter makes an attempt wait (seconds).
MAX_DELAY_SECONDS: Final = 60


def _safe(text: str) -> str:
    return _UNSAFE_RE.sub("_", text)


def username_key(username: str) -> str:
    """``u.<lowercase username>`` with any character outside ``[A-Za-z0-9_-]`` replaced by ``_``
    (registered names never contain one; the rest must still be a valid KV key)."""
    return f"u.{_safe(username.lower())}"


def ip_key(client_ip: str) -> str:
    """``ip.<client_ip>`` with any character outside ``[A-Za-z0-9_-]`` replaced by ``_``
    (``10.0.0.1`` -> ``ip.10_0_0_1``, ``::1`` -> ``ip.__1``)."""
    return f"ip.{_safe(client_ip)}"


def pair_key(username: str, client_ip: str) -> str:
    """``ua.<lowercase username>.<client_ip>``, both sanitised like the other keys."""
    return f"ua.{_safe(username.lower())}.{_safe(client_ip)}"


def known_key(username: str, client_ip: str) -> str:
    """``<lowercase username>.<client_ip>`` in ``natter_login_known``."""
    return f"{_safe(username.lower())}.{_safe(client_ip)}"


def register_key(client_ip: str) -> str:
    """``reg.<client_ip>``: the address's registration token bucket."""
    return f"reg.{_safe(client_ip)}"


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


def delay_seconds(count: int, *, free: int) -> int:
    """Seconds an attempt must wait after the last failure once ``count`` failures are live:
    0 up to ``free``, then 1, 2, 4, ... capped at :data:`MAX_DELAY_SECONDS`."""
    if count < free:
        return 0
    return int(min(MAX_DELAY_SECONDS, 2 ** min(count - free, 16)))


def wait_seconds(stored: FailureCount, *, now_ms: int, window_seconds: int, free: int) -> int:
    """Whole seconds (rounded up) this attempt must still wait because of ``stored``; 0 if none."""
    delay = delay_seconds(live_count(stored, now_ms=now_ms, window_seconds=window_seconds), free=free)
    if delay == 0:
        return 0
    remaining_ms = stored.last_ms + delay * 1000 - now_ms
    return max(0, math.ceil(remaining_ms / 1000))


@dataclass(frozen=True, slots=True)
class Bucket:
    """A registration token bucket: ``tokens`` left at ``stamp_ms``."""

    tokens: float
    stamp_ms: int


def take_token(stored: Bucket | None, *, now_ms: int, burst: int, per_second: float) -> tuple[Bucket, float]:
    """Refill ``stored`` up to ``now_ms`` and take one token.

    Returns:
        ``(new state, seconds to wait)``: 0 when a token was taken, else the time until one is
        available (the state is then only refilled).
    """
    tokens = float(burst) if stored is None else stored.tokens
    if stored is not None:
        tokens = min(float(burst), tokens + max(0, now_ms - stored.stamp_ms) / 1000 * per_second)
        # Concurrent requests stamp the bucket with their own start times, not in order: a
        # request that started earlier must not move the stamp back, or the next one would
        # refill the same interval twice (over-admitting under exactly the flood it limits).
        now_ms = max(now_ms, stored.stamp_ms)
    if tokens >= 1.0:
        return Bucket(tokens - 1.0, now_ms), 0.0
    return Bucket(tokens, now_ms), (1.0 - tokens) / per_second


class LoginThrottle:
    """The three failure counters and the registration bucket (module docstring).

    Args:
        kv: ``natter_login_failures``.
        known: ``natter_login_known`` (addresses that logged in as a user, TTL 30 days).
        pair_free, address_free, user_free: failures before each counter starts to delay.
        window_seconds: a counter is forgotten after this long without a failure (<= 900).
        register_burst, register_per_second: the registration bucket per address.
    """

    def __init__(
        self,
        kv: KeyValue,
        known: KeyValue,
        *,
        pair_free: int = 5,
        address_free: int = 50,
        user_free: int = 10,
        window_seconds: int = 900,
        register_burst: int = 100,
        register_per_second: float = 2.0,
    ) -> None:
        self._kv = kv
        self._known = known
        self.pair_free = pair_free
        self.address_free = address_free
        self.user_free = user_free
        self.window_seconds = window_seconds
        self.register_burst = register_burst
        self.register_per_second = register_per_second

    async def _is_known(self, username: str, client_ip: str | None) -> bool:
        if not client_ip:
            return False
        return await get_json(self._known, known_key(username, client_ip)) is not None

    def _counters(self, username: str, client_ip: str | None) -> list[tuple[str, int]]:
        keys = [(username_key(username), self.user_free)]
        if client_ip:
            keys += [(pair_key(username, client_ip), self.pair_free), (ip_key(client_ip), self.address_free)]
        return keys

    async def check(self, username: str, client_ip: str | None, *, now_ms: int) -> None:
        """Refuse the attempt while any counter's delay runs.

        Raises:
            ProtocolError: ``rate_limited`` "Too many failed logins" with ``retry_after`` (whole
                seconds, at most 60).
        """
        exempt = await self._is_known(username, client_ip)
        retry_after = 0
        for key, free in self._counters(username, client_ip):
            if exempt and key == username_key(username):
                continue
            stored = await get_json(self._kv, key)
            if stored is None:
                continue
            wait = wait_seconds(
                parse_count(stored.value), now_ms=now_ms, window_seconds=self.window_seconds, free=free
            )
            retry_after = max(retry_after, wait)
        if retry_after:
            raise ProtocolError(ErrorCode.RATE_LIMITED, "Too many failed logins", retry_after=retry_after)

    async def record_failure(self, username: str, client_ip: str | None, *, now_ms: int) -> None:
        """Add one failure to the username's, the pair's and the address's counters."""
        for key, _free in self._counters(username, client_ip):
            await self._increment(key, now_ms=now_ms)

    async def _increment(self, key: str, *, now_ms: int) -> None:
        for attempt in range(CAS_ATTEMPTS):
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
            except LOST_RACE:  # another replica counted a failure in between: re-read and retry
                await lost_race_pause(attempt)
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    async def record_success(self, username: str, client_ip: str | None, *, now_ms: int) -> None:
        """Forget the username's and the pair's failures (the address keeps its count) and
        remember the address as known for this user."""
        keys = [username_key(username)]
        if client_ip:
            keys.append(pair_key(username, client_ip))
            await self._known.put(known_key(username, client_ip), encode({"ms": now_ms}))
        for key in keys:
            if await get_json(self._kv, key) is not None:
                await self._kv.delete(key)

    async def check_registration(self, client_ip: str | None, *, now_ms: int) -> None:
        """Take a token of the address's registration bucket.

        Raises:
            ProtocolError: ``rate_limited`` "Too many registrations" with ``retry_after`` (also
                when :data:`CAS_ATTEMPTS` concurrent writers kept winning the bucket).
        """
        if not client_ip:
            return
        key = register_key(client_ip)
        for attempt in range(CAS_ATTEMPTS):
            stored = await get_json(self._kv, key)
            state = None
            if stored is not None:
                tokens, stamp = stored.value.get("tokens"), stored.value.get("stamp_ms")
                if isinstance(tokens, int | float) and isinstance(stamp, int):
                    state = Bucket(float(tokens), stamp)
            bucket, wait = take_token(
                state, now_ms=now_ms, burst=self.register_burst, per_second=self.register_per_second
            )
            value = encode({"tokens": round(bucket.tokens, 6), "stamp_ms": bucket.stamp_ms})
            try:
                if stored is None:
                    await self._kv.create(key, value)
                else:
                    await self._kv.update(key, value, last=stored.revision)
            except LOST_RACE:
                await lost_race_pause(attempt)
                continue
            if wait > 0:
                raise ProtocolError(
                    ErrorCode.RATE_LIMITED, "Too many registrations", retry_after=max(1, math.ceil(wait))
                )
            return
        # So many registrations from this address at once that the bucket kept changing under
        # us: that is the flood this throttle exists for.
        raise ProtocolError(ErrorCode.RATE_LIMITED, "Too many registrations", retry_after=1)
