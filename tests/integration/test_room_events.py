"""Rooms as a log of events (issue 11 items 1-3; PROTOCOL.md section 8), through real sockets.

Every edit, delete, reaction and reply gets the room's next ``seq``, reaches every joined socket
in order, is replayed by ``join`` with ``since``, and shows in materialised ``history``; a
delete's text is gone from every answer and from the stream itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from typing import Any

import httpx
import nats

from shared import room_shards
from shared.stream_reader import direct_batch
from tests.conftest import Stack
from tests.support import User, WsClient, connect, join, register, unique_name


def bearer(user: User) -> dict[str, str]:
    return {"Authorization": f"Bearer {user.access_token}"}


async def pair(stack: Stack) -> tuple[httpx.AsyncClient, User, User, WsClient, WsClient, str]:
    http = httpx.AsyncClient(base_url=stack.base_url)
    alice, bob = await register(http), await register(http)
    a, b = await connect(stack.ws_url, alice.access_token), await connect(stack.ws_url, bob.access_token)
    room = unique_name("r")
    await join(a, room)
    await join(b, room)
    return http, alice, bob, a, b, room


async def room_frames(client: WsClient, room: str, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The next ``count`` room-event frames (frames with a ``data.seq``) of ``room``."""
    got: list[dict[str, Any]] = []
    while len(got) < count:
        frame = await client.recv(timeout)
        if frame.get("room") == room and isinstance(frame.get("data"), dict) and "seq" in frame["data"]:
            got.append(frame)
    return got


async def test_every_room_event_takes_the_next_seq_and_reaches_every_socket_in_order(stack: Stack) -> None:
    http, alice, bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        first = await a.request(
            {"type": "chat_message", "room": room, "message": "hello", "client_msg_id": "m1"}
        )
        assert first["type"] == "ack" and first["seq"] == 1
        reply = await b.request({"type": "chat_message", "room": room, "message": "hi back", "reply_to": 1})
        assert reply["seq"] == 2 and reply["message_id"] == f"{room}:2"
        edit = await a.request({"type": "edit", "room": room, "target": 1, "message": "hello, edited"})
        assert edit == {
            "type": "ack",
            "id": edit["id"],
            "room": room,
            "client_msg_id": None,
            "seq": 3,
            "target": 1,
            "timestamp": edit["timestamp"],
        }
        react = await b.request({"type": "react", "room": room, "target": 1, "emoji": "+1", "op": "add"})
        assert react["seq"] == 4 and react["target"] == 1
        again = await b.request({"type": "react", "room": room, "target": 1, "emoji": "+1"})
        assert again["type"] == "ack" and again["seq"] is None  # changes nothing, stores nothing
        absent = await a.request(
            {"type": "react", "room": room, "target": 1, "emoji": "tada", "op": "remove"}
        )
        assert absent["seq"] is None
        same_text = await a.request({"type": "edit", "room": room, "target": 1, "message": "hello, edited"})
        assert same_text["seq"] is None
        deleted = await b.request({"type": "delete", "room": room, "target": 2})
        assert deleted["seq"] == 5
        after = await a.request({"type": "chat_message", "room": room, "message": "still counting"})
        assert after["seq"] == 6

        for client in (a, b):
            frames = await room_frames(client, room, 6)
            assert [(f["type"], f["data"]["seq"]) for f in frames] == [
                ("message", 1),
                ("message", 2),
                ("message_edited", 3),
                ("reaction", 4),
                ("message_deleted", 5),
                ("message", 6),
            ]
            assert frames[1]["data"]["reply_to"] == 1
            assert frames[2]["data"]["target"] == 1 and frames[2]["data"]["message"] == "hello, edited"
            assert frames[2]["data"]["edited_at"] and frames[2]["data"]["username"] == alice.username
            assert frames[3]["data"] | {"timestamp": None} == {
                "seq": 4,
                "type": "reaction",
                "user_id": bob.user_id,
                "username": bob.username,
                "timestamp": None,
                "target": 1,
                "emoji": "+1",
                "op": "add",
            }
            assert frames[4]["data"]["target"] == 2 and frames[4]["data"]["user_id"] == bob.user_id
            assert all("id" not in f for f in frames)
        joined = await a.request({"type": "join", "room": room})
        assert joined["last_seq"] == 6
        for client in (a, b):
            await client.close()


