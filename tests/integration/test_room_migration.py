"""A v1 deployment's ``CHAT_MESSAGES`` keeps working (issue 12 item 1, done with issue 11's room
logs): ``natter provision`` copies every room's messages into the sharded room logs with the same
``seq``, seals the old stream, and a second run copies nothing again.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import nats
from nats.js.api import StorageType, StreamConfig

from shared import room_shards, subjects
from shared.room_migration import MIGRATED_METADATA
from tests.conftest import _start_stack, start_nats
from tests.support import connect, join, register


async def _write_v1(url: str, rooms: dict[str, int]) -> None:
    """Messages as v1's chat_service stored them: ``msgs.<room>``, body = message data."""
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(
        StreamConfig(
            name=subjects.MESSAGES_STREAM,
            subjects=[subjects.MESSAGES_SUBJECTS],
            storage=StorageType.FILE,
            allow_direct=True,  # as v1 created it
        )
    )
    for n in range(max(rooms.values())):
        for room, count in rooms.items():  # interleaved, as v1 stored busy rooms
            if n < count:
                seq = n + 1
                data = {
                    "id": f"{room}:{seq}",
                    "seq": seq,
                    "user_id": "u1",
                    "username": "olduser",
                    "message": f"{room} v1 #{seq}",
                    "timestamp": "2026-11-01T10:00:00.000Z",
                    "client_msg_id": f"c{seq}",
                }
                await js.publish(
                    subjects.messages_subject(room),
                    json.dumps(data, separators=(",", ":")).encode(),
                    headers={subjects.HDR_SEQ: str(seq), subjects.HDR_USER: "u1"},
                )
    await nc.close()


async def _old_stream_state(url: str) -> tuple[bool, str | None]:
    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info(subjects.MESSAGES_STREAM)
    await nc.close()
    return bool(info.config.sealed), (info.config.metadata or {}).get(MIGRATED_METADATA)


async def test_provision_moves_v1_messages_into_the_room_logs_with_their_seqs(tmp_path: Path) -> None:
    server = start_nats(tmp_path, provisioned=False)
    stack = None
    try:
        rooms = {"general": 120, "oldroom": 7}
        await _write_v1(server.url, rooms)
        await asyncio.to_thread(server.provision)
        assert await _old_stream_state(server.url) == (True, "ROOMS")
        await asyncio.to_thread(server.provision)  # idempotent: nothing copied twice

        nc = await nats.connect(server.url)
        for room, count in rooms.items():
            info = await nc.jetstream().stream_info(
                room_shards.layout(room, 4).stream, subjects_filter=room_shards.layout(room, 4).log_filter
            )
            assert sum((info.state.subjects or {}).values()) == count
        await nc.close()

        stack = await asyncio.to_thread(_start_stack, tmp_path / "stack", server)
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            user = await register(http)
            headers = {"Authorization": f"Bearer {user.access_token}"}
            client = await connect(stack.ws_url, user.access_token)
            rejoined = await join(client, "oldroom")  # v1 rooms are in natter_rooms, untouched
            assert rejoined["last_seq"] == 7
            page = (await http.get("/api/rooms/oldroom/messages", headers=headers)).json()
            assert [m["seq"] for m in page["messages"]] == list(range(1, 8))
            first = page["messages"][0]
            assert first["message"] == "oldroom v1 #1" and first["reply_count"] == 0
            replay = await join(client, "general", since=100)
            assert [m["seq"] for m in replay["messages"]] == list(range(101, 121)) and replay["recovered"]
            ack = await client.request({"type": "chat_message", "room": "general", "message": "first in v2"})
            assert ack["seq"] == 121  # numbering continues
            react = await client.request({"type": "react", "room": "general", "target": 5, "emoji": "+1"})
            assert react["seq"] == 122
            await client.close()
    finally:
        if stack is not None:
            stack.stop()
        server.stop()
