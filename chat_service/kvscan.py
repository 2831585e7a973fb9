"""Reading the current values of many KV keys at once.

A KV bucket is a stream ``KV_<bucket>`` with one subject per key (``$KV.<bucket>.<key>``). A
batched direct get with ``multi_last`` (:meth:`DirectReader.multi_last`) returns the last message
of every matching key in one round trip; deleted keys show up as their delete marker and are
skipped. Beyond 1024 keys the server refuses (413) and :func:`scan` falls back to a KV watcher
(an ordered consumer), which streams any number of keys.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from chat_service.directget import DirectReader
from shared.errors import ErrorCode, ProtocolError

logger = logging.getLogger(__name__)

_MARKER_REASON = "Nats-Marker-Reason"


@dataclass(frozen=True, slots=True)
class KvItem:
    """The current value of one key: ``key`` without the bucket prefix, ``revision`` = stream seq."""

    key: str
    value: bytes
    revision: int


async def scan(
    reader: DirectReader, kv: KeyValue, *, bucket: str, pattern: str = ">", timeout: float = 5.0
) -> list[KvItem]:
    """Current (not deleted) values of the keys of ``bucket`` matching ``pattern``, in revision order.

    Args:
        reader: batched direct gets (the ``multi_last`` read).
        kv: the opened bucket (for the watcher fallback).
        bucket: bucket name, e.g. ``natter_presence``.
        pattern: key pattern with NATS wildcards, e.g. ``general.>``.
        timeout: seconds to wait for each reply.

    Raises:
        ProtocolError: ``unavailable`` when JetStream does not answer in time.
    """
    prefix = f"$KV.{bucket}."
    messages = await reader.multi_last(f"KV_{bucket}", prefix + pattern)
    if messages is None:
        logger.info("bucket=%s pattern=%s more than 1024 keys: scanning with a watcher", bucket, pattern)
        return await _scan_watch(kv, pattern, timeout=timeout)
    return [
        KvItem(key=msg.subject[len(prefix) :], value=msg.data, revision=msg.stream_seq)
        for msg in messages
        if not _is_tombstone(msg.headers)
    ]


def _is_tombstone(headers: dict[str, str]) -> bool:
    return headers.get(KV_OP) in (KV_DEL, KV_PURGE) or _MARKER_REASON in headers


async def _scan_watch(kv: KeyValue, pattern: str, *, timeout: float) -> list[KvItem]:
    watcher = await kv.watch(pattern)
    items: list[KvItem] = []
    try:
        while True:
            try:
                entry = await watcher.updates(timeout=timeout)  # type: ignore[no-untyped-call]
            except NatsTimeoutError as error:
                raise ProtocolError(ErrorCode.UNAVAILABLE) from error
            if entry is None:
                break
            if entry.operation in (KV_DEL, KV_PURGE) or entry.value is None:
                continue
            items.append(KvItem(key=entry.key, value=entry.value, revision=entry.revision or 0))
    finally:
        await watcher.stop()  # type: ignore[no-untyped-call]
    items.sort(key=lambda item: item.revision)
    return items


def parse_json_value(item: KvItem) -> dict[str, object]:
    """``item.value`` decoded as a JSON object; ``{}`` when it is not one (never raises)."""
    try:
        value = json.loads(item.value)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