async def test_history_shows_each_message_in_its_current_state(stack: Stack) -> None:
    http, _alice, bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        await a.request({"type": "chat_message", "room": room, "message": "original"})  # 1
        await b.request({"type": "chat_message", "room": room, "message": "a reply", "reply_to": 1})  # 2
        await b.request({"type": "chat_message", "room": room, "message": "gone soon", "reply_to": 1})  # 3
        await a.request({"type": "edit", "room": room, "target": 1, "message": "rewritten"})  # 4
        await b.request({"type": "react", "room": room, "target": 1, "emoji": "+1"})  # 5
        await a.request({"type": "react", "room": room, "target": 1, "emoji": "🎉"})  # 6
        await a.request({"type": "react", "room": room, "target": 1, "emoji": "+1"})  # 7
        await b.request({"type": "delete", "room": room, "target": 3})  # 8

        page = await b.request({"type": "history", "room": room})
        by_seq = {m["seq"]: m for m in page["messages"]}
        assert sorted(by_seq) == [1, 2, 3] and page["has_more"] is False
        top = by_seq[1]
        assert top["message"] == "rewritten" and top["edited_at"]
        assert top["reply_to"] is None and top["reply_count"] == 1  # the deleted reply no longer counts
        assert top["reactions"] == [
            {"emoji": "+1", "count": 2, "me": True},
            {"emoji": "🎉", "count": 1, "me": False},
        ]
        assert by_seq[2]["reply_to"] == 1 and by_seq[2]["reactions"] == [] and by_seq[2]["reply_count"] == 0
        assert by_seq[3]["deleted"] is True and by_seq[3]["message"] == ""
        assert "gone soon" not in json.dumps(page)

        mine = await a.request({"type": "history", "room": room})
        assert [r["me"] for r in mine["messages"][0]["reactions"]] == [True, True]

        # limit counts messages, not events: many reactions between messages change nothing
        for i in range(4):
            await a.request({"type": "chat_message", "room": room, "message": f"later {i}"})
            for emoji in ("a", "b", "c"):
                await b.request({"type": "react", "room": room, "target": 1, "emoji": emoji})
        latest = await a.request({"type": "history", "room": room, "limit": 2})
        assert [m["message"] for m in latest["messages"]] == ["later 2", "later 3"] and latest[
            "has_more"
        ] is True
        older = await a.request(
            {"type": "history", "room": room, "limit": 3, "before": latest["messages"][0]["seq"]}
        )
        assert [m["message"] for m in older["messages"]] == ["", "later 0", "later 1"]
        assert older["has_more"] is True
        oldest = await a.request({"type": "history", "room": room, "before": older["messages"][0]["seq"]})
        assert [m["seq"] for m in oldest["messages"]] == [1, 2] and oldest["has_more"] is False

        thread = await a.request({"type": "history", "room": room, "thread": 1})
        assert [(m["seq"], m["message"]) for m in thread["messages"]] == [(2, "a reply"), (3, "")]
        assert thread["messages"][1]["deleted"] is True and thread["has_more"] is False
        one = await a.request({"type": "history", "room": room, "thread": 1, "limit": 1})
        assert [m["seq"] for m in one["messages"]] == [3] and one["has_more"] is True
        earlier = await a.request({"type": "history", "room": room, "thread": 1, "before": 3})
        assert [m["seq"] for m in earlier["messages"]] == [2] and earlier["has_more"] is False

        over_http = await http.get(f"/api/rooms/{room}/messages", params={"limit": 50}, headers=bearer(bob))
        assert over_http.status_code == 200
        assert over_http.json()["messages"][0] == top | {
            "reactions": over_http.json()["messages"][0]["reactions"]
        }
        joined = await connect(stack.ws_url, bob.access_token)
        fresh = await join(joined, room)
        assert fresh["recovered"] is False and fresh["messages"][0]["message"] == "rewritten"
        for client in (a, b, joined):
            await client.close()


