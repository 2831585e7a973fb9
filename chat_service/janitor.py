"""Sweeping presence keys of dead gateways (docs/subjects.md "KV buckets").

Gateways heartbeat ``natter_gateways[<gateway_id>]`` every 10 s in a bucket with a 30 s TTL, so a
dead gateway's heartbeat vanishes within 30 s. Every ``janitor_interval_seconds`` each chat
replica lists live gateways and presence keys; a gateway seen without heartbeat for at least
``janitor_grace_seconds`` (on this replica's monotonic clock, so clock skew cannot matter) has its
keys deleted with their revision (one replica wins each key) and ``user_left`` announced for
users who have no key left in the room. PROTOCOL.md section 3 promises ``user_left`` within 60 s.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable

import nats.errors
from nats.js.kv import KeyValue

from chat_service.directget import DirectReader
from chat_service.kvscan import parse_json_value, scan
from chat_service.presence import Presence, split_key
from shared import subjects
from shared.errors import ProtocolError

logger = logging.getLogger(__name__)


def dead_gateways(
    present: Iterable[str],
    live: set[str],
    missing_since: dict[str, float],
    *,
    now: float,
    grace: float,
) -> set[str]:
    """Gateways with presence keys that have had no heartbeat for ``grace`` seconds.

    ``missing_since`` (gateway id -> first time seen without heartbeat) is updated in place:
    gateways that came back or hold no keys any more are forgotten.
    """
    missing = set(present) - live
    for gateway in list(missing_since):
        if gateway not in missing:
            del missing_since[gateway]
    dead = set()
    for gateway in missing:
        first = missing_since.setdefault(gateway, now)
        if now - first >= grace:
            dead.add(gateway)
    return dead


class Janitor:
    """The periodic sweep; :meth:`run` is a ServiceApp background task."""

    def __init__(
        self,
        reader: DirectReader,
        presence: Presence,
        gateways: KeyValue,
        *,
        interval: float,
        grace: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._presence = presence
        self._gateways = gateways
        self._interval = interval
        self._grace = grace
        self._clock = clock
        self._missing_since: dict[str, float] = {}

    async def run(self) -> None:
        """Sweep every ``interval`` seconds forever; a failed sweep is logged and retried."""
        while True:
            await asyncio.sleep(self._interval)
            try:
                removed = await self.sweep()
                if removed:
                    logger.info("janitor removed %d presence keys of dead gateways", removed)
            except (ProtocolError, nats.errors.Error) as error:
                logger.warning("janitor sweep failed: %r", error)

    async def sweep(self) -> int:
        """One pass. Returns how many keys this replica removed."""
        live = {item.key for item in await scan(self._reader, self._gateways, bucket=subjects.KV_GATEWAYS)}
        items = await self._presence.all_items()
        parsed = [(item, split_key(item.key)) for item in items]
        dead = dead_gateways(
            (parts[2] for _, parts in parsed if parts is not None),
            live,
            self._missing_since,
            now=self._clock(),
            grace=self._grace,
        )
        removed = 0
        for item, parts in parsed:
            if parts is None or parts[2] not in dead:
                continue
            room, user_id, _gateway = parts
            username = str(parse_json_value(item).get("username") or "")
            try:
                outcome = await self._presence.remove(item, room=room, user_id=user_id, username=username)
                if outcome != "lost":
                    removed += 1
            except (ProtocolError, nats.errors.Error) as error:
                logger.warning("janitor could not remove key=%s: %r", item.key, error)
        return removed
