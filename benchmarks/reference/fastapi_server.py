"""Reference 1: the classic in-process FastAPI ``ConnectionManager`` chat server.

The pattern of FastAPI's WebSocket guide, extended to rooms and to natter's frames so that the
same load generator drives it: one process, rooms kept in a dict, every frame encoded once and
sent to each member in turn (``await websocket.send_text(text)`` in a loop). No NATS, no
storage, no authentication: *any* non-empty ``?token=`` is accepted and is also the user id and
the username (there is no JWT check). Nothing here slows it down on purpose.

Frames spoken (PROTOCOL.md shapes): ``auth_success`` after the handshake; ``join`` -> ``joined``
(``last_seq``, empty ``online``/``messages``); ``leave`` -> ``left``; ``ping`` -> ``pong``;
``chat_message`` -> ``ack`` to the sender with the room's next ``seq``, then ``message`` to
every member (the sender included). Bad frames get ``error`` (``invalid_json``,
``unknown_type``, ``invalid_room``, ``not_joined``, ``validation_error``).

Run: ``python benchmarks/reference/fastapi_server.py --port 8101`` (uvicorn with uvloop,
httptools and websockets-sansio, per-message-deflate off: the gateway's settings).
"""

from __future__ import annotations

import argparse
import json
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect

ROOM_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def dumps(obj: Any) -> str:
    """Compact JSON, as natter sends it."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def utc_timestamp() -> str:
    """ISO 8601 UTC with milliseconds and ``Z``."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


class ConnectionManager:
    """Rooms -> member sockets, and each room's last ``seq`` (all in memory)."""

    def __init__(self) -> None:
        self.rooms: dict[str, list[WebSocket]] = {}
        self.seq: dict[str, int] = {}

    def join(self, room: str, websocket: WebSocket) -> None:
        members = self.rooms.setdefault(room, [])
        if websocket not in members:
            members.append(websocket)

    def leave(self, room: str, websocket: WebSocket) -> None:
        members = self.rooms.get(room)
        if members and websocket in members:
            members.remove(websocket)
            if not members:
                del self.rooms[room]

    def is_member(self, room: str, websocket: WebSocket) -> bool:
        return websocket in self.rooms.get(room, ())

    def next_seq(self, room: str) -> int:
        seq = self.seq.get(room, 0) + 1
        self.seq[room] = seq
        return seq

    async def broadcast(self, room: str, text: str) -> None:
        """Send the already encoded ``text`` to every member, one after the other."""
        for websocket in list(self.rooms.get(room, ())):
            try:
                await websocket.send_text(text)
            except Exception:  # gone: the member's own handler cleans up
                self.leave(room, websocket)


app = FastAPI(title="reference: FastAPI ConnectionManager")
manager = ConnectionManager()


def error(code: str, message: str, request_id: Any = None) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if request_id is not None:
        frame["id"] = request_id
    return dumps(frame)


def reply(frame: dict[str, Any], request_id: Any) -> str:
    if request_id is not None:
        frame["id"] = request_id
    return dumps(frame)


@app.websocket("/ws")
async def websocket_endpoint(websocket: WebSocket, token: str = "") -> None:
    if not token:
        await websocket.close(code=1008, reason="auth failed")
        return
    await websocket.accept()
    user_id = token[:64]
    joined: set[str] = set()
    await websocket.send_text(
        dumps(
            {
                "type": "auth_success",
                "user_id": user_id,
                "username": user_id,
                "session_id": uuid.uuid4().hex,
                "expires_at": int(time.time()) + 3600,
            }
        )
    )
    try:
        while True:
            text = await websocket.receive_text()
            try:
                frame = json.loads(text)
            except ValueError:
                await websocket.send_text(error("invalid_json", "Invalid JSON format"))
                continue
            if not isinstance(frame, dict):
                await websocket.send_text(error("validation_error", "A frame must be a JSON object"))
                continue
            kind, request_id = frame.get("type"), frame.get("id")
            raw_room = frame.get("room")
            room = raw_room if isinstance(raw_room, str) and ROOM_RE.fullmatch(raw_room) else ""
            if kind == "ping":
                await websocket.send_text(reply({"type": "pong"}, request_id))
            elif kind in ("join", "leave", "chat_message") and not room:
                await websocket.send_text(error("invalid_room", "Invalid room name", request_id))
            elif kind == "join":
                manager.join(room, websocket)
                joined.add(room)
                answer: dict[str, Any] = {
                    "type": "joined",
                    "room": room,
                    "last_seq": manager.seq.get(room, 0),
                    "online": [],
                    "messages": [],
                    "recovered": False,
                }
                await websocket.send_text(reply(answer, request_id))
            elif kind == "leave":
                manager.leave(room, websocket)
                joined.discard(room)
                await websocket.send_text(reply({"type": "left", "room": room}, request_id))
            elif kind == "chat_message":
                message = frame.get("message")
                if not isinstance(message, str) or not message.strip() or len(message) > 4000:
                    await websocket.send_text(error("validation_error", "message: 1..4000", request_id))
                    continue
                if room not in joined:
                    await websocket.send_text(error("not_joined", "Not joined to this room", request_id))
                    continue
                seq = manager.next_seq(room)
                timestamp = utc_timestamp()
                client_msg_id = frame.get("client_msg_id")
                ack = {
                    "type": "ack",
                    "room": room,
                    "client_msg_id": client_msg_id,
                    "seq": seq,
                    "message_id": f"{room}:{seq}",
                    "timestamp": timestamp,
                }
                await websocket.send_text(reply(ack, request_id))
                data = {
                    "id": f"{room}:{seq}",
                    "seq": seq,
                    "user_id": user_id,
                    "username": user_id,
                    "message": message.strip(),
                    "timestamp": timestamp,
                    "client_msg_id": client_msg_id,
                }
                await manager.broadcast(room, dumps({"type": "message", "room": room, "data": data}))
            else:
                await websocket.send_text(error("unknown_type", "Unknown message type", request_id))
    except WebSocketDisconnect:
        pass
    finally:
        for room in joined:
            manager.leave(room, websocket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8101)
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
