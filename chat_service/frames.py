"""Client frames chat_service produces, encoded once as compact JSON bytes (DESIGN.md rule 4).

Replies carry no ``id`` (the gateway splices it in, ``shared.internal.with_request_id``).
Stored message bodies (the ``data`` object of a ``message`` frame, as kept in ``CHAT_MESSAGES``)
are spliced into ``message``, ``joined`` and ``history`` frames as they are: never decoded and
re-encoded. Field order follows PROTOCOL.md sections 3 and 4.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

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


def message_data(
    *,
    room: str,
    seq: int,
    user_id: str,
    username: str,
    message: str,
    timestamp: str,
    client_msg_id: str | None,
) -> bytes:
    """The stored body of one message, which is also the ``data`` of its ``message`` frame:
    ``{"id":"<room>:<seq>","seq","user_id","username","message","timestamp","client_msg_id"}``."""
    return dumps(
        {
            "id": message_id(room, seq),
            "seq": seq,
            "user_id": user_id,
            "username": username,
            "message": message,
            "timestamp": timestamp,
            "client_msg_id": client_msg_id,
        }
    ).encode()


def message_id(room: str, seq: int) -> str:
    """``<room>:<seq>``, the public id of a message (PROTOCOL.md section 4)."""
    return f"{room}:{seq}"


def seq_of(data: bytes) -> int:
    """The ``seq`` of a stored message body (``message_data``'s field order: read by a scan of
    the prefix, not a full decode).

    Raises:
        ValueError: no ``"seq":`` in the body.
    """
    start = data.index(b'"seq":') + 6
    end = start
    while end < len(data) and data[end : end + 1].isdigit():
        end += 1
    return int(data[start:end])


def parse_data(data: bytes) -> dict[str, Any]:
    """Decode a stored message body (used only to build an ack for a duplicate send).

    Raises:
        ValueError: the body is not a JSON object.
    """
    value = json.loads(data)
    if not isinstance(value, dict):
        raise ValueError("stored message is not a JSON object")
    return value


def delivery_frame(room: str, data: bytes) -> bytes:
    """``{"type":"message","room":..,"data":<stored body>}`` for ``deliver.room.<room>``."""
    return b'{"type":"message","room":' + _str(room) + b',"data":' + data + b"}"


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


def joined_frame(
    *,
    room: str,
    last_seq: int,
    online: Sequence[OnlineUser],
    messages: Sequence[bytes],
    recovered: bool,
) -> bytes:
    """``{"type":"joined","room","last_seq","online":[..],"messages":[..],"recovered":bool}``."""
    return (
        b'{"type":"joined","room":'
        + _str(room)
        + b',"last_seq":'
        + str(last_seq).encode()
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
