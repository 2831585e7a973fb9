"""PROTOCOL.md sections 3 and 4 through a real gateway and real services."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
from nats.aio.client import Client

from shared import subjects
from tests.conftest import Stack
from tests.support import WsClient, connect, join, kv_keys, members, register, unique_name


async def users_and_sockets(stack: Stack, count: int) -> tuple[list, list[WsClient]]:  # type: ignore[type-arg]
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        users = [await register(http) for _ in range(count)]
    sockets = [await connect(stack.ws_url, user.access_token) for user in users]
    return users, sockets


async def test_join_send_ack_and_delivery_to_all_members(stack: Stack) -> None:
    room = unique_name("r")
    (alice, bob), (a, b) = await users_and_sockets(stack, 2)
    joined = await join(a, room)
    assert joined["room"] == room and joined["last_seq"] == 0
    assert joined["messages"] == [] and joined["recovered"] is False
    assert {"user_id": alice.user_id, "username": alice.username} in joined["online"]
    joined_b = await join(b, room)
    assert {u["user_id"] for u in joined_b["online"]} == {alice.user_id, bob.user_id}
    presence = await a.recv_type("user_joined")
    assert presence == {"type": "user_joined", "room": room, "user_id": bob.user_id, "username": bob.username}

    msg_id = str(uuid.uuid4())
    ack = await a.request(
        {"type": "chat_message", "room": room, "message": "  Hello  ", "client_msg_id": msg_id}
    )
    assert ack["type"] == "ack" and ack["room"] == room and ack["client_msg_id"] == msg_id
    assert ack["seq"] == 1 and ack["message_id"] == f"{room}:1" and ack["timestamp"].endswith("Z")
    for sock in (a, b):
        delivered = await sock.recv_type("message")
        assert delivered["room"] == room
        data = delivered["data"]
        assert data == {
            "id": f"{room}:1",
            "seq": 1,
            "user_id": alice.user_id,
            "username": alice.username,
            "message": "Hello",
            "timestamp": ack["timestamp"],
            "client_msg_id": msg_id,
        }
    left = await b.request({"type": "leave", "room": room})
    assert left["type"] == "left" and left["room"] == room
    gone = await a.recv_type("user_left")
    assert gone["user_id"] == bob.user_id and gone["username"] == bob.username
    for sock in (a, b):
        await sock.close()


async def test_idempotent_resend_creates_one_message(stack: Stack) -> None:
    room = unique_name("r")
    _, (a,) = await users_and_sockets(stack, 1)
    await join(a, room)
    frame = {"type": "chat_message", "room": room, "message": "once", "client_msg_id": "dup-1"}
    first = await a.request(frame)
    second = await a.request(frame)
    assert first["seq"] == second["seq"] == 1
    assert first["message_id"] == second["message_id"] and first["timestamp"] == second["timestamp"]
    history = await a.request({"type": "history", "room": room})
    assert [m["seq"] for m in history["messages"]] == [1]
    other = await a.request({**frame, "client_msg_id": "dup-2"})
    assert other["seq"] == 2
    await a.close()


async def test_three_concurrent_senders_get_contiguous_seq(stack: Stack) -> None:
    room = unique_name("r")
    _, sockets = await users_and_sockets(stack, 3)
    for sock in sockets:
        await join(sock, room)
    per_sender = 15

    async def send_all(sock: WsClient, index: int) -> list[int]:
        seqs = []
        for n in range(per_sender):
            ack = await sock.request(
                {
                    "type": "chat_message",
                    "room": room,
                    "message": f"{index}-{n}",
                    "client_msg_id": f"{index}-{n}",
                }
            )
            assert ack["type"] == "ack", ack
            seqs.append(ack["seq"])
        return seqs

    async def collect(sock: WsClient) -> list[int]:
        seen: list[int] = []
        while len(seen) < 3 * per_sender:
            frame = await sock.recv_type("message", timeout=10)
            seen.append(frame["data"]["seq"])
        return seen

    acked = await asyncio.gather(*(send_all(sock, i) for i, sock in enumerate(sockets)))
    total = 3 * per_sender
    assert sorted(s for seqs in acked for s in seqs) == list(range(1, total + 1))
    for seqs in acked:
        assert seqs == sorted(seqs)  # one sender's messages keep their order
    # Deliveries that arrived while a socket awaited its acks were kept in order by the client.
    for seen in await asyncio.gather(*(collect(sock) for sock in sockets)):
        assert seen == list(range(1, total + 1))
    history = await sockets[0].request({"type": "history", "room": room, "limit": 100})
    assert [m["seq"] for m in history["messages"]] == list(range(1, total + 1))
    for sock in sockets:
        await sock.close()


async def test_recovery_with_since_after_reconnect(stack: Stack) -> None:
    room = unique_name("r")
    (alice, _), (a, b) = await users_and_sockets(stack, 2)
    await join(a, room)
    await join(b, room)
    await b.request({"type": "chat_message", "room": room, "message": "before"})
    last_seen = (await a.recv_type("message"))["data"]["seq"]
    await a.close()
    for n in range(5):
        await b.request({"type": "chat_message", "room": room, "message": f"missed {n}"})
    again = await connect(stack.ws_url, alice.access_token)
    joined = await join(again, room, since=last_seen)
    assert joined["recovered"] is True and joined["last_seq"] == last_seen + 5
    assert [m["seq"] for m in joined["messages"]] == list(range(last_seen + 1, last_seen + 6))
    assert [m["message"] for m in joined["messages"]] == [f"missed {n}" for n in range(5)]
    # Live delivery continues after the recovered block, without duplicates.
    await b.request({"type": "chat_message", "room": room, "message": "live"})
    live = await again.recv_type("message")
    assert live["data"]["seq"] == last_seen + 6
    up_to_date = await join(again, room, since=last_seen + 6)
    assert up_to_date["messages"] == [] and up_to_date["recovered"] is True
    await again.close()
    await b.close()


async def test_history_paging(stack: Stack) -> None:
    room = unique_name("r")
    (user,), (a,) = await users_and_sockets(stack, 1)
    await join(a, room)
    for n in range(1, 13):
        await a.request({"type": "chat_message", "room": room, "message": f"m{n}"})
    latest = await a.request({"type": "history", "room": room, "limit": 5})
    assert [m["seq"] for m in latest["messages"]] == [8, 9, 10, 11, 12] and latest["has_more"] is True
    older = await a.request({"type": "history", "room": room, "before": 8, "limit": 5})
    assert [m["seq"] for m in older["messages"]] == [3, 4, 5, 6, 7] and older["has_more"] is True
    oldest = await a.request({"type": "history", "room": room, "before": 3, "limit": 5})
    assert [m["seq"] for m in oldest["messages"]] == [1, 2] and oldest["has_more"] is False
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        page = await http.get(
            f"/api/rooms/{room}/messages",
            params={"before": 8, "limit": 5},
            headers={"Authorization": f"Bearer {user.access_token}"},
        )
    assert page.status_code == 200
    assert [m["seq"] for m in page.json()["messages"]] == [3, 4, 5, 6, 7]
    await a.close()


async def test_join_without_since_gives_latest_50(stack: Stack) -> None:
    room = unique_name("r")
    _, (a, b) = await users_and_sockets(stack, 2)
    await join(a, room)
    for n in range(55):
        await a.request({"type": "chat_message", "room": room, "message": f"m{n}"})
        if n % 30 == 29:
            await asyncio.sleep(1.5)  # stay under the 20 frames/s rate limit
    joined = await join(b, room)
    assert joined["last_seq"] == 55 and joined["recovered"] is False
    assert [m["seq"] for m in joined["messages"]] == list(range(6, 56))
    await a.close()
    await b.close()


async def test_presence_typing_and_multi_socket_user(stack: Stack) -> None:
    room = unique_name("r")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice = await register(http)
        bob = await register(http)
    a1 = await connect(stack.ws_url, alice.access_token)
    a2 = await connect(stack.ws_url, alice.access_token)
    b = await connect(stack.ws_url, bob.access_token)
    await join(b, room)
    await join(a1, room)
    assert (await b.recv_type("user_joined"))["user_id"] == alice.user_id
    await join(a2, room)  # same user: no second user_joined
    presence = await b.request({"type": "presence", "room": room})
    assert presence["type"] == "presence" and presence["room"] == room
    assert sorted(u["user_id"] for u in presence["online"]) == sorted([alice.user_id, bob.user_id])
    await a1.send({"type": "typing", "room": room})
    typing = await b.recv_type("typing")
    assert typing == {"type": "typing", "room": room, "user_id": alice.user_id, "username": alice.username}
    await a1.close()  # alice still has a2 in the room: no user_left
    await a2.send({"type": "typing", "room": room})
    assert (await b.recv_type("typing"))["user_id"] == alice.user_id  # nothing else came first
    await a2.close()
    gone = await b.recv_type("user_left", timeout=5)
    assert gone["user_id"] == alice.user_id
    await b.close()


async def presence_keys(kv: Any, prefix: str, timeout: float = 2.0) -> list[str]:
    """Keys of ``kv`` starting with ``prefix``. nats-py's ``keys()`` lists them with a watcher
    that can report an empty bucket (NoKeysError) when its consumer starts a moment early: a CI
    run saw it right after the join had been announced, so it is asked again, briefly."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = [k for k in await kv_keys(kv) if k.startswith(prefix)]
        if found or asyncio.get_running_loop().time() > deadline:
            return found
        await asyncio.sleep(0.05)


