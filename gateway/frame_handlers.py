"""Which coroutine handles each client frame type (PROTOCOL.md sections 2-9): a table, so a new
frame type is one entry here and one function, not another branch in
:mod:`gateway.connection`.

The handlers here are relays: check the room name and membership, ask the owning service,
send its pre-encoded answer with the request ``id`` spliced in. Frames that change the socket's
own state (``auth``, ``join``, ``leave``, ``chat_message``, ``typing``) are methods of
:class:`~gateway.connection.Connection`, listed here too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.pages import complete
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import (
    HistoryRequest,
    NotifyListRequest,
    NotifyReadRequest,
    PresenceRequest,
    ReadRequest,
)
from shared.protocol import (
    DeleteFrame,
    EditFrame,
    HistoryFrame,
    MarkReadFrame,
    NotificationsFrame,
    PresenceFrame,
    ReactFrame,
    ReadFrame,
    dumps,
)

if TYPE_CHECKING:
    from gateway.connection import Connection

Handler = Callable[["Connection", Any], Awaitable[None]]


async def ping(conn: Connection, frame: Any) -> None:
    """``ping`` -> ``pong``."""
    conn.send("pong", frame.id)


async def presence(conn: Connection, frame: PresenceFrame) -> None:
    """``presence``: the room's online users (readers of the room only)."""
    subjects.check_room(frame.room)
    body = PresenceRequest(room=frame.room, user_id=conn.user_id)
    reply = await conn.node.request(subjects.CHAT_PRESENCE, body.model_dump_json().encode())
    conn.send_reply("presence", reply, frame.id)


async def history(conn: Connection, frame: HistoryFrame) -> None:
    """``history``: a materialised page (``thread``: of one message's replies), completed by
    :func:`gateway.pages.complete` when it did not fit one NATS message."""
    subjects.check_room(frame.room)
    request = HistoryRequest(
        room=frame.room, user_id=conn.user_id, before=frame.before, limit=frame.limit, thread=frame.thread
    )
    answer = await conn.node.request_msg(
        subjects.CHAT_HISTORY, request.model_dump_json(exclude_none=True).encode()
    )
    reply = await complete(conn.node.request, answer, room=frame.room, user_id=conn.user_id)
    conn.send_reply("history", reply, frame.id)


async def read(conn: Connection, frame: ReadFrame) -> None:
    """``read``: move the user's marker; the answer is ``read_marker`` (chat pushes a copy to the
    user's other sockets, this one excepted)."""
    room = subjects.check_room(frame.room)
    body = ReadRequest(
        room=room, user_id=conn.user_id, username=conn.username, seq=frame.seq, conn_id=conn.conn_id
    )
    reply = await conn.node.request(subjects.CHAT_READ, body.model_dump_json().encode())
    conn.send_reply("read_marker", reply, frame.id)


async def notifications(conn: Connection, frame: NotificationsFrame) -> None:
    """``notifications``: the user's stored notifications."""
    listing = NotifyListRequest(user_id=conn.user_id, unread_only=frame.unread_only, limit=frame.limit)
    reply = await conn.node.request(subjects.NOTIFY_LIST, listing.model_dump_json().encode())
    conn.send_reply("notifications", reply, frame.id)


async def mark_read(conn: Connection, frame: MarkReadFrame) -> None:
    """``mark_read``: answers the new summary."""
    if not frame.all and not frame.ids:
        raise ProtocolError(ErrorCode.VALIDATION_ERROR, "Give 'ids' or 'all': true")
    read = NotifyReadRequest(user_id=conn.user_id, ids=frame.ids, all=frame.all)
    reply = await conn.node.request(subjects.NOTIFY_READ, read.model_dump_json().encode())
    conn.send_reply("notifications", reply, frame.id)


async def _room_event(
    conn: Connection, frame: EditFrame | DeleteFrame | ReactFrame, subject: str, **extra: Any
) -> None:
    """``edit``, ``delete`` and ``react``: the socket must have joined the room (v2 section 8);
    chat answers the ``ack``."""
    room = subjects.check_room(frame.room)
    conn.require_joined(room)
    body: dict[str, Any] = {
        "room": room,
        "user_id": conn.user_id,
        "username": conn.username,
        "target": frame.target,
        "role": conn.role if conn.role in ("service", "admin") else "user",
        **extra,
    }
    if frame.client_msg_id is not None:
        body["client_msg_id"] = frame.client_msg_id
    reply = await conn.node.request(subject, dumps(body).encode())
    conn.send_reply("ack", reply, frame.id)


async def edit(conn: Connection, frame: EditFrame) -> None:
    """``edit`` -> ``chat.edit``."""
    await _room_event(conn, frame, subjects.CHAT_EDIT, message=frame.message)


async def delete(conn: Connection, frame: DeleteFrame) -> None:
    """``delete`` -> ``chat.delete``."""
    await _room_event(conn, frame, subjects.CHAT_DELETE)


async def react(conn: Connection, frame: ReactFrame) -> None:
    """``react`` -> ``chat.react``."""
    await _room_event(conn, frame, subjects.CHAT_REACT, emoji=frame.emoji, op=frame.op)


def table(connection: type[Connection]) -> dict[str, Handler]:
    """``frame type -> handler`` for every client frame type
    (:data:`shared.protocol.CLIENT_FRAME_TYPES`); ``connection`` is the Connection class, whose
    methods handle the frames that change a socket's own state."""
    return {
        "ping": ping,
        "auth": connection.on_auth,
        "join": connection.on_join,
        "leave": connection.on_leave,
        "chat_message": connection.on_chat_message,
        "typing": connection.on_typing,
        "presence": presence,
        "history": history,
        "read": read,
        "notifications": notifications,
        "mark_read": mark_read,
        "edit": edit,
        "delete": delete,
        "react": react,
    }