async def test_join_since_replays_raw_events_and_deleted_text_stays_gone(stack: Stack) -> None:
    http, _alice, bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        await a.request({"type": "chat_message", "room": room, "message": "keep me"})  # 1
        await a.request({"type": "chat_message", "room": room, "message": "secret first draft"})  # 2
        await a.request({"type": "edit", "room": room, "target": 2, "message": "secret second draft"})  # 3
        await b.request({"type": "react", "room": room, "target": 1, "emoji": "+1"})  # 4
        await a.request({"type": "delete", "room": room, "target": 2})  # 5

        late = await connect(stack.ws_url, bob.access_token)
        replay = await join(late, room, since=0)
        assert replay["recovered"] is True and replay["last_seq"] == 5
        items = replay["messages"]
        assert [m["seq"] for m in items] == [1, 2, 3, 4, 5]
        assert [m.get("type", "message") for m in items] == [
            "message",
            "message",
            "message_edited",
            "reaction",
            "message_deleted",
        ]
        assert items[0]["message"] == "keep me"
        assert items[1]["message"] == "" and items[1]["deleted"] is True and items[1]["id"] == f"{room}:2"
        assert items[2]["message"] == "" and items[2]["deleted"] is True and items[2]["target"] == 2
        assert "secret" not in json.dumps(replay)
        partial = await join(late, room, since=3)
        assert [m["seq"] for m in partial["messages"]] == [4, 5]
        page = await late.request({"type": "history", "room": room})
        assert "secret" not in json.dumps(page)
        for client in (a, b, late):
            await client.close()


async def test_a_delete_purges_the_stored_text_from_jetstream(stack: Stack) -> None:
    """Read the raw shard stream as the operator: neither the message nor its edit survives."""
    http, alice, _bob, a, b, room = await pair(stack)
    marker = uuid.uuid4().hex
    async with contextlib.aclosing(http):
        sent = await a.request({"type": "chat_message", "room": room, "message": f"purge-{marker}-original"})
        await a.request(
            {"type": "edit", "room": room, "target": sent["seq"], "message": f"purge-{marker}-edit"}
        )
        nc = await nats.connect(stack.nats.url)
        try:
            where = room_shards.layout(room, 4)

            async def raw() -> bytes:
                out = b""
                start = 1
                while True:  # until an empty batch: a batch may stop short at the server's byte limit
                    batch = await direct_batch(nc, where.stream, subject=">", start_seq=start, batch=1000)
                    if not batch:
                        return out
                    out += b"".join(m.data for m in batch)
                    start = batch[-1].stream_seq + 1

            before = await raw()
            assert f"purge-{marker}-original".encode() in before and f"purge-{marker}-edit".encode() in before
            response = await http.delete(f"/api/rooms/{room}/messages/{sent['seq']}", headers=bearer(alice))
            assert response.status_code == 204, response.text
            # purged before the answer (the contract allows 60 s; natter does it before acking)
            assert marker.encode() not in await raw()
            again = await http.delete(f"/api/rooms/{room}/messages/{sent['seq']}", headers=bearer(alice))
            assert again.status_code == 404
        finally:
            await nc.close()
        frames = await room_frames(b, room, 3)
        assert frames[-1]["type"] == "message_deleted" and frames[-1]["data"]["target"] == sent["seq"]
        for client in (a, b):
            await client.close()


