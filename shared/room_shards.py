"""Where a room's log lives: N shard streams ``ROOMS_<k>`` chosen by a stable hash of the room
name (DESIGN.md rules 13 and 17; docs/subjects.md "Room logs").

Shard ``k`` of ``N`` is one stream capturing ``roomlog.<k>.>`` (the log: the truth) and
``roomview.<k>.>`` (what is derived from it). For a room ``r`` in shard ``k``:

===================================  =========================================================
``roomlog.<k>.<r>.m.0``              messages that are not replies
``roomlog.<k>.<r>.m.<parent seq>``   replies to message ``parent`` (its thread)
``roomlog.<k>.<r>.e``                every other room event (edit, delete, reaction, member)
``roomview.<k>.<r>.s.<seq>``         current state of message ``seq`` (rollup: one per message)
``roomview.<k>.<r>.t.<seq>``         tombstone: the redacted form of a purged log entry; a
                                     purged message also has one per index it is read by:
                                     ``.n.<count>`` and, for a reply, ``.r.<parent>.<count>``
``roomview.<k>.<r>.d.<key>``         idempotency record of one request (per-message TTL 10 min)
``roomview.<k>.<r>.p.<seq>``         purge still to be done for deleted message ``seq``
===================================  =========================================================

The room's log is everything on ``roomlog.<k>.<r>.>``: one room ``seq`` counts every entry on
it, kept contiguous by publishing with ``Nats-Expected-Last-Subject-Sequence`` checked against
that wildcard (``Nats-Expected-Last-Subject-Sequence-Subject``, nats-server 2.11+). Messages
alone are ``roomlog.<k>.<r>.m.*``, so a page of 50 messages never reads reactions. An event and
the state it changes are written in one atomic batch (``allow_atomic``, nats-server 2.12+,
ADR-50), so the view can never disagree with the log.

The shard count is fixed when the streams are provisioned and recorded in every shard's stream
metadata (:data:`SHARDS_METADATA`); services read it from ``ROOMS_0``. Changing it moves rooms
between streams: a migration (docs/scaling.md), never a setting flip.
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Final

from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from shared.streams import DAY, DEDUP_WINDOW
from shared.subjects import check_room

STREAM_PREFIX: Final = "ROOMS_"
#: Most shards a deployment may have: the NATS permissions name each shard stream
#: (:mod:`shared.nats_auth`; a permission cannot match part of a stream name).
MAX_SHARDS: Final = 16
#: Stream metadata key holding the shard count, on every ``ROOMS_<k>``.
SHARDS_METADATA: Final = "natter_room_shards"


#: Publish permissions of the room logs and their views (every shard).
LOG_SUBJECTS: Final = "roomlog.>"
VIEW_SUBJECTS: Final = "roomview.>"


def stream_name(shard: int) -> str:
    """``ROOMS_<shard>``."""
    return f"{STREAM_PREFIX}{shard}"


def shard_of(room: str, shards: int) -> int:
    """The shard of ``room``: CRC-32 of its name modulo ``shards`` (stable across processes and
    Python versions, unlike ``hash()``)."""
    return zlib.crc32(room.encode()) % shards


def request_key(user_id: str, client_msg_id: str) -> str:
    """A subject-safe token for one user's ``client_msg_id`` (any characters): 32 hex digits."""
    return hashlib.sha256(f"{user_id}\x00{client_msg_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class RoomLayout:
    """The stream and subjects of one room (see the module docstring)."""

    room: str
    shard: int

    @property
    def stream(self) -> str:
        """``ROOMS_<k>``."""
        return stream_name(self.shard)

    @property
    def _log(self) -> str:
        return f"roomlog.{self.shard}.{self.room}"

    @property
    def _view(self) -> str:
        return f"roomview.{self.shard}.{self.room}"

    @property
    def log_filter(self) -> str:
        """Every entry of the room's log (the room ``seq`` space)."""
        return f"{self._log}.>"

    @property
    def messages_filter(self) -> str:
        """Every message (and reply) of the room."""
        return f"{self._log}.m.*"

    def message_subject(self, parent: int | None = None) -> str:
        """Where a message goes: ``.m.0``, or ``.m.<parent>`` for a reply (its thread)."""
        return f"{self._log}.m.{parent or 0}"

    @property
    def event_subject(self) -> str:
        """Where edits, deletes, reactions and member events go."""
        return f"{self._log}.e"

    def state_subject(self, seq: int) -> str:
        """The current state of message ``seq`` (one message per subject, rollup)."""
        return f"{self._view}.s.{seq}"

    def tombstone_subject(self, seq: int) -> str:
        """The redacted form of purged log entry ``seq``."""
        return f"{self._view}.t.{seq}"

    @property
    def tombstones_filter(self) -> str:
        """Every tombstone by seq of the room."""
        return f"{self._view}.t.*"

    def count_tombstone_subject(self, count: int) -> str:
        """The tombstone of the purged message with message count ``count`` (pages by count)."""
        return f"{self._view}.n.{count}"

    def thread_tombstone_subject(self, parent: int, count: int) -> str:
        """The tombstone of the purged reply number ``count`` to ``parent`` (thread pages)."""
        return f"{self._view}.r.{parent}.{count}"

    def request_subject(self, key: str) -> str:
        """The idempotency record of one request (:func:`request_key`)."""
        return f"{self._view}.d.{key}"

    def purge_subject(self, seq: int) -> str:
        """The pending purge of deleted message ``seq``."""
        return f"{self._view}.p.{seq}"


def layout(room: str, shards: int) -> RoomLayout:
    """The :class:`RoomLayout` of ``room`` among ``shards`` shards.

    Raises:
        ProtocolError: ``invalid_room`` for a name that is not a valid room.
    """
    name = check_room(room)
    return RoomLayout(room=name, shard=shard_of(name, shards))


def pending_purges_filter(shard: int) -> str:
    """Every pending purge of every room in ``shard``."""
    return f"roomview.{shard}.*.p.*"


def stream_config(shard: int, *, shards: int, replicas: int, max_age_days: float) -> StreamConfig:
    """The configuration of ``ROOMS_<shard>``.

    ``allow_atomic`` (event + state in one batch), ``allow_rollup_hdrs`` (state snapshots keep
    only their latest), ``allow_msg_ttl`` (idempotency records expire after 10 minutes),
    ``allow_direct`` (every read is a direct get), de-duplication on ``Nats-Msg-Id`` for
    :data:`DEDUP_WINDOW`; deleting single messages stays allowed: that is how deleted text is
    purged (``STREAM.MSG.DELETE`` with erase). ``max_age_days`` 0 keeps the log forever.
    """
    return StreamConfig(
        name=stream_name(shard),
        subjects=[f"roomlog.{shard}.>", f"roomview.{shard}.>"],
        storage=StorageType.FILE,
        num_replicas=replicas,
        duplicate_window=DEDUP_WINDOW,
        max_age=max_age_days * DAY if max_age_days > 0 else None,
        discard=DiscardPolicy.OLD,
        allow_direct=True,
        allow_atomic=True,
        allow_rollup_hdrs=True,
        allow_msg_ttl=True,
        metadata={SHARDS_METADATA: str(shards)},
    )
