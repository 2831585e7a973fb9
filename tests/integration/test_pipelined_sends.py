"""Pipelined sends (gateway.send_pipeline, ``chat.send.batch``; docs/protocol.md "Pipelined
sends"), through a real gateway and real services: a socket's ``chat_message`` frames do not
wait for each other's acks, yet every answer comes in arrival order, the messages are stored in
the order they were sent, exactly once per ``client_msg_id``, and any other frame waits for the
sends before it.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import pytest
from nats.aio.client import Client

from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.internal import SEND_BATCH_MAX
from shared.nats_client import request
from tests.conftest import Stack
from tests.support import WsClient, connect, join, register, requests_served, unique_name


async def two_members(stack: Stack, room: str) -> tuple[Any, WsClient, Any, WsClient]:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice, bob = await register(http), await register(http)
    a = await connect(stack.ws_url, alice.access_token)
    b = await connect(stack.ws_url, bob.access_token)
    await join(a, room)
    await join(b, room)
    return alice, a, bob, b


async def batches_served(stack: Stack) -> int:
    """``chat.send.batch`` requests chat's replicas have answered."""
    return await requests_served(stack.nats.url, "chat", subjects.CHAT_SEND_BATCH)


async def answers(client: WsClient, ids: list[str], timeout: float = 10.0) -> list[dict[str, Any]]:
    """The frames answering ``ids`` (pushed frames skipped), in the order they arrive."""
    wanted = set(ids)
    found: list[dict[str, Any]] = []
    while len(found) < len(ids):
        frame = await client.recv(timeout)
        if frame.get("id") in wanted:
            found.append(frame)
    return found