async def test_repeated_client_msg_id_is_answered_with_the_original_ack(stack: Stack) -> None:
    http, alice, _bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        await a.request({"type": "chat_message", "room": room, "message": "target"})  # 1
        first = await b.request(
            {"type": "react", "room": room, "target": 1, "emoji": "x", "client_msg_id": "r1"}
        )
        # removing then re-sending the first request: the original is answered, nothing stored
        await b.request({"type": "react", "room": room, "target": 1, "emoji": "x", "op": "remove"})  # 3
        repeat = await b.request(
            {"type": "react", "room": room, "target": 1, "emoji": "x", "client_msg_id": "r1"}
        )
        assert repeat["seq"] == first["seq"] == 2 and repeat["timestamp"] == first["timestamp"]
        edit = await a.request(
            {"type": "edit", "room": room, "target": 1, "message": "v2", "client_msg_id": "e1"}
        )
        edit_again = await a.request(
            {"type": "edit", "room": room, "target": 1, "message": "v2", "client_msg_id": "e1"}
        )
        assert edit_again["seq"] == edit["seq"] == 4
        reply = await b.request(
            {"type": "chat_message", "room": room, "message": "re", "reply_to": 1, "client_msg_id": "p1"}
        )
        reply_again = await b.request(
            {"type": "chat_message", "room": room, "message": "re", "reply_to": 1, "client_msg_id": "p1"}
        )
        assert reply_again["seq"] == reply["seq"] == 5 and reply_again["timestamp"] == reply["timestamp"]
        state = await join(await connect(stack.ws_url, alice.access_token), room, since=0)
        assert [m["seq"] for m in state["messages"]] == [1, 2, 3, 4, 5]
        page = await a.request({"type": "history", "room": room})
        assert page["messages"][0]["reply_count"] == 1 and page["messages"][0]["reactions"] == []
        for client in (a, b):
            await client.close()


async def test_bad_room_event_requests_get_clear_errors_and_change_nothing(stack: Stack) -> None:
    http, _alice, _bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        await a.request({"type": "chat_message", "room": room, "message": "mine"})  # 1
        cases: list[tuple[WsClient, dict[str, Any], str]] = [
            (b, {"type": "edit", "room": room, "target": 1, "message": "not yours"}, "forbidden"),
            (b, {"type": "delete", "room": room, "target": 1}, "forbidden"),
            (a, {"type": "edit", "room": room, "target": 1, "message": "   "}, "validation_error"),
            (a, {"type": "edit", "room": room, "target": 99, "message": "x"}, "message_not_found"),
            (a, {"type": "react", "room": room, "target": 1, "emoji": "two words"}, "validation_error"),
            (a, {"type": "react", "room": room, "target": 1, "emoji": "x" * 33}, "validation_error"),
            (a, {"type": "react", "room": room, "target": 1, "emoji": "\u0007"}, "validation_error"),
            (
                a,
                {"type": "react", "room": room, "target": 1, "emoji": "+1", "op": "toggle"},
                "validation_error",
            ),
            (a, {"type": "react", "room": room, "target": 0, "emoji": "+1"}, "validation_error"),
            (a, {"type": "chat_message", "room": room, "message": "re", "reply_to": 42}, "message_not_found"),
            (a, {"type": "react", "room": "not-joined-here", "target": 1, "emoji": "+1"}, "not_joined"),
            (a, {"type": "delete", "room": "Bad Room", "target": 1}, "invalid_room"),
        ]
        for client, frame, code in cases:
            answer = await client.request(frame)
            assert answer["type"] == "error" and answer["code"] == code, (frame, answer)
        for emoji in range(20):
            assert (await b.request({"type": "react", "room": room, "target": 1, "emoji": f"e{emoji}"}))[
                "seq"
            ]
        too_many = await b.request({"type": "react", "room": room, "target": 1, "emoji": "e20"})
        assert too_many["code"] == "validation_error"
        await a.request({"type": "delete", "room": room, "target": 1})  # 22
        for frame in (
            {"type": "edit", "room": room, "target": 1, "message": "x"},
            {"type": "react", "room": room, "target": 1, "emoji": "+1"},
            {"type": "delete", "room": room, "target": 1},
            {"type": "chat_message", "room": room, "message": "re", "reply_to": 1},
        ):
            assert (await a.request(frame))["code"] == "message_not_found", frame
        assert (await a.request({"type": "join", "room": room}))["last_seq"] == 22
        assert (await a.request({"type": "ping"}))["type"] == "pong"  # the socket is fine
        for client in (a, b):
            await client.close()


