"""Client frames (PROTOCOL.md sections 2-5) and URL helpers, as plain dicts and strings.

The builders leave out optional fields that are ``None`` and never set ``id``: the client adds a
fresh ``id`` each time it sends a request.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

Frame = dict[str, Any]

#: Answer types that echo a request ``id`` (PROTOCOL.md section 1).
ANSWER_TYPES = frozenset(
    {"auth_success", "pong", "joined", "left", "ack", "history", "presence", "notifications", "error"}
)
#: Frames the server pushes without ``id``, handed to ``async for frame in client``.
PUSHED_TYPES = frozenset(
    {
        "message",
        "user_joined",
        "user_left",
        "typing",
        "notification",
        "broadcast_notification",
        "notifications",
        "error",
    }
)


def dumps(frame: Frame) -> str:
    """Compact JSON text of a frame."""
    return json.dumps(frame, separators=(",", ":"), ensure_ascii=False)


def _frame(frame_type: str, **fields: Any) -> Frame:
    return {"type": frame_type, **{key: value for key, value in fields.items() if value is not None}}


def auth_frame(token: str) -> Frame:
    """``{"type":"auth","token":..}``: first-message auth, or refresh on a live socket."""
    return _frame("auth", token=token)


def ping_frame() -> Frame:
    """``{"type":"ping"}``."""
    return _frame("ping")


def join_frame(room: str, since: int | None = None) -> Frame:
    """``{"type":"join","room":..,"since":..}``."""
    return _frame("join", room=room, since=since)


def leave_frame(room: str) -> Frame:
    """``{"type":"leave","room":..}``."""
    return _frame("leave", room=room)


def chat_message_frame(room: str, text: str, client_msg_id: str, reply_to: int | None = None) -> Frame:
    """``{"type":"chat_message","room":..,"message":..,"client_msg_id":..,"reply_to":..}``."""
    return _frame("chat_message", room=room, message=text, client_msg_id=client_msg_id, reply_to=reply_to)


def edit_frame(room: str, target: int, text: str, client_msg_id: str) -> Frame:
    """``{"type":"edit","room":..,"target":..,"message":..,"client_msg_id":..}`` (v2)."""
    return _frame("edit", room=room, target=target, message=text, client_msg_id=client_msg_id)


def delete_frame(room: str, target: int, client_msg_id: str) -> Frame:
    """``{"type":"delete","room":..,"target":..,"client_msg_id":..}`` (v2)."""
    return _frame("delete", room=room, target=target, client_msg_id=client_msg_id)


def react_frame(room: str, target: int, emoji: str, op: str, client_msg_id: str) -> Frame:
    """``{"type":"react","room":..,"target":..,"emoji":..,"op":"add"|"remove",...}`` (v2)."""
    return _frame("react", room=room, target=target, emoji=emoji, op=op, client_msg_id=client_msg_id)


def read_frame(room: str, seq: int) -> Frame:
    """``{"type":"read","room":..,"seq":..}``: move the read marker (v2, PROTOCOL.md section 9)."""
    return _frame("read", room=room, seq=seq)


def history_frame(
    room: str, before: int | None = None, limit: int | None = None, thread: int | None = None
) -> Frame:
    """``{"type":"history","room":..,"before":..,"limit":..,"thread":..}``."""
    return _frame("history", room=room, before=before, limit=limit, thread=thread)


def presence_frame(room: str) -> Frame:
    """``{"type":"presence","room":..}``."""
    return _frame("presence", room=room)


def typing_frame(room: str) -> Frame:
    """``{"type":"typing","room":..}`` (not answered unless it fails)."""
    return _frame("typing", room=room)


def notifications_frame(unread_only: bool = False, limit: int | None = None) -> Frame:
    """``{"type":"notifications","unread_only":..,"limit":..}``."""
    return _frame("notifications", unread_only=unread_only, limit=limit)


def mark_read_frame(ids: list[str] | None = None, all: bool = False) -> Frame:
    """``{"type":"mark_read","ids":[..]}`` or ``{"type":"mark_read","all":true}``."""
    if all:
        return _frame("mark_read", all=True)
    return _frame("mark_read", ids=list(ids or []))


# --- URLs ------------------------------------------------------------------------------------
def http_base_url(ws_url: str) -> str:
    """The HTTP API base of a gateway WebSocket URL: ``ws://h:p/ws`` -> ``http://h:p``,
    ``wss://h/chat/ws`` -> ``https://h/chat`` (the API lives on the same host and port,
    PROTOCOL.md section 6)."""
    parts = urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    path = parts.path.rstrip("/")
    if path.endswith("/ws"):
        path = path[: -len("/ws")]
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def with_query_token(ws_url: str, token: str) -> str:
    """``ws_url`` with ``token=`` set in its query (auth method 1, PROTOCOL.md section 2)."""
    parts = urlsplit(ws_url)
    query = [(key, value) for key, value in parse_qsl(parts.query) if key != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def redact(url: str) -> str:
    """``url`` without its query string, for logs (tokens never reach a log line)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
