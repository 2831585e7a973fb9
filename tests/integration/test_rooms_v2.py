"""Read state, my rooms, direct messages, roles and moderation (issue 11 items 4-6; PROTOCOL.md
sections 9 and 10), through real sockets and the HTTP API.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
from nats.aio.client import Client

from chat_service.read_state import MARKER_MOVE_INTERVAL
from shared import subjects
from tests.conftest import Stack
from tests.support import User, WsClient, connect, join, register, service_token, unique_name


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


async def room_frames(
    client: WsClient, room: str, kind: str, count: int = 1, timeout: float = 5.0
) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count:
        frame = await client.recv(max(0.01, deadline - time.monotonic()))
        if frame.get("type") == kind and frame.get("room") == room:
            got.append(frame)
    return got


async def no_frame(client: WsClient, kind: str, seconds: float = 0.5) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            frame = await client.recv(left)
        except TimeoutError:
            return
        assert frame.get("type") != kind, frame


async def test_read_markers_move_forward_and_reach_the_users_other_sockets(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, bob = await register(http), await register(http)
        room = unique_name("r")
        a = await connect(stack.ws_url, alice.access_token)
        b1 = await connect(stack.ws_url, bob.access_token)
        b2 = await connect(stack.ws_url, bob.access_token)
        for client in (a, b1, b2):
            await join(client, room)
        for i in range(3):
            await a.request({"type": "chat_message", "room": room, "message": f"m{i}"})  # 1..3
        marker = await b1.request({"type": "read", "room": room, "seq": 2})
        assert marker == {"type": "read_marker", "id": marker["id"], "room": room, "seq": 2, "unread": 1}
        pushed = (await room_frames(b2, room, "read_marker"))[0]
        assert pushed == {"type": "read_marker", "room": room, "seq": 2, "unread": 1}
        await no_frame(b1, "read_marker")  # the asking socket has its answer, no copy
        backwards = await b1.request({"type": "read", "room": room, "seq": 1})
        assert backwards["seq"] == 2  # never moves back
        beyond = await b1.request({"type": "read", "room": room, "seq": 99})
        assert beyond["seq"] == 3 and beyond["unread"] == 0  # clamped to the room's last seq

        # sending moves the sender's marker (and tells the sender's other sockets)
        await b1.request({"type": "chat_message", "room": room, "message": "bob speaks"})  # 4
        moved = await room_frames(b2, room, "read_marker", 2)  # 3 (the clamped read), then 4
        assert moved[-1]["seq"] == 4 and moved[-1]["unread"] == 0
        await no_frame(b1, "read_marker")  # the sending socket knows
        rejoined = await join(await connect(stack.ws_url, alice.access_token), room)
        assert (rejoined["read_seq"], rejoined["unread"]) == (3, 1)
        # a deleted message no longer counts as unread
        await b1.request({"type": "delete", "room": room, "target": 4})  # 5
        again = await join(await connect(stack.ws_url, alice.access_token), room)
        assert (again["last_seq"], again["read_seq"], again["unread"]) == (5, 3, 0)
        for client in (a, b1, b2):
            await client.close()


async def test_a_senders_marker_moves_after_another_replica_wrote_the_membership(
    stack: Stack, nc: Client
) -> None:
    """A chat replica tries the compare-and-set of a sender's marker on the revision it wrote
    last; when another writer changed the entry meanwhile (here the operator, standing in for
    another replica) that set fails, and the replica reads the entry and moves the marker anyway."""
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        bob = await register(http)
        room = unique_name("r")
        b1 = await connect(stack.ws_url, bob.access_token)
        b2 = await connect(stack.ws_url, bob.access_token)
        for client in (b1, b2):
            await join(client, room)
        await b1.request({"type": "chat_message", "room": room, "message": "one"})
        assert (await room_frames(b2, room, "read_marker"))[0]["seq"] == 1
        kv = await nc.jetstream().key_value(subjects.KV_MEMBERSHIPS)
        key = f"{bob.user_id}.{room}"
        entry = await kv.get(key)
        assert entry.value is not None and json.loads(entry.value)["read_seq"] == 1
        await kv.put(key, entry.value)  # the same marker under a newer revision
        await asyncio.sleep(MARKER_MOVE_INTERVAL * 2)  # not coalesced with the first move
        await b1.request({"type": "chat_message", "room": room, "message": "two"})
        assert (await room_frames(b2, room, "read_marker"))[0]["seq"] == 2
        stored = (await kv.get(key)).value
        assert stored is not None and json.loads(stored)["read_seq"] == 2
        for client in (b1, b2):
            await client.close()


async def test_my_rooms_lists_memberships_newest_first_without_deleted_text(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, bob = await register(http), await register(http)
        older, newer = unique_name("old"), unique_name("new")
        a = await connect(stack.ws_url, alice.access_token)
        b = await connect(stack.ws_url, bob.access_token)
        for room in (older, newer):
            await join(a, room)
            await join(b, room)
        await b.request({"type": "chat_message", "room": older, "message": "old news"})  # 1
        await b.request({"type": "chat_message", "room": newer, "message": "x" * 300})  # 1
        await b.request({"type": "chat_message", "room": newer, "message": "secret, soon deleted"})  # 2
        await b.request({"type": "delete", "room": newer, "target": 2})  # 3
        listing = await http.get("/api/me/rooms", headers=bearer(alice))
        assert listing.status_code == 200, listing.text
        rows = {row["name"]: row for row in listing.json()["rooms"]}
        names = [row["name"] for row in listing.json()["rooms"]]
        assert names.index(newer) < names.index(older)  # newest activity first
        assert rows[newer] | {"last_message": None} == {
            "name": newer,
            "private": False,
            "dm": False,
            "peer": None,
            "role": "member",
            "last_seq": 3,
            "read_seq": 0,
            "unread": 1,
            "last_message": None,
        }
        preview = rows[newer]["last_message"]
        assert preview["seq"] == 1 and preview["message"] == "x" * 200 and preview["username"] == bob.username
        assert "secret" not in listing.text
        assert rows[older]["unread"] == 1 and rows[older]["last_message"]["message"] == "old news"

        left = await http.post(f"/api/rooms/{older}/leave", headers=bearer(alice))
        assert left.status_code == 204
        after = await http.get("/api/me/rooms", headers=bearer(alice))
        assert older not in {row["name"] for row in after.json()["rooms"]}
        assert newer in {row["name"] for row in after.json()["rooms"]}
        for client in (a, b):
            await client.close()


async def test_direct_messages_are_one_private_room_per_pair(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, bob, eve = await register(http), await register(http), await register(http)
        opened = await http.post("/api/dms", json={"username": bob.username}, headers=bearer(alice))
        assert opened.status_code == 201, opened.text
        room = opened.json()["room"]
        assert room.startswith("dm-") and opened.json()["peer"] == {
            "user_id": bob.user_id,
            "username": bob.username,
        }
        back = await http.post("/api/dms", json={"username": alice.username}, headers=bearer(bob))
        assert back.status_code == 200 and back.json()["room"] == room
        assert back.json()["peer"]["user_id"] == alice.user_id

        a, b = await connect(stack.ws_url, alice.access_token), await connect(stack.ws_url, bob.access_token)
        await join(a, room)
        await join(b, room)
        await a.request({"type": "chat_message", "room": room, "message": "just us"})
        assert (await room_frames(b, room, "message"))[0]["data"]["message"] == "just us"
        intruder = await connect(stack.ws_url, eve.access_token)
        assert (await intruder.request({"type": "join", "room": room}))["code"] == "forbidden"
        assert (await intruder.request({"type": "join", "room": "dm-0123abcd"}))["code"] == "forbidden"
        reserved = await http.post("/api/rooms", json={"name": "dm-mine"}, headers=bearer(eve))
        assert reserved.status_code == 403
        for refused in (
            await http.post(
                f"/api/rooms/{room}/members", json={"username": eve.username}, headers=bearer(alice)
            ),
            await http.delete(f"/api/rooms/{room}/members/{bob.username}", headers=bearer(alice)),
            await http.post(
                f"/api/rooms/{room}/bans", json={"username": bob.username}, headers=bearer(alice)
            ),
            await http.post(f"/api/rooms/{room}/leave", headers=bearer(alice)),
        ):
            assert refused.status_code == 409, refused.text
        self_dm = await http.post("/api/dms", json={"username": alice.username}, headers=bearer(alice))
        assert self_dm.status_code == 409
        nobody = await http.post("/api/dms", json={"username": unique_name()}, headers=bearer(alice))
        assert nobody.status_code == 404
        mine = {
            row["name"]: row for row in (await http.get("/api/me/rooms", headers=bearer(bob))).json()["rooms"]
        }
        assert mine[room]["dm"] is True and mine[room]["peer"]["username"] == alice.username
        assert mine[room]["private"] is True and mine[room]["unread"] == 1
        for client in (a, b, intruder):
            await client.close()


async def test_roles_bans_and_mutes_take_effect_live_and_are_room_events(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        owner, mod, carol, dave = [await register(http) for _ in range(4)]
        room = unique_name("p")
        assert (
            await http.post("/api/rooms", json={"name": room, "private": True}, headers=bearer(owner))
        ).status_code == 201
        for user in (mod, carol, dave):
            added = await http.post(
                f"/api/rooms/{room}/members", json={"username": user.username}, headers=bearer(owner)
            )
            assert added.status_code == 200, added.text
        promoted = await http.put(
            f"/api/rooms/{room}/members/{mod.username}", json={"role": "moderator"}, headers=bearer(owner)
        )
        assert promoted.status_code == 200 and promoted.json()["moderators"] == [mod.user_id]
        not_owner = await http.put(
            f"/api/rooms/{room}/members/{dave.username}", json={"role": "moderator"}, headers=bearer(mod)
        )
        assert not_owner.status_code == 403

        o = await connect(stack.ws_url, owner.access_token)
        c = await connect(stack.ws_url, carol.access_token)
        d = await connect(stack.ws_url, dave.access_token)
        for client in (o, c, d):
            await join(client, room)
        # a moderator adds, and cannot touch the owner
        assert (
            await http.post(f"/api/rooms/{room}/bans", json={"username": owner.username}, headers=bearer(mod))
        ).status_code == 403
        banned_at = time.monotonic()
        ban = await http.post(
            f"/api/rooms/{room}/bans", json={"username": carol.username}, headers=bearer(mod)
        )
        assert ban.status_code == 200, ban.text
        removed = await c.recv_type("removed", timeout=2)
        assert removed == {"type": "removed", "room": room, "reason": "banned"}
        assert time.monotonic() - banned_at < 2
        assert (await c.request({"type": "join", "room": room}))["code"] == "forbidden"
        assert (await c.request({"type": "history", "room": room}))["code"] == "forbidden"
        events = await room_frames(o, room, "member", 1)
        assert (
            events[0]["data"]["action"] == "banned"
            and events[0]["data"]["member"]["user_id"] == carol.user_id
        )
        assert events[0]["data"]["user_id"] == mod.user_id and "until" not in events[0]["data"]

        # mutes: dave still reads, cannot speak
        muted = await http.post(
            f"/api/rooms/{room}/mutes",
            json={"username": dave.username, "duration_s": 600},
            headers=bearer(mod),
        )
        assert muted.status_code == 200
        mute_event = (await room_frames(o, room, "member", 1))[0]["data"]
        assert mute_event["action"] == "muted" and mute_event["until"].endswith("Z")
        sent = await o.request({"type": "chat_message", "room": room, "message": "owner speaks"})
        for frame in (
            {"type": "chat_message", "room": room, "message": "let me talk"},
            {"type": "edit", "room": room, "target": sent["seq"], "message": "x"},
            {"type": "react", "room": room, "target": sent["seq"], "emoji": "+1"},
        ):
            assert (await d.request(frame))["code"] == "muted", frame
        assert (await room_frames(d, room, "message"))[0]["data"]["message"] == "owner speaks"
        assert (
            await http.delete(f"/api/rooms/{room}/mutes/{dave.username}", headers=bearer(mod))
        ).status_code == 200
        dave_says = await d.request({"type": "chat_message", "room": room, "message": "thanks"})
        assert dave_says["type"] == "ack"
        # a moderator deletes someone else's message; a member cannot
        assert (await d.request({"type": "delete", "room": room, "target": sent["seq"]}))[
            "code"
        ] == "forbidden"
        m = await connect(stack.ws_url, mod.access_token)
        await join(m, room)
        assert (await m.request({"type": "delete", "room": room, "target": dave_says["seq"]}))["seq"]

        # unban: carol may be added back and join again
        assert (
            await http.delete(f"/api/rooms/{room}/bans/{carol.username}", headers=bearer(owner))
        ).status_code == 200
        assert (
            await http.post(
                f"/api/rooms/{room}/members", json={"username": carol.username}, headers=bearer(owner)
            )
        ).status_code == 200
        back = await connect(stack.ws_url, carol.access_token)
        assert (await join(back, room))["last_seq"] >= 1
        replay = await join(await connect(stack.ws_url, owner.access_token), room, since=0)
        actions = [item["action"] for item in replay["messages"] if item.get("type") == "member"]
        assert actions == [
            "added",
            "added",
            "added",
            "role",
            "banned",
            "muted",
            "unmuted",
            "unbanned",
            "added",
        ]
        for client in (o, c, d, m, back):
            await client.close()


async def test_a_timed_ban_on_a_public_room_ends_by_itself(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        spammer = await register(http)
        room = unique_name("pub")
        s = await connect(stack.ws_url, spammer.access_token)
        await join(s, room)
        token = await service_token(stack.nats.url, "mod-bot")
        ban = await http.post(
            f"/api/rooms/{room}/bans",
            json={"username": spammer.username, "duration_s": 1},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert ban.status_code == 200, ban.text
        assert (await s.recv_type("removed", timeout=2))["reason"] == "banned"
        assert (await s.request({"type": "join", "room": room}))["code"] == "forbidden"
        await asyncio.sleep(1.2)
        assert (await s.request({"type": "join", "room": room}))["type"] == "joined"
        await s.close()


async def test_a_public_room_has_no_owner_and_a_service_acts_in_it_as_one_identity(stack: Stack) -> None:
    """PROTOCOL.md section 10: public rooms have no owner, so creating one over HTTP gives its
    creator no say over others; a service token acts as owner, and every event it causes
    carries the ``svc:<name>`` id its posts carry (section 12)."""
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        creator, other = await register(http), await register(http)
        room = unique_name("pub")
        created = await http.post("/api/rooms", json={"name": room}, headers=bearer(creator))
        assert created.status_code == 201, created.text
        assert created.json()["owner"] is None
        c = await connect(stack.ws_url, creator.access_token)
        o = await connect(stack.ws_url, other.access_token)
        await join(c, room)
        await join(o, room)
        posted = await o.request({"type": "chat_message", "room": room, "message": "mine"})
        assert (await c.request({"type": "delete", "room": room, "target": posted["seq"]}))[
            "code"
        ] == "forbidden"
        for refused in (
            http.post(f"/api/rooms/{room}/bans", json={"username": other.username}, headers=bearer(creator)),
            http.post(f"/api/rooms/{room}/mutes", json={"username": other.username}, headers=bearer(creator)),
            http.put(
                f"/api/rooms/{room}/members/{other.username}",
                json={"role": "moderator"},
                headers=bearer(creator),
            ),
        ):
            assert (await refused).status_code == 403
        mine = await http.get("/api/me/rooms", headers=bearer(creator))
        assert {row["name"]: row["role"] for row in mine.json()["rooms"]}[room] == "member"

        token = await service_token(stack.nats.url, "room-bot")
        service = {"Authorization": f"Bearer {token}"}
        promoted = await http.put(
            f"/api/rooms/{room}/members/{creator.username}", json={"role": "moderator"}, headers=service
        )
        assert promoted.status_code == 200, promoted.text
        role = (await room_frames(o, room, "member"))[0]["data"]
        assert (role["action"], role["user_id"], role["username"]) == ("role", "svc:room-bot", "room-bot")
        bot_post = await http.post(f"/api/rooms/{room}/messages", json={"message": "hello"}, headers=service)
        assert bot_post.status_code == 201, bot_post.text
        deleted = await http.delete(f"/api/rooms/{room}/messages/{posted['seq']}", headers=service)
        assert deleted.status_code == 204, deleted.text
        frames = await room_frames(o, room, "message") + await room_frames(o, room, "message_deleted")
        assert [frame["data"]["user_id"] for frame in frames] == ["svc:room-bot", "svc:room-bot"]
        # Now a moderator, the creator may moderate like any other moderator.
        ban = await http.post(
            f"/api/rooms/{room}/bans", json={"username": other.username}, headers=bearer(creator)
        )
        assert ban.status_code == 200, ban.text
        for client in (c, o):
            await client.close()