async def test_events_from_two_sockets_at_once_keep_one_gap_free_order(stack: Stack) -> None:
    """Concurrent messages, reactions and edits through one gateway: every seq exactly once."""
    http, alice, _bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        await a.request({"type": "chat_message", "room": room, "message": "anchor"})  # 1

        async def burst(client: WsClient, who: str) -> list[int | None]:
            acks = []
            for i in range(15):
                acks.append(
                    (await client.request({"type": "chat_message", "room": room, "message": f"{who}{i}"}))[
                        "seq"
                    ]
                )
                acks.append(
                    (
                        await client.request(
                            {
                                "type": "react",
                                "room": room,
                                "target": 1,
                                "emoji": f"{who}{i % 10}",  # 20 distinct emoji in all, the maximum
                                "op": "add" if i < 10 else "remove",
                            }
                        )
                    )["seq"]
                )
            return acks

        got_a, got_b = await asyncio.gather(burst(a, "a"), burst(b, "b"))
        seqs = sorted(s for s in got_a + got_b if s is not None)
        assert seqs == list(range(2, 62))
        watcher = await connect(stack.ws_url, alice.access_token)
        replay = await join(watcher, room, since=0)
        assert [m["seq"] for m in replay["messages"]] == list(range(1, 62))
        for client in (a, b):
            frames = await room_frames(client, room, 61)
            assert [f["data"]["seq"] for f in frames] == list(range(1, 62))
        for client in (a, b, watcher):
            await client.close()


async def test_a_reply_reusing_a_messages_client_msg_id_gets_that_messages_ack(stack: Stack) -> None:
    """A client_msg_id used again is answered with the original's ack, even when the repeat is
    a reply (stored as a batch) and the original a plain message (found by its Nats-Msg-Id)."""
    http, _alice, _bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        first = await a.request(
            {"type": "chat_message", "room": room, "message": "one", "client_msg_id": "same"}
        )
        again = await a.request(
            {"type": "chat_message", "room": room, "message": "two", "client_msg_id": "same", "reply_to": 1}
        )
        assert again["type"] == "ack" and again["seq"] == first["seq"] == 1
        assert again["timestamp"] == first["timestamp"]
        after = await a.request({"type": "chat_message", "room": room, "message": "three"})
        assert after["seq"] == 2  # the repeat stored nothing
        for client in (a, b):
            await client.close()


async def test_a_retry_of_a_deleted_message_gets_its_ack_and_stores_nothing(stack: Stack) -> None:
    http, alice, _bob, a, b, room = await pair(stack)
    async with contextlib.aclosing(http):
        frame = {"type": "chat_message", "room": room, "message": "soon gone", "client_msg_id": "retry-me"}
        first = await a.request(frame)
        deleted = await http.delete(f"/api/rooms/{room}/messages/{first['seq']}", headers=bearer(alice))
        assert deleted.status_code == 204
        again = await a.request(frame)
        assert again["type"] == "ack" and again["seq"] == first["seq"]
        assert again["timestamp"] == first["timestamp"]
        nxt = await a.request({"type": "chat_message", "room": room, "message": "next"})
        assert nxt["seq"] == first["seq"] + 2  # the delete took one seq; the retry none
        for client in (a, b):
            await client.close()
