"""Several gateways on one NATS, with two replicas of every service: what one gateway's client
does reaches the other gateway's clients (PROTOCOL.md sections 2, 3, 4, 5; DESIGN.md rule 4).

Raw WebSockets (tests/support.py) so that every frame is seen as the server sent it. The last
point of that list, a killed gateway's users announced ``user_left`` on the other gateway within
60 s, is measured in tests/faults/test_faults.py ``test_kill_9_one_of_two_gateways`` (same
topology), where it shares the 30 s heartbeat wait with the failover test.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.faults.conftest import FaultResults, Topology, TopologyFactory
from tests.support import User, WsClient, connect, expect_close, join, register, service_token, unique_name

#: PROTOCOL.md section 2: revoked sessions' sockets close within 2 s on every gateway.
REVOCATION_LIMIT = 2.0


async def users(topo: Topology, count: int) -> list[User]:
    async with httpx.AsyncClient(base_url=topo.http_url(0), timeout=10) as http:
        return list(await asyncio.gather(*(register(http) for _ in range(count))))


async def frame_of(sock: WsClient, kind: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
    """The next frame of type ``kind`` whose fields equal ``match`` (others are skipped)."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {kind} frame matching {match} within {timeout}s"
        frame = await sock.recv_type(kind, timeout=remaining)
        if all(frame.get(key) == value for key, value in match.items()):
            return frame


async def test_messages_presence_typing_and_broadcast_cross_gateways(topology: TopologyFactory) -> None:
    topo = await asyncio.to_thread(topology, gateways=2, chat=2, auth=2, notify=2)
    alice, bob, carol = await users(topo, 3)
    room = unique_name("x")
    a = await connect(topo.ws_url(0), alice.access_token)  # gateway A
    b = await connect(topo.ws_url(1), bob.access_token)  # gateway B
    try:
        await join(a, room)
        await join(b, room)
        # Presence crosses: bob joined through B, alice on A hears it.
        joined = await frame_of(a, "user_joined", user_id=bob.user_id)
        assert joined == {
            "type": "user_joined",
            "room": room,
            "user_id": bob.user_id,
            "username": bob.username,
        }

        # Messages cross in both directions, same frame on both gateways.
        ack = await a.request(
            {"type": "chat_message", "room": room, "message": "from A", "client_msg_id": "a1"}
        )
        assert ack["type"] == "ack" and ack["seq"] == 1
        on_b = await frame_of(b, "message")
        on_a = await frame_of(a, "message")
        assert on_b == on_a and on_b["data"]["message"] == "from A" and on_b["data"]["seq"] == 1
        ack = await b.request(
            {"type": "chat_message", "room": room, "message": "from B", "client_msg_id": "b1"}
        )
        assert ack["seq"] == 2
        assert (await frame_of(a, "message"))["data"]["message"] == "from B"
        assert (await frame_of(b, "message"))["data"]["seq"] == 2

        # Typing crosses (and is not echoed to the typist's own socket).
        await b.send({"type": "typing", "room": room})
        typing = await frame_of(a, "typing")
        assert typing == {"type": "typing", "room": room, "user_id": bob.user_id, "username": bob.username}
        await a.send({"type": "typing", "room": room})
        assert (await frame_of(b, "typing"))["user_id"] == alice.user_id

        # A broadcast reaches every socket on every gateway, in rooms or not.
        c_a = await connect(topo.ws_url(0), carol.access_token)
        c_b = await connect(topo.ws_url(1), carol.access_token)
        token = await service_token(topo.stack.nats.url, name=unique_name("svc"))
        title = unique_name("bc")
        async with httpx.AsyncClient(base_url=topo.http_url(1), timeout=10) as http:
            response = await http.post(
                "/api/notifications/broadcast",
                json={"title": title, "message": "maintenance at noon", "notification_type": "warning"},
                headers={"Authorization": f"Bearer {token}"},
            )
        assert response.status_code == 202 and response.json() == {"status": "broadcasted"}
        for sock in (a, b, c_a, c_b):
            frame = await sock.recv_type("broadcast_notification", timeout=5)
            assert frame["data"]["title"] == title and frame["data"]["notification_type"] == "warning"
        await c_a.close()
        await c_b.close()

        # Leaving through B: alice on A gets user_left.
        left = await b.request({"type": "leave", "room": room})
        assert left["type"] == "left"
        gone = await frame_of(a, "user_left", user_id=bob.user_id)
        assert gone["room"] == room and gone["username"] == bob.username
    finally:
        await a.close()
        await b.close()


async def test_logout_all_closes_the_users_sockets_on_both_gateways(
    topology: TopologyFactory, fault_results: FaultResults
) -> None:
    topo = await asyncio.to_thread(topology, gateways=2, chat=2, auth=2, notify=2)
    dave, erin = await users(topo, 2)
    socks = [await connect(topo.ws_url(i % 2), dave.access_token) for i in range(4)]
    bystander = await connect(topo.ws_url(1), erin.access_token)
    try:
        closes = [asyncio.create_task(expect_close(s, timeout=10)) for s in socks]
        async with httpx.AsyncClient(base_url=topo.http_url(0), timeout=10) as http:
            started = time.monotonic()
            response = await http.post(
                "/api/auth/logout", json={"refresh_token": dave.refresh_token, "all": True}
            )
            assert response.status_code == 204
            done, _ = await asyncio.wait(closes, timeout=REVOCATION_LIMIT + 3)
            elapsed = time.monotonic() - started
        results = [task.result() for task in done]
        assert len(results) == 4, "some sockets stayed open"
        assert results == [(1008, "session revoked")] * 4
        assert elapsed < REVOCATION_LIMIT, f"sockets closed after {elapsed:.2f}s"
        fault_results.note("logout all: last socket closed (2 gateways, 4 sockets)", round(elapsed, 3), "s")
        # Another user's socket is untouched.
        assert (await bystander.request({"type": "ping"}))["type"] == "pong"
    finally:
        for sock in [*socks, bystander]:
            await sock.close()
