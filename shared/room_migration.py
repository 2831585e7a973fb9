"""Moving a v1 deployment's ``CHAT_MESSAGES`` stream into the sharded room logs, once.

v1 kept every room's messages on ``msgs.<room>`` of one stream. ``natter provision`` (the
operator) copies each room's messages, in order and with their ``seq`` unchanged, to the room's
``roomlog.<k>.<room>.m.0`` (:mod:`shared.room_shards`), each publish checked against the room's
last entry (``Nats-Expected-Last-Subject-Sequence`` on the room's log) and de-duplicated by
``Nats-Msg-Id`` ``v1:<room>:<seq>``. A copy interrupted half way resumes after the room's last
copied seq. When every room is copied the old stream is sealed (read-only, nothing can be lost
by a v1 replica still writing to it) and marked, so later runs skip it; the operator deletes it
when satisfied (docs/operations.md). Messages are copied unchanged: their bodies are v1's, which
is v2's ``message`` data.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from shared import room_shards, subjects
from shared.room_entries import HDR_COUNT, entry_point
from shared.stream_reader import direct_batch, direct_get
from shared.streams import publish_acked

logger = logging.getLogger(__name__)

#: Metadata key set on ``CHAT_MESSAGES`` once every room was copied.
MIGRATED_METADATA: Final = "natter_migrated_to"
BATCH: Final = 500


async def migrate_v1_messages(nc: Client, js: JetStreamContext, *, shards: int, timeout: float = 10.0) -> int:
    """Copy what ``CHAT_MESSAGES`` holds and the room logs lack; returns messages copied.

    Raises:
        nats.errors.Error, nats.js.errors.APIError: NATS trouble (provisioning retries the run).
    """
    try:
        info = await js.stream_info(subjects.MESSAGES_STREAM, subjects_filter=subjects.MESSAGES_SUBJECTS)
    except NotFoundError:
        return 0
    if (info.config.metadata or {}).get(MIGRATED_METADATA):
        return 0
    copied = 0
    for subject in sorted(info.state.subjects or {}):
        room = subject.removeprefix("msgs.")
        if not subjects.is_valid_room(room):
            logger.warning("migration: skipping %s (not a room subject)", subject)
            continue
        copied += await _copy_room(nc, room, shards=shards, timeout=timeout)
    config = replace(
        info.config, sealed=True, metadata={**(info.config.metadata or {}), MIGRATED_METADATA: "ROOMS"}
    )
    await js.update_stream(config)
    logger.info("migration: %s sealed after %d messages copied", subjects.MESSAGES_STREAM, copied)
    return copied


async def _copy_room(nc: Client, room: str, *, shards: int, timeout: float) -> int:
    where = room_shards.layout(room, shards)
    tail = await direct_get(nc, where.stream, last_by_subject=where.log_filter)
    point = entry_point(tail) if tail is not None else None
    last_seq, count, last_stream_seq = (point.seq, point.count, point.stream_seq) if point else (0, 0, 0)
    copied = 0
    start = 1
    while True:
        batch = await direct_batch(
            nc,
            subjects.MESSAGES_STREAM,
            subject=subjects.messages_subject(room),
            start_seq=start,
            batch=BATCH,
        )
        for msg in batch:
            seq = int(msg.headers.get(subjects.HDR_SEQ) or json.loads(msg.data)["seq"])
            if seq <= last_seq:
                continue
            count += 1
            ack = await publish_acked(
                nc,
                where.message_subject(),
                msg.data,
                timeout=timeout,
                headers={
                    subjects.HDR_SEQ: str(seq),
                    HDR_COUNT: str(count),
                    subjects.HDR_USER: msg.headers.get(subjects.HDR_USER, ""),
                    "Nats-Msg-Id": f"v1:{room}:{seq}",
                    "Nats-Expected-Last-Subject-Sequence": str(last_stream_seq),
                    "Nats-Expected-Last-Subject-Sequence-Subject": where.log_filter,
                },
            )
            last_seq, last_stream_seq = seq, ack.seq
            copied += 1
        if len(batch) < BATCH:
            return copied
        start = batch[-1].stream_seq + 1
