"""Large rooms recover (issue 10, item 10; PROTOCOL.md sections 3 and 4).

A ``joined`` with ``since`` holds every missing message (up to 1000) and a ``history`` page up to
``limit`` messages, whatever their size, although one NATS reply carries at most 1 MiB: chat
answers what fits and the gateway fetches and splices in the rest (gateway/pages.py).
"""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
import nats

from shared import subjects
from tests.conftest import Stack
from tests.support import connect, join, register, unique_name

#: 4000 three-byte characters: 12 kB of UTF-8 per message, the example of the issue.
BIG = "€" * 3996


async def fill(stack: Stack, room: str, user_id: str, username: str, count: int) -> None:
    """``count`` big messages stored through chat.send, 50 at a time (faster than a socket's
    20 frames/s)."""
    nc = await nats.connect(stack.nats.url)
    try:
        for start in range(0, count, 50):
            bodies = [
                {
                    "room": room,
                    "user_id": user_id,
                    "username": username,
                    "message": f"{n:04d}{BIG}",
                    "client_msg_id": uuid.uuid4().hex,
                }
                for n in range(start, min(start + 50, count))
            ]
            replies = await asyncio.gather(
                *(nc.request(subjects.CHAT_SEND, json.dumps(body).encode(), timeout=20) for body in bodies)
            )
            assert all(b'"type":"ack"' in reply.data for reply in replies), replies[0].data[:200]
    finally:
        await nc.close()


async def test_recovery_of_1000_big_messages_and_full_history_pages(stack: Stack) -> None:
    room = unique_name("big")
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        user = await register(http)
        writer = await connect(stack.ws_url, user.access_token)
        await join(writer, room)
        await writer.close()
        await fill(stack, room, user.user_id, user.username, 1000)

        client = await connect(stack.ws_url, user.access_token, max_size=None)
        joined = await client.request({"type": "join", "room": room, "since": 0}, timeout=60)
        assert joined["type"] == "joined" and joined["recovered"] is True and joined["last_seq"] == 1000
        seqs = [m["seq"] for m in joined["messages"]]
        assert seqs == list(range(1, 1001))
        texts = {m["message"][:4] for m in joined["messages"]}
        assert len(texts) == 1000 and all(m["message"].endswith(BIG) for m in joined["messages"])

        partial = await client.request({"type": "join", "room": room, "since": 640}, timeout=60)
        assert [m["seq"] for m in partial["messages"]] == list(range(641, 1001)) and partial["recovered"]

        page = await client.request(
            {"type": "history", "room": room, "before": 901, "limit": 100}, timeout=60
        )
        assert [m["seq"] for m in page["messages"]] == list(range(801, 901)) and page["has_more"] is True
        first = await client.request(
            {"type": "history", "room": room, "before": 101, "limit": 100}, timeout=60
        )
        assert [m["seq"] for m in first["messages"]] == list(range(1, 101)) and first["has_more"] is False
        latest = await client.request({"type": "join", "room": room}, timeout=60)  # no since: the latest 50
        assert [m["seq"] for m in latest["messages"]] == list(range(951, 1001)) and not latest["recovered"]
        await client.close()

        response = await http.get(
            f"/api/rooms/{room}/messages",
            params={"limit": 100},
            headers={"Authorization": f"Bearer {user.access_token}"},
        )
        assert response.status_code == 200
        assert [m["seq"] for m in response.json()["messages"]] == list(range(901, 1001))