async def messages(client: WsClient, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
    """The next ``count`` ``message`` frames' data."""
    return [(await client.recv_type("message", timeout))["data"] for _ in range(count)]


async def test_a_burst_of_sends_is_pipelined_stored_in_order_and_acked_in_order(stack: Stack) -> None:
    room = unique_name("pipe")
    _, a, _, b = await two_members(stack, room)
    before = await batches_served(stack)
    count = 30  # within the default burst of the per-socket rate limit (40)
    ids = [f"s{n}" for n in range(count)]
    for n, request_id in enumerate(ids):  # back to back: no send waits for an ack
        await a.send({"type": "chat_message", "room": room, "message": f"m{n}", "id": request_id})
    acks = await answers(a, ids)
    assert [ack["id"] for ack in acks] == ids
    assert [ack["type"] for ack in acks] == ["ack"] * count
    assert [ack["seq"] for ack in acks] == list(range(1, count + 1))
    delivered = await messages(b, count)
    assert [(m["seq"], m["message"]) for m in delivered] == [(n + 1, f"m{n}") for n in range(count)]
    # The frames that arrived while a send was in flight went as batches, not one by one.
    assert await batches_served(stack) > before
    await a.close()
    await b.close()


async def test_other_frames_wait_for_the_sends_before_them(stack: Stack) -> None:
    room = unique_name("pipe")
    _, a, _, b = await two_members(stack, room)
    frames: list[dict[str, Any]] = [
        {"type": "chat_message", "room": room, "message": "one", "id": "1"},
        {"type": "chat_message", "room": room, "message": "two", "id": "2"},
        {"type": "chat_message", "room": unique_name("elsewhere"), "message": "x", "id": "3"},
        {"type": "chat_message", "room": room, "message": "three", "id": "4"},
        {"type": "chat_message", "room": room, "message": "re", "reply_to": 999, "id": "4b"},
        {"type": "ping", "id": "5"},
        {"type": "chat_message", "room": room, "message": "   ", "id": "6"},
        {"type": "chat_message", "room": room, "message": "four", "id": "7"},
        {"type": "leave", "room": room, "id": "8"},
        {"type": "chat_message", "room": room, "message": "after leaving", "id": "9"},
    ]
    for frame in frames:
        await a.send(frame)
    got = await answers(a, [f["id"] for f in frames])
    assert [(f["id"], f["type"], f.get("code")) for f in got] == [
        ("1", "ack", None),
        ("2", "ack", None),
        ("3", "error", ErrorCode.NOT_JOINED.value),
        ("4", "ack", None),
        ("4b", "error", ErrorCode.MESSAGE_NOT_FOUND.value),  # chat's own refusal, in its place
        ("5", "pong", None),
        ("6", "error", ErrorCode.VALIDATION_ERROR.value),
        ("7", "ack", None),
        ("8", "left", None),
        ("9", "error", ErrorCode.NOT_JOINED.value),
    ]
    assert [f["seq"] for f in got if f["type"] == "ack"] == [1, 2, 3, 4]
    delivered = await messages(b, 4)
    assert [m["message"] for m in delivered] == ["one", "two", "three", "four"]
    await a.close()
    await b.close()


async def test_a_repeated_client_msg_id_within_a_burst_is_stored_once(stack: Stack) -> None:
    room = unique_name("pipe")
    _, a, _, b = await two_members(stack, room)
    cmids = ["x", "y", "x", "z", "y", "x"]
    for n, cmid in enumerate(cmids):
        await a.send(
            {"type": "chat_message", "room": room, "message": f"m{n}", "client_msg_id": cmid, "id": n}
        )
    acks = await answers(a, list(range(len(cmids))))
    by_cmid: dict[str, set[int]] = {}
    for ack in acks:
        assert ack["type"] == "ack", ack
        by_cmid.setdefault(ack["client_msg_id"], set()).add(ack["seq"])
    assert by_cmid == {"x": {1}, "y": {2}, "z": {3}}
    delivered = await messages(b, 3)
    assert [(m["seq"], m["message"]) for m in delivered] == [(1, "m0"), (2, "m1"), (3, "m3")]
    page = await b.request({"type": "history", "room": room})
    assert [m["seq"] for m in page["messages"]] == [1, 2, 3]
    await a.close()
    await b.close()


async def test_sends_read_before_a_disconnect_are_stored(stack: Stack) -> None:
    room = unique_name("pipe")
    _, a, _, b = await two_members(stack, room)
    count = 25
    for n in range(count):
        await a.send({"type": "chat_message", "room": room, "message": f"last words {n}"})
    await a.close()
    delivered = await messages(b, count)
    assert [m["message"] for m in delivered] == [f"last words {n}" for n in range(count)]
    await b.close()


# --- chat.send.batch itself ---------------------------------------------------------------------


def actor() -> dict[str, str]:
    user_id = f"u-{uuid.uuid4().hex[:12]}"
    return {"user_id": user_id, "username": user_id}


async def batch(nc: Client, sends: list[Any]) -> list[dict[str, Any]]:
    raw = await request(nc, subjects.CHAT_SEND_BATCH, json.dumps({"sends": sends}).encode(), timeout=5)
    return [json.loads(line) for line in raw.split(b"\n")]


async def test_a_batch_answers_each_item_on_its_own_and_keeps_replies_in_order(nc: Client) -> None:
    alice, room = actor(), unique_name("batch")
    await request(
        nc,
        subjects.CHAT_JOIN,
        json.dumps({**alice, "room": room, "gateway_id": "g-test", "first_local": True}).encode(),
        timeout=5,
    )
    first = await batch(nc, [{**alice, "room": room, "message": "parent"}])
    assert first[0]["type"] == "ack" and first[0]["seq"] == 1
    lines = await batch(
        nc,
        [
            {**alice, "room": room, "message": "a"},
            {**alice, "room": room, "message": "reply", "reply_to": 1},
            {**alice, "room": room},  # no message: this item's validation_error only
            {**alice, "room": room, "message": "b"},
            {**alice, "room": room, "message": "reply to nothing", "reply_to": 999},
            {**alice, "room": room, "message": "c"},
            "not an object",
        ],
    )
    assert [(line["type"], line.get("seq"), line.get("code")) for line in lines] == [
        ("ack", 2, None),
        ("ack", 3, None),
        ("error", None, ErrorCode.VALIDATION_ERROR.value),
        ("ack", 4, None),
        ("error", None, ErrorCode.MESSAGE_NOT_FOUND.value),
        ("ack", 5, None),
        ("error", None, ErrorCode.VALIDATION_ERROR.value),
    ]
    assert all("id" not in line for line in lines)


async def test_a_malformed_batch_is_refused_whole(nc: Client) -> None:
    alice, room = actor(), unique_name("batch")
    too_many = [{**alice, "room": room, "message": str(n)} for n in range(SEND_BATCH_MAX + 1)]
    for body in ({"sends": []}, {"sends": too_many}, {"sends": "x"}, {}):
        with pytest.raises(ProtocolError) as refused:
            await request(nc, subjects.CHAT_SEND_BATCH, json.dumps(body).encode(), timeout=5)
        assert refused.value.code is ErrorCode.VALIDATION_ERROR, str(body)[:80]


async def test_a_burst_larger_than_one_nats_message_is_split_and_still_in_order(stack_factory: Any) -> None:
    """60 sends of 4,000 control characters (6 bytes each in JSON): ~1.4 MB of sends, more than
    one NATS message holds (``max_payload``, 1 MiB); they go as several batches, in order."""
    burst = 60
    roomy: Stack = stack_factory(
        {"NATTER_GATEWAY_RATE_BURST": "1000", "NATTER_GATEWAY_RATE_PER_SECOND": "1000"}
    )
    room = unique_name("big")
    _, a, _, b = await two_members(roomy, room)
    texts = [f"{n:03d}" + "\x01" * 3996 for n in range(burst)]
    for n, text in enumerate(texts):
        await a.send({"type": "chat_message", "room": room, "message": text, "id": n})
    acks = await answers(a, list(range(burst)), timeout=20)
    assert [(ack["type"], ack["seq"]) for ack in acks] == [("ack", n + 1) for n in range(burst)]
    delivered = await messages(b, burst, timeout=20)
    assert [m["message"] for m in delivered] == texts
    assert await batches_served(roomy) >= 2
    await a.close()
    await b.close()
