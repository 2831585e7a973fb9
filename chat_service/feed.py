"""The event feed's room events, relayed from the room logs in ``seq`` order (PROTOCOL.md
section 12; docs/integrations.md).

The room log is the truth (DESIGN.md rule 13), so the feed is derived from it rather than
published beside each write: two replicas writing one room could publish its events to
``EVENTS`` out of order, a relay reading the log cannot. For each shard ``ROOMS_<k>`` one chat
replica at a time, the holder of the lease ``feed-<k>`` in the ``natter_leases`` bucket (a KV
entry that expires 10 s after its holder stops renewing it), follows ``roomlog.<k>.>`` with an
ordered consumer from its checkpoint, turns each entry into its feed event
(:func:`shared.events.envelope`) and publishes it on ``events.<type>`` with ``Nats-Msg-Id`` =
the event id, then moves the checkpoint (``roomview.<k>._feed``: the last relayed stream
sequence). A replica that dies mid-batch leaves the checkpoint behind; the next holder
republishes from there and JetStream drops the repeats (10-minute duplicate window). So each
room event reaches ``EVENTS`` once, in ``seq`` order per room, a few milliseconds after it is
stored (longer after a lease changes hands: up to the lease's 10 s).

Delete means gone, in the feed too. A ``message.created`` or ``message.edited`` event carries
text, so after each batch the relay records where those copies went (one record per batch,
:mod:`chat_service.roomlog.feedrecords`) and then reads the states of the messages they quote:
one deleted meanwhile, it erases the copy itself. The delete's purge
(:mod:`chat_service.roomlog.purge`) reads the records and erases the copies. Each side writes
before it reads the other's write, so whichever comes second sees the first: the text never
outlives the delete in ``EVENTS``.

Cost per batch (up to 200 entries gathered for 5 ms): one ``EVENTS`` publish per event
(pipelined), one record write and one state read when the batch holds text, and a checkpoint
write at most once a second.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass
from typing import Any, Final

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig, DeliverPolicy
from nats.js.kv import KeyValue

from chat_service.roomlog.feedrecords import RECORD_TTL, encode_record, record_subject
from chat_service.roomlog.log import RoomLog
from chat_service.roomlog.state import MessageState
from shared import room_shards, subjects
from shared.events import envelope, feed_subject, room_event_id, room_event_type
from shared.leases import RENEW_EVERY, RETRY_EVERY, Lease, holder_id
from shared.stream_reader import direct_get
from shared.streams import publish_acked

logger = logging.getLogger(__name__)

#: Entries relayed per batch at most (one checkpoint write per batch).
BATCH: Final = 200
#: Seconds a batch waits for more entries once it has one.
GATHER: Final = 0.005
#: Seconds between attempts to take a lease held by another replica (renewals: every
#: :data:`shared.leases.RENEW_EVERY`; the bucket's TTL, 10 s, is what expires an abandoned lease).
RETRY_LEASE: Final = RETRY_EVERY
#: Seconds between checkpoint writes while relaying (a new holder re-relays at most this much;
#: the repeats are dropped by ``Nats-Msg-Id``).
CHECKPOINT_EVERY: Final = 1.0


def checkpoint_subject(shard: int) -> str:
    """``roomview.<k>._feed``: no room name starts with ``_``, so it never meets a room's view."""
    return f"roomview.{shard}._feed"


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One room log entry as a feed event; ``text_of`` is the message whose text it carries
    (its own seq for a message, the target for an edit; None for events without text)."""

    room: str
    seq: int
    type: str
    body: bytes
    text_of: int | None


def feed_event(msg: Msg) -> FeedEvent | None:
    """The feed event of a room log entry (``roomlog.<k>.<room>.m.<parent>`` or ``.e``), None for
    an entry the feed does not carry or cannot read (logged)."""
    parts = msg.subject.split(".")
    if len(parts) < 4 or parts[0] != "roomlog":
        return None
    room = parts[2]
    try:
        data: dict[str, Any] = json.loads(msg.data)
        seq = int(data["seq"])
        kind = data.get("type")
        event_type = room_event_type(kind if isinstance(kind, str) else None, data.get("op"))
        if event_type is None:
            return None
        body = envelope(
            event_type,
            room_event_id(room, seq),
            {**data, "room": room},
            created_at=str(data.get("timestamp") or ""),
        )
    except (ValueError, KeyError, TypeError) as error:
        logger.warning("feed: entry %s of %s skipped: %r", msg.subject, room, error)
        return None
    text_of = None
    if event_type == "message.created":
        text_of = seq
    elif event_type == "message.edited":
        text_of = int(data["target"])
    return FeedEvent(room=room, seq=seq, type=event_type, body=body, text_of=text_of)


class FeedRelay:
    """Relays every shard's room log into ``EVENTS`` (module docstring); :meth:`run` is the
    background task of a chat replica.

    Args:
        nc: the replica's connection.
        log: the room logs (shard count, states, erasing).
        leases: the ``natter_leases`` bucket.
        timeout: seconds to wait for each JetStream answer.
    """

    def __init__(self, nc: Client, log: RoomLog, leases: KeyValue, *, timeout: float = 2.0) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream(timeout=timeout)
        self.log = log
        self.leases = leases
        self.timeout = timeout
        self.holder = holder_id()

    async def run(self) -> None:
        """Try to hold and relay every shard, forever."""
        await asyncio.gather(*(self._shard_loop(shard) for shard in range(self.log.shards)))

    async def _shard_loop(self, shard: int) -> None:
        lease = Lease(self.leases, f"feed-{shard}", holder=self.holder)
        while True:
            if await lease.take():
                try:
                    await self._relay(shard, lease)
                except asyncio.CancelledError:
                    await lease.release()
                    raise
                except Exception:
                    logger.exception("feed: shard %d relay stopped; retrying", shard)
                    await lease.release()  # another replica may take over at once
            await asyncio.sleep(RETRY_LEASE)

    async def _checkpoint(self, shard: int) -> int:
        """The last relayed stream sequence of the shard; a shard never relayed starts at its
        current end (the feed begins when this natter version first runs, not with history)."""
        stream = room_shards.stream_name(shard)
        found = await direct_get(self.nc, stream, last_by_subject=checkpoint_subject(shard))
        if found is not None and found.data:
            return int(found.data)
        info = await self.js.stream_info(stream)
        last = int(info.state.last_seq)
        await self._save_checkpoint(shard, last)
        return last

    async def _save_checkpoint(self, shard: int, stream_seq: int) -> None:
        await publish_acked(
            self.nc,
            checkpoint_subject(shard),
            str(stream_seq).encode(),
            timeout=self.timeout,
            headers={"Nats-Rollup": "sub"},
        )

    async def _relay(self, shard: int, lease: Lease) -> None:
        """Relay ``shard`` from its checkpoint while holding the lease."""
        start = await self._checkpoint(shard)
        logger.info("feed: relaying shard %d from stream seq %d", shard, start + 1)
        sub = await self.js.subscribe(
            f"roomlog.{shard}.>",
            stream=room_shards.stream_name(shard),
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=start + 1),
        )
        loop = asyncio.get_running_loop()
        renew_at = loop.time() + RENEW_EVERY
        saved, relayed, save_at = start, start, loop.time() + CHECKPOINT_EVERY
        try:
            while True:
                batch = await self._gather(sub, until=min(renew_at, save_at))
                if batch:
                    await self.relay_batch(shard, batch)
                    relayed = batch[-1].metadata.sequence.stream
                if relayed != saved and loop.time() >= save_at:
                    await self._save_checkpoint(shard, relayed)
                    saved, save_at = relayed, loop.time() + CHECKPOINT_EVERY
                elif relayed == saved:
                    save_at = loop.time() + CHECKPOINT_EVERY
                if loop.time() >= renew_at:
                    if not await lease.renew():
                        return
                    renew_at = loop.time() + RENEW_EVERY
        finally:
            try:
                await sub.unsubscribe()
            except nats.errors.Error:
                pass

    async def _gather(self, sub: Any, *, until: float) -> list[Msg]:
        """The next entries (up to :data:`BATCH`): waits for the first until ``until`` (loop
        time), then takes what arrives within :data:`GATHER` seconds."""
        loop = asyncio.get_running_loop()
        batch: list[Msg] = []
        wait = max(0.01, until - loop.time())
        while len(batch) < BATCH:
            try:
                batch.append(await sub.next_msg(timeout=wait))
            except nats.errors.TimeoutError:
                break
            wait = GATHER
        return batch

    async def relay_batch(self, shard: int, batch: list[Msg]) -> None:
        """Publish the feed events of ``batch`` (in order, pipelined), record where the copies
        with text went (one record for the batch, :mod:`chat_service.roomlog.feedrecords`), then
        erase any whose message was deleted meanwhile (module docstring).

        Raises:
            nats.errors.Error, shared.errors.ProtocolError: storage did not confirm (the
                caller's retry starts again at the checkpoint; repeats are dropped by
                ``Nats-Msg-Id``).
        """
        stored = [(msg.metadata.sequence.stream, event) for msg in batch if (event := feed_event(msg))]
        if not stored:
            return
        acks = await asyncio.gather(
            *(
                publish_acked(
                    self.nc,
                    feed_subject(event.type),
                    event.body,
                    timeout=self.timeout,
                    headers={"Nats-Msg-Id": room_event_id(event.room, event.seq)},
                )
                for _, event in stored
            )
        )
        texts = [
            (event, stream_seq, ack.seq)
            for (stream_seq, event), ack in zip(stored, acks, strict=True)
            if event.text_of is not None
        ]
        if not texts:
            return
        first, last = batch[0].metadata.sequence.stream, batch[-1].metadata.sequence.stream
        copies = [(event.room, event.seq, stream_seq, events_seq) for event, stream_seq, events_seq in texts]
        await publish_acked(
            self.nc,
            record_subject(shard, first),
            encode_record(first, last, copies),
            timeout=self.timeout,
            headers={"Nats-TTL": RECORD_TTL},
        )
        # Deleted meanwhile? One read of the states of every message the batch quoted.
        state_subjects = {
            self.log.where(event.room).state_subject(event.text_of or 0): (event.room, event.text_of)
            for event, _, _ in texts
        }
        found = await self.log.multi_last(room_shards.stream_name(shard), list(state_subjects))
        deleted = set()
        for subject, msg in found.items():
            try:
                if MessageState.decode(msg.data, revision=msg.stream_seq).deleted:
                    deleted.add(state_subjects[subject])
            except (ValueError, KeyError):
                continue
        gone = [events_seq for event, _, events_seq in texts if (event.room, event.text_of) in deleted]
        if gone:
            await self.log.erase(subjects.EVENTS_STREAM, gone)
            logger.info("feed: shard %d erased %d text copies of deleted messages", shard, len(gone))
