"""Reference 2: a python-socketio ``AsyncServer`` with rooms, under uvicorn.

The usual Socket.IO chat: ``enter_room`` on join, ``emit(..., room=room)`` on a message
(python-socketio encodes the packet once per emit and queues it to each member's Engine.IO
socket). Event names are natter's frame types and the payloads are natter's frames, so the same
load generator (through python-socketio's ``AsyncClient``) measures it. No authentication:
*any* non-empty ``auth={"token": ...}`` is accepted and is also the user id (no JWT check).
Nothing here slows it down on purpose.

Events: ``join`` (ack: the ``joined`` frame), ``leave`` (ack: ``left``), ``chat_message``
(ack: the ``ack`` frame with the room's next ``seq``; every member, the sender included, gets a
``message`` event carrying the ``message`` frame). Bad input is acked with an ``error`` frame.

Run: ``python benchmarks/reference/socketio_server.py --port 8102`` (uvicorn with uvloop,
httptools and websockets-sansio, per-message-deflate off: the gateway's settings). Needs the
``bench`` extra (python-socketio).
"""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime
from typing import Any

import socketio
import uvicorn

ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")

sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins=[])
app = socketio.ASGIApp(sio)
users: dict[str, str] = {}
joined: dict[str, set[str]] = {}
seqs: dict[str, int] = {}


def utc_timestamp() -> str:
    """ISO 8601 UTC with milliseconds and ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def error(code: str, message: str, request_id: Any = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return frame


def room_of(frame: Any) -> str | None:
    room = frame.get("room") if isinstance(frame, dict) else None
    return room if isinstance(room, str) and ROOM_RE.fullmatch(room) else None


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: Any) -> bool:
    token = auth.get("token") if isinstance(auth, dict) else None
    if not isinstance(token, str) or not token:
        return False
    users[sid] = token[:64]
    joined[sid] = set()
    return True


@sio.event
async def disconnect(sid: str, *args: Any) -> None:
    users.pop(sid, None)
    joined.pop(sid, None)


@sio.on("join")
async def join(sid: str, frame: Any) -> dict[str, Any]:
    room = room_of(frame)
    request_id = frame.get("id") if isinstance(frame, dict) else None
    if room is None:
        return error("invalid_room", "Invalid room name", request_id)
    await sio.enter_room(sid, room)
    joined[sid].add(room)
    answer: dict[str, Any] = {
        "type": "joined",
        "room": room,
        "last_seq": seqs.get(room, 0),
        "online": [],
        "messages": [],
        "recovered": False,
    }
    if request_id is not None:
        answer["id"] = request_id
    return answer


@sio.on("leave")
async def leave(sid: str, frame: Any) -> dict[str, Any]:
    room = room_of(frame)
    if room is None:
        return error("invalid_room", "Invalid room name")
    await sio.leave_room(sid, room)
    joined[sid].discard(room)
    return {"type": "left", "room": room}


@sio.on("chat_message")
async def chat_message(sid: str, frame: Any) -> dict[str, Any]:
    room = room_of(frame)
    request_id = frame.get("id") if isinstance(frame, dict) else None
    if room is None:
        return error("invalid_room", "Invalid room name", request_id)
    message = frame.get("message")
    if not isinstance(message, str) or not message.strip() or len(message) > 4000:
        return error("validation_error", "message: 1..4000", request_id)
    if room not in joined.get(sid, ()):
        return error("not_joined", "Not joined to this room", request_id)
    seq = seqs.get(room, 0) + 1
    seqs[room] = seq
    timestamp = utc_timestamp()
    client_msg_id = frame.get("client_msg_id")
    user_id = users.get(sid, "")
    data = {
        "id": f"{room}:{seq}",
        "seq": seq,
        "user_id": user_id,
        "username": user_id,
        "message": message.strip(),
        "timestamp": timestamp,
        "client_msg_id": client_msg_id,
    }
    await sio.emit("message", {"type": "message", "room": room, "data": data}, room=room)
    ack: dict[str, Any] = {
        "type": "ack",
        "room": room,
        "client_msg_id": client_msg_id,
        "seq": seq,
        "message_id": f"{room}:{seq}",
        "timestamp": timestamp,
    }
    if request_id is not None:
        ack["id"] = request_id
    return ack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8102)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        backlog=4096,
    )


if __name__ == "__main__":
    main()
