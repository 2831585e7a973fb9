"""Group commit of a hot room's messages (chat_service.roomlog.log, issue 12 item 3), against a
real nats-server: concurrent sends into one room are stored as atomic batches, and every
guarantee of one-at-a-time appends still holds: contiguous seqs, exactly once per
``client_msg_id`` (retries inside a group included), deliveries in seq order, and two replicas
writing the same room at once never store the same seq twice.

The RoomLog here is chat_service's own class on its own NATS connection, as a chat replica
builds it (chat_service.components); the only addition is a count of the writes it makes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.client import Client

from chat_service.directget import DirectReader
from chat_service.roomlog import bodies
from chat_service.roomlog.log import MAX_GROUP, Appended, Draft, RoomLog
from shared import room_shards, subjects
from shared.provisioning import room_shard_count
from shared.room_entries import entry_point
from shared.stream_reader import direct_batch
from tests.conftest import NatsServer
from tests.support import unique_name


class CountingLog(RoomLog):
    """chat_service's RoomLog, counting the storage writes it makes (batches and publishes)."""

    writes = 0

    async def _publish_batch(self, *args: Any, **kwargs: Any) -> int:
        self.writes += 1
        return await super()._publish_batch(*args, **kwargs)


async def shards(nc: Client) -> int:
    count = await room_shard_count(nc.jetstream())
    assert count is not None, "the session's nats-server is provisioned"
    return count


async def new_log(nc: Client) -> CountingLog:
    return CountingLog(nc, DirectReader(nc), shards=await shards(nc))


async def send(
    log: RoomLog, room: str, user: str, text: str, cmid: str | None, delivered: list[int]
) -> Appended:
    """What chat_service's ``chat.send`` does for a plain message, minus the room checks."""

    async def prepare(seq: int, count: int) -> Draft:
        body = bodies.message_body(
            room=room, seq=seq, user_id=user, username=user, message=text, timestamp="t", client_msg_id=cmid
        )
        return Draft(subject=log.where(room).message_subject(), body=body)

    async def after_store(stored: Appended) -> None:
        delivered.append(stored.seq)

    stored = await log.append(
        room,
        user_id=user,
        client_msg_id=cmid,
        prepare=prepare,
        after_store=after_store,
        batch=False,
        message=True,
    )
    assert stored is not None
    return stored


async def stored_seqs(nc: Client, room: str) -> list[int]:
    """``Natter-Seq`` of every entry of the room's log, in stream order."""
    where = room_shards.layout(room, await shards(nc))
    found: list[int] = []
    start = 1
    while True:
        msgs = await direct_batch(nc, where.stream, subject=where.log_filter, start_seq=start, batch=500)
        if not msgs:
            return found
        found.extend(int(m.headers[subjects.HDR_SEQ]) for m in msgs)
        start = msgs[-1].stream_seq + 1


async def test_concurrent_sends_into_one_room_are_batched_and_contiguous(nc: Client) -> None:
    log = await new_log(nc)
    room = unique_name("hot")
    delivered: list[int] = []
    count = 300
    results = await asyncio.gather(
        *(send(log, room, f"u{n % 3}", f"message {n}", f"c{n}", delivered) for n in range(count))
    )
    seqs = sorted(r.seq for r in results)
    assert seqs == list(range(1, count + 1))
    assert not any(r.duplicate for r in results)
    assert delivered == list(range(1, count + 1))  # after_store ran once each, in seq order
    assert await stored_seqs(nc, room) == list(range(1, count + 1))
    # Batches: far fewer storage writes than messages (a lone message is a plain publish and
    # is not counted here, so every counted write held at least two messages).
    assert 0 < log.writes <= count // 2, log.writes
    tail = await log.tail(room)
    assert tail is not None and (tail.seq, tail.count) == (count, count)


async def test_a_retry_inside_a_group_gets_its_original_and_the_rest_are_stored_once(nc: Client) -> None:
    log = await new_log(nc)
    room = unique_name("hot")
    delivered: list[int] = []
    first = [await send(log, room, "alice", f"early {n}", f"e{n}", delivered) for n in range(5)]
    assert [r.seq for r in first] == [1, 2, 3, 4, 5]
    # 5 retries of those (same user, same client_msg_id) mixed with 45 new messages.
    mixed = [("alice", f"e{n}") for n in range(5)] + [("bob", f"n{n}") for n in range(45)]
    mixed = mixed[::2] + mixed[1::2]
    results = await asyncio.gather(*(send(log, room, user, "x", cmid, delivered) for user, cmid in mixed))
    by_cmid = {cmid: r for (_, cmid), r in zip(mixed, results, strict=True)}
    for n in range(5):
        retry = by_cmid[f"e{n}"]
        assert retry.duplicate and retry.seq == n + 1
        assert bodies.decode(retry.data)["message"] == f"early {n}"
    fresh = sorted(by_cmid[f"n{n}"].seq for n in range(45))
    assert fresh == list(range(6, 51))
    assert await stored_seqs(nc, room) == list(range(1, 51))


async def test_two_replicas_writing_one_room_at_once_never_share_a_seq(nats_server: NatsServer) -> None:
    one, two = await nats.connect(nats_server.url), await nats.connect(nats_server.url)
    try:
        logs = [await new_log(one), await new_log(two)]
        room = unique_name("hot")
        delivered: list[list[int]] = [[], []]
        results = await asyncio.gather(
            *(send(logs[n % 2], room, f"u{n % 5}", f"m{n}", f"c{n}", delivered[n % 2]) for n in range(240))
        )
        assert sorted(r.seq for r in results) == list(range(1, 241))
        assert await stored_seqs(one, room) == list(range(1, 241))
        # Each replica delivered its own messages once each, in increasing seq order.
        for own in delivered:
            assert own == sorted(set(own)) and len(own) == 120
        assert sorted(delivered[0] + delivered[1]) == list(range(1, 241))
    finally:
        await one.close()
        await two.close()


async def test_a_group_never_exceeds_max_group(nc: Client) -> None:
    log = await new_log(nc)
    room = unique_name("hot")
    delivered: list[int] = []
    count = MAX_GROUP * 3
    await asyncio.gather(*(send(log, room, "u", f"m{n}", f"c{n}", delivered) for n in range(count)))
    where = log.where(room)
    msgs = await direct_batch(nc, where.stream, subject=where.log_filter, start_seq=1, batch=count)
    assert [entry_point(m).seq for m in msgs] == list(range(1, count + 1))
    assert log.writes >= count // MAX_GROUP
