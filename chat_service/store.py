"""Room messages in the ``CHAT_MESSAGES`` stream: append with a per-room contiguous ``seq``,
the last message of a room, and ranges by room ``seq`` (docs/subjects.md "Streams").

Append (DESIGN.md rules 6, 7, 11): the room's next ``seq`` is the last stored message's
``Natter-Seq`` + 1, and the publish carries ``Nats-Expected-Last-Subject-Sequence`` = the stream
sequence of that last message, so storage refuses (10071 "wrong last sequence") a write based on
a stale view: two replicas can never store the same room seq, and seqs have no gaps. The publish
also carries ``Nats-Msg-Id`` = ``<room>:<user_id>:<client_msg_id>``; this nats-server checks the
expected sequence *before* de-duplication, and with a correct expected sequence a repeated id is
answered ``duplicate: true`` with the original's stream sequence, whose body is then re-read.
A PubAck timeout means "unknown": the same id is published again (bounded), then ``unavailable``.

Within one replica, sends to one room are serialised by a per-room lock (no self-inflicted
10071 races) and the caller's ``after_store`` runs under that lock, so this replica publishes a
room's deliveries in ``seq`` order.

Reads of seq ranges are :mod:`chat_service.ranges`; both sides share the replica's per-room
state (:mod:`chat_service.roomstate`): every message this replica stores becomes a checkpoint
that makes later reads of it cheap.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Final

import nats.errors
from nats.aio.client import Client
from nats.js.errors import APIError, NoStreamResponseError, ServiceUnavailableError

from chat_service.directget import DirectReader
from chat_service.ranges import RangeReader
from chat_service.roomstate import RoomStates
from chat_service.seqindex import Point
from chat_service.stored import Appended, StoredMessage, room_seq_of
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.stream_reader import StoredMsg, direct_get
from shared.streams import publish_acked

logger = logging.getLogger(__name__)

STREAM: Final = subjects.MESSAGES_STREAM
#: JetStream error codes "wrong last sequence" (Nats-Expected-Last-Subject-Sequence mismatch):
#: 10071 from a single server, 10164 from a clustered stream (nats.py ``js/kv.py`` accepts both).
WRONG_LAST_SEQUENCE: Final = frozenset({10071, 10164})
#: Publishes in a row whose outcome is unknown (PubAck timeout) before giving up.
MAX_UNKNOWN_OUTCOMES: Final = 3
HDR_MSG_ID: Final = "Nats-Msg-Id"
HDR_EXPECTED_LAST_SUBJECT_SEQ: Final = "Nats-Expected-Last-Subject-Sequence"


class MessageStore:
    """Append and read room messages; one instance per replica.

    Args:
        nc: the NATS connection (publishes go through its request mux, shared.streams).
        reader: batched direct gets on ``nc`` (started).
        publish_timeout: seconds to wait for one PubAck.
        attempts: bound on publish attempts per message.
        max_rooms: rooms whose state (lock, tail, checkpoints) is cached; least recent evicted.
    """

    def __init__(
        self,
        nc: Client,
        reader: DirectReader,
        *,
        publish_timeout: float = 2.0,
        attempts: int = 50,
        max_rooms: int = 10_000,
    ) -> None:
        self._nc = nc
        self._reader = reader
        self._publish_timeout = publish_timeout
        self._attempts = attempts
        self._states = RoomStates(max_rooms)
        self._ranges = RangeReader(nc, reader, self._states, self.last)

    # --- reading ---------------------------------------------------------------------------

    async def read(
        self, room: str, first: int, last: int, *, tail: Point, limit: int | None = None
    ) -> list[StoredMessage]:
        """Stored messages with ``first <= seq <= last``, oldest first, at most ``limit``
        (:meth:`chat_service.ranges.RangeReader.read`; ``tail`` comes from :meth:`last`).

        Raises:
            ProtocolError: ``unavailable`` (storage did not answer), ``internal``.
        """
        return await self._ranges.read(room, first, last, tail=tail, limit=limit)

    async def last(self, room: str) -> Point | None:
        """The room's last stored message, ``None`` for an empty room (one direct get).

        Raises:
            ProtocolError: ``unavailable``.
        """
        msg = await direct_get(self._nc, STREAM, last_by_subject=subjects.messages_subject(room))
        point = None if msg is None else Point(room_seq_of(msg), msg.stream_seq)
        self._states.get(room).learn_tail(point)
        return point

    async def last_many(self, rooms: list[str], *, concurrency: int = 16) -> dict[str, Point | None]:
        """:meth:`last` for several rooms: one batched read of ``msgs.>`` when at most 1024 rooms
        have messages, else one direct get per room (``concurrency`` at a time)."""
        if len(rooms) > 1:
            found = await self._reader.multi_last(STREAM, subjects.MESSAGES_SUBJECTS)
            if found is not None:
                by_subject = {msg.subject: msg for msg in found}
                out: dict[str, Point | None] = {}
                for room in rooms:
                    msg = by_subject.get(subjects.messages_subject(room))
                    out[room] = None if msg is None else Point(room_seq_of(msg), msg.stream_seq)
                return out
        limiter = asyncio.Semaphore(concurrency)

        async def one(room: str) -> Point | None:
            async with limiter:
                return await self.last(room)

        points = await asyncio.gather(*(one(room) for room in rooms))
        return dict(zip(rooms, points, strict=True))

    async def _read_one(self, stream_seq: int) -> StoredMsg:
        """The message at ``stream_seq`` (retrying briefly: a replica may lag on a cluster)."""
        for attempt in range(5):
            msg = await direct_get(self._nc, STREAM, seq=stream_seq)
            if msg is not None:
                return msg
            await asyncio.sleep(0.05 * (attempt + 1))
        raise ProtocolError(ErrorCode.UNAVAILABLE)

    # --- appending -------------------------------------------------------------------------

    async def append(
        self,
        room: str,
        *,
        user_id: str,
        client_msg_id: str | None,
        build: Callable[[int], bytes],
        after_store: Callable[[Appended], Awaitable[None]],
        seq_floor: int = 0,
    ) -> Appended:
        """Store one message with the room's next ``seq``, exactly once per message id.

        Args:
            room: the room (valid name).
            user_id: the sender (header ``Natter-User``, part of the message id).
            client_msg_id: the idempotency key; ``None`` gets a fresh server id (no dedup
                across requests, but retries within this call stay idempotent).
            build: ``build(seq)`` returns the body to store for that seq (called per attempt).
            after_store: awaited under the room lock with the result (new or duplicate), so
                deliveries from this replica leave in seq order.
            seq_floor: the room's last seq known to the registry, used only when no message is
                stored (all passed retention), so that seqs never restart
                (:mod:`chat_service.floors`).

        Returns:
            The stored message; for a duplicate, the original one as stored.

        Raises:
            ProtocolError: ``unavailable`` when storage cannot confirm the write.
        """
        subject = subjects.messages_subject(room)
        msg_id = f"{room}:{user_id}:{client_msg_id or uuid.uuid4().hex}"
        state = self._states.get(room)
        async with state.lock:
            tail = state.tail if state.tail_known else await self.last(room)
            unknown = 0
            for _ in range(self._attempts):
                seq = (tail.room_seq if tail else seq_floor) + 1
                data = build(seq)
                headers = {
                    subjects.HDR_SEQ: str(seq),
                    subjects.HDR_USER: user_id,
                    HDR_MSG_ID: msg_id,
                    HDR_EXPECTED_LAST_SUBJECT_SEQ: str(tail.stream_seq if tail else 0),
                }
                try:
                    ack = await publish_acked(
                        self._nc, subject, data, timeout=self._publish_timeout, headers=headers
                    )
                except APIError as error:
                    if error.err_code in WRONG_LAST_SEQUENCE:
                        tail = await self.last(room)  # another replica wrote: re-read and retry
                        continue
                    if isinstance(error, ServiceUnavailableError):
                        unknown += 1
                        if unknown >= MAX_UNKNOWN_OUTCOMES:
                            break
                        await asyncio.sleep(0.1 * unknown)
                        continue
                    logger.error("room=%s publish refused: %s", room, error)
                    raise ProtocolError(ErrorCode.INTERNAL) from error
                except NoStreamResponseError:
                    # Nothing stores msgs.>: the stream is gone (only the operator may create
                    # it again, shared.provisioning). Nothing was stored.
                    logger.error("room=%s stream %s missing: run `natter provision`", room, STREAM)
                    break
                except nats.errors.Error:  # PubAck timeout, connection trouble: outcome unknown
                    unknown += 1
                    logger.warning("room=%s publish outcome unknown (attempt %d)", room, unknown)
                    if unknown >= MAX_UNKNOWN_OUTCOMES:
                        break
                    continue
                if ack.duplicate:
                    original = await self._read_one(ack.seq)
                    result = Appended(
                        seq=room_seq_of(original), stream_seq=ack.seq, data=original.data, duplicate=True
                    )
                else:
                    state.learn_tail(Point(seq, ack.seq))
                    result = Appended(seq=seq, stream_seq=ack.seq, data=data, duplicate=False)
                await after_store(result)
                return result
            state.tail_known = False
            logger.warning("room=%s message not confirmed after bounded retries", room)
            raise ProtocolError(ErrorCode.UNAVAILABLE)
