"""Stored bodies of room log entries; each is the ``data`` of the client frame that announces it
(PROTOCOL.md section 8), so deliveries and replays splice stored bytes without re-encoding.

* a message (``roomlog.<k>.<room>.m.*``): ``{"id","seq","user_id","username","message",
  "timestamp","client_msg_id"}`` plus ``reply_to`` on a reply (v1's body, unchanged);
* any other event (``.e``): ``{"seq","type","user_id","username","timestamp",...}`` where
  ``type`` is the frame type (``message_edited``, ``message_deleted``, ``reaction``,
  ``member``) and the rest its fields. ``type`` inside ``data`` lets a replay (``joined`` with
  ``since``), which lists bodies only, say what each entry is; a message has none.

Both start with ``{"id":"..","seq":N`` or ``{"seq":N``, so a header-less batched read still
knows each entry's ``seq`` (:func:`seq_of_body`).
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Final

from shared.errors import ErrorCode, ProtocolError
from shared.protocol import dumps

logger = logging.getLogger(__name__)

MESSAGE: Final = "message"
EDITED: Final = "message_edited"
DELETED: Final = "message_deleted"
REACTION: Final = "reaction"
MEMBER: Final = "member"
EVENT_TYPES: Final = frozenset({EDITED, DELETED, REACTION, MEMBER})

_BODY_SEQ_RE: Final = re.compile(rb'\{(?:"id":"[^"]*",)?"seq":(\d+)[,}]')


def message_id(room: str, seq: int) -> str:
    """``<room>:<seq>``, the public id of a message (PROTOCOL.md section 4)."""
    return f"{room}:{seq}"


def message_body(
    *,
    room: str,
    seq: int,
    user_id: str,
    username: str,
    message: str,
    timestamp: str,
    client_msg_id: str | None,
    reply_to: int | None = None,
    bot: bool = False,
    attachments: list[dict[str, Any]] | None = None,
) -> bytes:
    """The stored body of a message, also the ``data`` of its ``message`` frame (``"bot":
    true`` when a service posted it, PROTOCOL.md section 12)."""
    data: dict[str, Any] = {
        "id": message_id(room, seq),
        "seq": seq,
        "user_id": user_id,
        "username": username,
        "message": message,
        "timestamp": timestamp,
        "client_msg_id": client_msg_id,
    }
    if reply_to is not None:
        data["reply_to"] = reply_to
    if bot:
        data["bot"] = True
    if attachments:
        data["attachments"] = attachments
    return dumps(data).encode()


def event_body(kind: str, *, seq: int, user_id: str, username: str, timestamp: str, **fields: Any) -> bytes:
    """The stored body of a non-message event (module docstring)."""
    return dumps(
        {"seq": seq, "type": kind, "user_id": user_id, "username": username, "timestamp": timestamp, **fields}
    ).encode()


def seq_of_body(data: bytes) -> int:
    """The ``seq`` of a stored body (a prefix match; full JSON decoding only as a fallback).

    Raises:
        ProtocolError: ``internal`` for a body without an integer ``seq``.
    """
    match = _BODY_SEQ_RE.match(data)
    if match is not None:
        return int(match.group(1))
    try:
        value = json.loads(data)
        seq = value["seq"]
        if isinstance(seq, int) and not isinstance(seq, bool):
            return seq
    except (ValueError, TypeError, KeyError):
        pass
    logger.error("stored entry without a valid seq (%d bytes)", len(data))
    raise ProtocolError(ErrorCode.INTERNAL)


def kind_of(data: dict[str, Any]) -> str:
    """The frame type of a decoded body: its ``type``, or ``message``."""
    kind = data.get("type")
    return kind if isinstance(kind, str) and kind in EVENT_TYPES else MESSAGE


def decode(data: bytes) -> dict[str, Any]:
    """A stored body as a dict.

    Raises:
        ProtocolError: ``internal`` when it is not a JSON object.
    """
    try:
        value = json.loads(data)
    except ValueError as error:
        raise ProtocolError(ErrorCode.INTERNAL) from error
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.INTERNAL)
    return value


def redacted(data: dict[str, Any]) -> dict[str, Any]:
    """The form of a deleted message or of an edit of one that replays and pages show: its
    text emptied and ``deleted: true`` (PROTOCOL.md section 8, "Delete means gone")."""
    return {**data, "message": "", "deleted": True}


def frame(room: str, body: bytes) -> bytes:
    """The pushed client frame of a stored body: ``{"type":<kind>,"room":..,"data":<body>}``."""
    kind = kind_of(decode(body)) if body.startswith(b'{"seq"') else MESSAGE
    return b'{"type":"' + kind.encode() + b'","room":' + dumps(room).encode() + b',"data":' + body + b"}"
