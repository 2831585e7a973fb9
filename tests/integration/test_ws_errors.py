"""PROTOCOL.md section 7: each error code, the socket stays usable, nobody else is affected."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from tests.conftest import Stack
from tests.support import WsClient, connect, expect_close, join, register, unique_name


async def pair(stack: Stack, room: str) -> tuple[WsClient, WsClient]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        a_user = await register(http)
        b_user = await register(http)
    a = await connect(stack.ws_url, a_user.access_token)
    b = await connect(stack.ws_url, b_user.access_token)
    await join(a, room)
    await join(b, room)
    return a, b


async def still_usable(a: WsClient, b: WsClient, room: str) -> None:
    """The offending socket still answers and can send; the other member receives it."""
    assert (await a.request({"type": "ping"}))["type"] == "pong"
    ack = await a.request({"type": "chat_message", "room": room, "message": "still here"})
    assert ack["type"] == "ack"
    delivered = await b.recv_type("message")
    assert delivered["data"]["seq"] == ack["seq"]


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "invalid_json"),
        (json.dumps({"type": "dance", "id": 1}), "unknown_type"),
        (json.dumps({"type": "chat_message", "room": "general", "message": 5, "id": 2}), "validation_error"),
        (json.dumps({"type": "join", "room": "a.b", "id": 3}), "invalid_room"),
        (json.dumps({"type": "join", "room": "*", "id": 4}), "invalid_room"),
        (json.dumps({"type": "join", "room": ">", "id": 5}), "invalid_room"),
        (json.dumps({"type": "join", "room": "has space", "id": 6}), "invalid_room"),
        (
            json.dumps({"type": "chat_message", "room": "nowhere-joined", "message": "x", "id": 7}),
            "not_joined",
        ),
        (json.dumps({"type": "typing", "room": "nowhere-joined", "id": 8}), "not_joined"),
        (json.dumps({"type": "leave", "room": "nowhere-joined", "id": 9}), "not_joined"),
        (json.dumps({"type": "history", "room": "no-such-room-xyz", "id": 10}), "room_not_found"),
        (json.dumps({"type": "mark_read", "id": 11}), "validation_error"),
    ],
)
async def test_bad_frame_gets_error_and_changes_nothing(stack: Stack, raw: str, code: str) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    await a.conn.send(raw)
    error = await a.recv_type("error")
    assert error["code"] == code, error
    assert isinstance(error["message"], str) and error["message"]
    sent = json.loads(raw) if raw.startswith('{"') else {}
    if "id" in sent:
        assert error["id"] == sent["id"]
    if code == "validation_error" and sent.get("type") == "chat_message":
        assert error["details"] and error["details"][0]["loc"] == ["message"]
    await still_usable(a, b, room)
    history = await b.request({"type": "history", "room": room})
    assert [m["message"] for m in history["messages"]] == ["still here"]
    await a.close()
    await b.close()


async def test_binary_frame_is_unsupported_and_socket_stays(stack: Stack) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    await a.conn.send(b"\x00\x01binary")
    error = await a.recv_type("error")
    assert error["code"] == "unsupported_frame"
    await still_usable(a, b, room)
    await a.close()
    await b.close()


async def test_oversized_frame_closes_1009_only_that_socket(stack: Stack) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    await a.conn.send(json.dumps({"type": "chat_message", "room": room, "message": "x" * (70 * 1024)}))
    code, _ = await expect_close(a)
    assert code == 1009
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    history = await b.request({"type": "history", "room": room})
    assert history["messages"] == []
    await b.close()


async def test_too_long_message_is_validation_error(stack: Stack) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    answer = await a.request({"type": "chat_message", "room": room, "message": "y" * 4001})
    assert answer["code"] == "validation_error"
    await still_usable(a, b, room)
    await a.close()
    await b.close()


async def test_rate_limit_then_recovery(stack: Stack) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    for n in range(60):
        await a.send({"type": "ping", "id": n})
    answers = [await a.recv() for _ in range(60)]
    limited = [f for f in answers if f["type"] == "error"]
    assert limited and all(f["code"] == "rate_limited" for f in limited)
    assert all(f["retry_after"] > 0 for f in limited)
    assert all(isinstance(f["id"], int) for f in limited)  # the rejected frame's id is echoed
    assert sum(1 for f in answers if f["type"] == "pong") >= 38  # burst 40, minus the join
    await asyncio.sleep(2.5)
    await still_usable(a, b, room)
    await a.close()
    await b.close()


async def test_persistent_abuse_closes_1008(stack: Stack) -> None:
    room = unique_name("r")
    a, b = await pair(stack, room)
    for n in range(200):
        await a.send({"type": "ping", "id": n})
    code, reason = await expect_close(a, timeout=10)
    assert code == 1008 and "rate" in (reason or "")
    assert (await b.request({"type": "ping"}))["type"] == "pong"
    await b.close()
