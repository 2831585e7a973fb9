"""The event feed (PROTOCOL.md section 12): every event on ``events.<type>`` in ``EVENTS``, as a
backend service consumes it with nats-py under the ``backend`` NATS user, against the real stack.

Room events arrive once each, in seq order per room, as the envelopes shared.events builds;
``user.registered`` and ``notification.created`` too; a deleted message's text leaves the feed
(its stored copies are erased); ``/asyncapi.json`` is the generated document; and the backend
user cannot take over natter's own consumers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import nats
import pytest
from nats.aio.client import Client
from nats.js.api import ConsumerConfig, DeliverPolicy

from shared import asyncapi
from shared.nats_auth import BACKEND
from shared.stream_reader import direct_get
from tests.conftest import NatsServer, Stack
from tests.support import connect, join, register, unique_name


@pytest.fixture
async def backend(nats_server: NatsServer) -> AsyncIterator[Client]:
    """A connection as the ``backend`` NATS user (what other services inside the network get)."""
    login = nats_server.credentials.login(BACKEND)
    client = await nats.connect(
        nats_server.client_url, user=login.user, password=login.password, inbox_prefix=login.inbox_prefix
    )
    yield client
    await client.close()


class Feed:
    """The events of ``EVENTS`` from now on, through an ordered consumer (as docs/events.md)."""

    def __init__(self) -> None:
        self.events: list[tuple[int, dict[str, Any]]] = []

    async def start(self, nc: Client) -> None:
        self.sub = await nc.jetstream().subscribe(
            "events.>",
            stream="EVENTS",
            ordered_consumer=True,
            config=ConsumerConfig(deliver_policy=DeliverPolicy.NEW),
            cb=self._on,
        )

    async def _on(self, msg: Any) -> None:
        self.events.append((msg.metadata.sequence.stream, json.loads(msg.data)))

    def of_room(self, room: str) -> list[dict[str, Any]]:
        return [e for _, e in self.events if e["type"] in ROOM_TYPES and e["data"].get("room") == room]

    async def wait(self, predicate: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not predicate():  # noqa: ASYNC110 - the consumer's callback appends; poll it
                await asyncio.sleep(0.02)


ROOM_TYPES = {
    "message.created",
    "message.edited",
    "message.deleted",
    "reaction.added",
    "reaction.removed",
    "member.changed",
}


async def test_room_events_reach_the_feed_once_in_seq_order(stack: Stack, backend: Client) -> None:
    feed = Feed()
    await feed.start(backend)
    room = unique_name("feed")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice = await register(http)
        ws = await connect(stack.ws_url, alice.access_token)
        await join(ws, room)
        for n in range(20):
            await ws.request(
                {"type": "chat_message", "room": room, "message": f"m{n}", "client_msg_id": f"c{n}"}
            )
        await ws.request({"type": "react", "room": room, "target": 3, "emoji": "+1", "op": "add"})
        await ws.request({"type": "react", "room": room, "target": 3, "emoji": "+1", "op": "remove"})
        await ws.request({"type": "edit", "room": room, "target": 4, "message": "m4 edited"})
        # a retry of an already stored message adds nothing to the feed
        again = await ws.request(
            {"type": "chat_message", "room": room, "message": "m0", "client_msg_id": "c0"}
        )
        assert again["seq"] == 1
        await feed.wait(lambda: len(feed.of_room(room)) >= 23)
        await asyncio.sleep(0.3)
        await ws.close()
    events = feed.of_room(room)
    assert [e["data"]["seq"] for e in events] == list(range(1, 24))
    assert [e["type"] for e in events[-3:]] == ["reaction.added", "reaction.removed", "message.edited"]
    first = events[0]
    assert first["id"] == f"room:{room}:1" and first["data"]["message"] == "m0"
    assert first["data"]["user_id"] == alice.user_id and first["created_at"] == first["data"]["timestamp"]
    assert events[-1]["data"]["target"] == 4 and events[-1]["data"]["message"] == "m4 edited"
    assert len({e["id"] for e in events}) == len(events)


async def test_a_deleted_message_leaves_no_text_in_the_feed(
    stack: Stack, backend: Client, nc: Client
) -> None:
    feed = Feed()
    await feed.start(backend)
    room = unique_name("feed")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        alice = await register(http)
        ws = await connect(stack.ws_url, alice.access_token)
        await join(ws, room)
        await ws.request({"type": "chat_message", "room": room, "message": "secret one"})
        await ws.request({"type": "edit", "room": room, "target": 1, "message": "secret two"})
        await feed.wait(lambda: len(feed.of_room(room)) >= 2)
        copies = [seq for seq, e in feed.events if e["type"] in ROOM_TYPES and e["data"].get("room") == room]
        await ws.request({"type": "delete", "room": room, "target": 1})
        await feed.wait(lambda: any(e["type"] == "message.deleted" for e in feed.of_room(room)))
        await ws.close()
    deleted = next(e for e in feed.of_room(room) if e["type"] == "message.deleted")
    assert deleted["data"]["target"] == 1 and "message" not in deleted["data"]
    # the stored copies with text are gone from EVENTS (read raw, as the operator)
    for seq in copies:
        assert await direct_get(nc, "EVENTS", seq=seq) is None, seq


async def test_registrations_and_notifications_are_in_the_feed(stack: Stack, backend: Client) -> None:
    feed = Feed()
    await feed.start(backend)
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        carol = await register(http)
    await feed.wait(
        lambda: (
            {e["type"] for _, e in feed.events if e["data"].get("user_id") == carol.user_id}
            >= {"user.registered", "notification.created"}
        )
    )
    registered = next(
        e for _, e in feed.events if e["type"] == "user.registered" and e["data"]["user_id"] == carol.user_id
    )
    assert registered == {
        "id": f"user:{carol.user_id}:registered",
        "type": "user.registered",
        "created_at": registered["created_at"],
        "data": {"user_id": carol.user_id, "username": carol.username},
    }
    welcome = next(
        e
        for _, e in feed.events
        if e["type"] == "notification.created" and e["data"]["user_id"] == carol.user_id
    )
    assert welcome["data"]["title"] == "Welcome to natter" and welcome["id"].startswith("notification:")


async def test_a_backend_durable_consumer_as_docs_events_md_shows(stack: Stack, backend: Client) -> None:
    """docs/events.md's snippet: a durable pull consumer of the backend user's own."""
    js = backend.jetstream()
    durable = unique_name("backend-test")
    sub = await js.pull_subscribe("events.message.>", durable=durable, stream="EVENTS")
    try:
        room = unique_name("feed")
        async with httpx.AsyncClient(base_url=stack.base_url) as http:
            alice = await register(http)
            ws = await connect(stack.ws_url, alice.access_token)
            await join(ws, room)
            await ws.request({"type": "chat_message", "room": room, "message": "for the search index"})
            await ws.close()
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(10):
            while not any(e["data"].get("room") == room for e in seen):
                with contextlib.suppress(nats.errors.TimeoutError):
                    for msg in await sub.fetch(100, timeout=1):
                        seen.append(json.loads(msg.data))
                        await msg.ack()
        event = next(e for e in seen if e["data"].get("room") == room)
        assert event["type"] == "message.created" and event["data"]["message"] == "for the search index"
    finally:
        await js.delete_consumer("EVENTS", durable)


async def test_asyncapi_json_is_the_generated_document(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        answer = await http.get("/asyncapi.json")
    assert answer.status_code == 200
    assert answer.json() == json.loads(json.dumps(asyncapi.document()))


async def test_the_backend_user_cannot_take_over_natters_own_consumers(backend: Client) -> None:
    js = backend.jetstream(timeout=2)
    with pytest.raises(Exception) as refused:
        await js.delete_consumer("EVENTS", "notify-mentions")
    assert "ermission" in repr(refused.value) or isinstance(refused.value, (nats.errors.TimeoutError,))
    with contextlib.suppress(Exception):
        info = await js.consumer_info("EVENTS", "notify-mentions")
        assert info.name == "notify-mentions"
