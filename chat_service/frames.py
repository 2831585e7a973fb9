"""Client frames chat_service produces, encoded once as compact JSON bytes (DESIGN.md rule 4).

Replies carry no ``id`` (the gateway splices it in, ``shared.internal.with_request_id``).
Stored bodies (the ``data`` object of each room event's frame, :mod:`chat_service.roomlog.bodies`)
are spliced into ``joined`` and ``history`` frames as bytes. Field order follows PROTOCOL.md sections 3 and 4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from chat_service.roomlog.bodies import message_id, seq_of_body
from shared.protocol import dumps, encode_frame


@dataclass(frozen=True, slots=True)
class OnlineUser:
    """One user present in a room: ``{"user_id","username"}`` in frames."""

    user_id: str
    username: str

    def as_json(self) -> dict[str, str]:
        """``{"user_id": .., "username": ..}``."""
        return {"user_id": self.user_id, "username": self.username}


def _str(value: str) -> bytes:
    return dumps(value).encode()


def _messages(messages: Sequence[bytes]) -> bytes:
    return b"[" + b",".join(messages) + b"]"


def _online(online: Sequence[OnlineUser]) -> bytes:
    return dumps([user.as_json() for user in online]).encode()


def _bool(value: bool) -> bytes:
    return b"true" if value else b"false"


def seq_of(data: bytes) -> int:
    """The ``seq`` of a stored body (:func:`chat_service.roomlog.bodies.seq_of_body`)."""
    return seq_of_body(data)


def ack_frame(*, room: str, client_msg_id: str | None, seq: int, timestamp: str) -> bytes:
    """``{"type":"ack","room","client_msg_id","seq","message_id","timestamp"}`` (no ``id``)."""
    return encode_frame(
        "ack",
        room=room,
        client_msg_id=client_msg_id,
        seq=seq,
        message_id=message_id(room, seq),
        timestamp=timestamp,
    ).encode()


def event_ack_frame(
    *, room: str, client_msg_id: str | None, seq: int | None, target: int, timestamp: str | None = None
) -> bytes:
    """``{"type":"ack","room","client_msg_id","seq","target","timestamp"}`` for ``edit``,
    ``delete`` and ``react`` (no ``id``); ``seq`` and ``timestamp`` are null when the request
    changed nothing (PROTOCOL.md section 8)."""
    return encode_frame(
        "ack", room=room, client_msg_id=client_msg_id, seq=seq, target=target, timestamp=timestamp
    ).encode()


def joined_frame(
    *,
    room: str,
    last_seq: int,
    online: Sequence[OnlineUser],
    messages: Sequence[bytes],
    recovered: bool,
    read_seq: int = 0,
    unread: int = 0,
) -> bytes:
    """``{"type":"joined","room","last_seq","read_seq","unread","online":[..],"messages":[..],
    "recovered":bool}`` (``read_seq`` and ``unread``: v2 section 9)."""
    return (
        b'{"type":"joined","room":'
        + _str(room)
        + b',"last_seq":'
        + str(last_seq).encode()
        + b',"read_seq":'
        + str(read_seq).encode()
        + b',"unread":'
        + str(unread).encode()
        + b',"online":'
        + _online(online)
        + b',"messages":'
        + _messages(messages)
        + b',"recovered":'
        + _bool(recovered)
        + b"}"
    )


def history_frame(*, room: str, messages: Sequence[bytes], has_more: bool) -> bytes:
    """``{"type":"history","room","messages":[..],"has_more":bool}``."""
    return (
        b'{"type":"history","room":'
        + _str(room)
        + b',"messages":'
        + _messages(messages)
        + b',"has_more":'
        + _bool(has_more)
        + b"}"
    )


def presence_frame(*, room: str, online: Sequence[OnlineUser]) -> bytes:
    """``{"type":"presence","room","online":[..]}``."""
    return b'{"type":"presence","room":' + _str(room) + b',"online":' + _online(online) + b"}"


def presence_change_frame(
    kind: Literal["user_joined", "user_left"], *, room: str, user_id: str, username: str
) -> bytes:
    """``{"type":"user_joined"|"user_left","room","user_id","username"}`` (pushed, no ``id``)."""
    return encode_frame(kind, room=room, user_id=user_id, username=username).encode()


def left_frame(room: str) -> bytes:
    """``{"type":"left","room":..}``."""
    return encode_frame("left", room=room).encode()


def fit_messages(messages: Sequence[bytes], budget: int, *, keep: Literal["newest", "oldest"]) -> list[bytes]:
    """The longest run of ``messages`` (from the newest or the oldest end) whose array content
    fits in ``budget`` bytes; used to keep a reply under the NATS max payload."""
    total = 0
    kept = 0
    ordered = reversed(messages) if keep == "newest" else iter(messages)
    for message in ordered:
        cost = len(message) + (1 if kept else 0)
        if total + cost > budget:
            break
        total += cost
        kept += 1
    if kept == len(messages):
        return list(messages)
    return list(messages[len(messages) - kept :]) if keep == "newest" else list(messages[:kept])