async def test_a_leave_removes_presence_rewritten_since_the_join(stack: Stack, nc: Client) -> None:
    """chat deletes a leaving user's presence key by the revision it wrote at the join; when the
    key was rewritten meanwhile (here by the operator, standing in for another replica), that
    delete fails and chat reads the key and removes it anyway: ``user_left`` still comes, and no
    presence is left behind."""
    room = unique_name("r")
    (bob, b), (alice, a) = await members(stack.base_url, stack.ws_url, room, 2)
    assert (await b.recv_type("user_joined"))["user_id"] == alice.user_id
    kv = await nc.jetstream().key_value(subjects.KV_PRESENCE)
    keys = await presence_keys(kv, f"{room}.{alice.user_id}.")
    assert len(keys) == 1
    entry = await kv.get(keys[0])
    await kv.put(keys[0], entry.value or b"{}")  # the same value under a newer revision
    await a.close()
    gone = await b.recv_type("user_left", timeout=5)
    assert gone["user_id"] == alice.user_id
    presence = await b.request({"type": "presence", "room": room})
    assert [u["user_id"] for u in presence["online"]] == [bob.user_id]
    await b.close()


async def test_private_room_membership(stack: Stack) -> None:
    room = unique_name("p")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        owner = await register(http)
        guest = await register(http)
        auth = {"Authorization": f"Bearer {owner.access_token}"}
        created = await http.post("/api/rooms", json={"name": room, "private": True}, headers=auth)
        assert created.status_code == 201, created.text
        assert created.json()["private"] is True
        again = await http.post("/api/rooms", json={"name": room}, headers=auth)
        assert again.status_code == 409
        g = await connect(stack.ws_url, guest.access_token)
        denied = await g.request({"type": "join", "room": room})
        assert denied["type"] == "error" and denied["code"] == "forbidden"
        denied_history = await g.request({"type": "history", "room": room})
        assert denied_history["code"] == "forbidden"
        guest_auth = {"Authorization": f"Bearer {guest.access_token}"}
        not_owner = await http.post(
            f"/api/rooms/{room}/members", json={"username": owner.username}, headers=guest_auth
        )
        assert not_owner.status_code == 403
        added = await http.post(f"/api/rooms/{room}/members", json={"username": guest.username}, headers=auth)
        assert added.status_code == 200, added.text
        joined = await join(g, room)
        assert joined["room"] == room
        rooms = (await http.get("/api/rooms", headers=guest_auth)).json()["rooms"]
        assert room in {r["name"] for r in rooms}
        removed = await http.delete(f"/api/rooms/{room}/members/{guest.username}", headers=auth)
        assert removed.status_code == 200
        g2 = await connect(stack.ws_url, guest.access_token)
        assert (await g2.request({"type": "join", "room": room}))["code"] == "forbidden"
        for sock in (g, g2):
            await sock.close()


async def test_general_always_exists_and_rooms_listing(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
        response = await http.get("/api/rooms", headers={"Authorization": f"Bearer {user.access_token}"})
    assert response.status_code == 200
    rooms = {r["name"]: r for r in response.json()["rooms"]}
    assert "general" in rooms and rooms["general"]["private"] is False
    assert isinstance(rooms["general"]["last_seq"], int) and isinstance(rooms["general"]["online"], int)
