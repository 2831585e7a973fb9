"""Authorisation is live (issue 10, items 1 and 2; PROTOCOL.md section 10).

A member removed from a private room stops receiving it on every gateway within 2 s, with a
``removed`` frame, while messages keep flowing to the others; mentions of users who may not
read a room notify nobody.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.conftest import Stack
from tests.support import User, WsClient, connect, join, register, unique_name

REMOVAL_DEADLINE = 2.0


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


async def private_room(http: httpx.AsyncClient, owner: User, *members: User) -> str:
    room = unique_name("p")
    created = await http.post("/api/rooms", json={"name": room, "private": True}, headers=bearer(owner))
    assert created.status_code == 201, created.text
    for member in members:
        added = await http.post(
            f"/api/rooms/{room}/members", json={"username": member.username}, headers=bearer(owner)
        )
        assert added.status_code == 200, added.text
    return room


async def frames_until(client: WsClient, frame_type: str, timeout: float) -> list[dict[str, Any]]:
    """Every frame up to and including the first ``frame_type`` one."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {frame_type!r} within {timeout}s; saw {seen}"
        frame = await client.recv(remaining)
        seen.append(frame)
        if frame.get("type") == frame_type:
            return seen


async def quiet_for(client: WsClient, seconds: float) -> list[dict[str, Any]]:
    """Frames that arrive within ``seconds`` (none expected)."""
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            got.append(await client.recv(remaining))
        except TimeoutError:
            break
    return got


async def test_removed_member_stops_receiving_on_every_gateway_within_2s(stack_factory: Any) -> None:
    two = stack_factory()
    two.start_gateway()
    ws_a, ws_b = two.ws_url, f"ws://127.0.0.1:{two.gateway_ports[1]}/ws"
    async with httpx.AsyncClient(base_url=two.base_url) as http:
        owner, bob, carol = await register(http), await register(http), await register(http)
        room = await private_room(http, owner, bob, carol)
        o = await connect(ws_a, owner.access_token)
        bob_here = await connect(ws_a, bob.access_token)  # same gateway as the sender
        bob_there = await connect(ws_b, bob.access_token)  # another gateway
        c = await connect(ws_b, carol.access_token)
        for client in (o, bob_here, bob_there, c):
            await join(client, room)
        before = await o.request({"type": "chat_message", "room": room, "message": "before"})
        for client in (bob_here, bob_there):
            assert (await client.recv_type("message"))["data"]["seq"] == before["seq"]

        # The owner keeps sending while the removal happens; nothing acked after the removal's
        # answer may reach bob.
        sent_after: list[int] = []
        stop = asyncio.Event()

        async def chatter() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                after_removal = removed_at is not None
                ack = await o.request({"type": "chat_message", "room": room, "message": f"m{n}"})
                assert ack["type"] == "ack", ack
                if after_removal:
                    sent_after.append(ack["seq"])
                await asyncio.sleep(0.03)

        removed_at: float | None = None
        sender = asyncio.create_task(chatter())
        await asyncio.sleep(0.2)
        response = await http.delete(f"/api/rooms/{room}/members/{bob.username}", headers=bearer(owner))
        assert response.status_code == 200, response.text
        removed_at = time.monotonic()
        results = await asyncio.gather(
            frames_until(bob_here, "removed", REMOVAL_DEADLINE),
            frames_until(bob_there, "removed", REMOVAL_DEADLINE),
        )
        assert time.monotonic() - removed_at < REMOVAL_DEADLINE
        await asyncio.sleep(0.5)
        stop.set()
        await sender
        assert sent_after, "the owner sent nothing after the removal"
        for frames in results:
            assert frames[-1] == {"type": "removed", "room": room, "reason": "removed"}
            leaked = [f["data"]["seq"] for f in frames if f.get("type") == "message"]
            assert not set(leaked) & set(sent_after), (leaked, sent_after)
        for client in (bob_here, bob_there):
            late = await quiet_for(client, 0.7)
            assert not [f for f in late if f.get("room") == room and f.get("type") == "message"], late
            refused = await client.request({"type": "chat_message", "room": room, "message": "hello?"})
            assert refused["code"] == "not_joined"
            assert (await client.request({"type": "join", "room": room}))["code"] == "forbidden"
            assert (await client.request({"type": "history", "room": room}))["code"] == "forbidden"
        # the others are unaffected: carol saw every message in order
        history = await o.request({"type": "history", "room": room, "limit": 100})
        seqs = [m["seq"] for m in history["messages"]]
        got = [f["data"]["seq"] for f in await frames_until(c, "message", 5) if f["type"] == "message"]
        while got[-1] < seqs[-1]:
            frame = await c.recv_type("message")
            got.append(frame["data"]["seq"])
        assert got == seqs
        # a re-added member joins and receives again
        added = await http.post(
            f"/api/rooms/{room}/members", json={"username": bob.username}, headers=bearer(owner)
        )
        assert added.status_code == 200
        await join(bob_there, room)
        again = await o.request({"type": "chat_message", "room": room, "message": "welcome back"})
        assert (await bob_there.recv_type("message"))["data"]["seq"] == again["seq"]
        for client in (o, bob_here, bob_there, c):
            await client.close()


async def test_member_who_leaves_a_private_room_gets_removed_and_others_stay(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        owner, bob = await register(http), await register(http)
        room = await private_room(http, owner, bob)
        o = await connect(stack.ws_url, owner.access_token)
        b = await connect(stack.ws_url, bob.access_token)
        await join(o, room)
        await join(b, room)
        response = await http.delete(f"/api/rooms/{room}/members/{bob.username}", headers=bearer(bob))
        assert response.status_code == 200, response.text
        assert (await b.recv_type("removed", timeout=REMOVAL_DEADLINE))["room"] == room
        ack = await o.request({"type": "chat_message", "room": room, "message": "still here"})
        assert ack["type"] == "ack"
        assert not [f for f in await quiet_for(b, 0.5) if f.get("type") == "message"]
        # a stranger cannot remove anyone, nor themselves from a room they are not in
        stranger = await register(http)
        for name in (owner.username, stranger.username):
            denied = await http.delete(f"/api/rooms/{room}/members/{name}", headers=bearer(stranger))
            assert denied.status_code == 403, denied.text
        await o.close()
        await b.close()


async def test_mentions_notify_only_users_who_may_read_the_room(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        owner, member, outsider = await register(http), await register(http), await register(http)
        room = await private_room(http, owner, member)
        o = await connect(stack.ws_url, owner.access_token)
        await join(o, room)
        secret = f"secret plans for @{outsider.username} and @{member.username}"
        ack = await o.request({"type": "chat_message", "room": room, "message": secret})
        assert ack["type"] == "ack"

        async def mentions(user: User) -> list[dict[str, Any]]:
            listing = await http.get("/api/notifications", params={"limit": 500}, headers=bearer(user))
            assert listing.status_code == 200
            return [n for n in listing.json()["items"] if n.get("metadata", {}).get("room") == room]

        deadline = time.monotonic() + 15
        while not await mentions(member):  # the member's notification proves the event was handled
            assert time.monotonic() < deadline, "the member was never notified"
            await asyncio.sleep(0.2)
        assert await mentions(outsider) == []
        listing = (
            await http.get("/api/notifications", params={"limit": 500}, headers=bearer(outsider))
        ).json()
        assert "secret plans" not in str(listing)
        await o.close()
