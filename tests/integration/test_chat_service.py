"""chat_service against a real nats-server, with real chat (and auth) processes.

Every request goes over NATS to the ``chat`` queue group exactly as the gateway sends it
(``shared.nats_client.request``); deliveries are read from core subscriptions on
``deliver.room.<room>``, events from the real ``EVENTS`` stream. The test plays the gateway's
part: it heartbeats a gateway id in ``natter_gateways`` and passes ``gateway_id`` / ``first_local``
/ ``last_local`` as a gateway would.

This module runs its own nats-server (started like the session one, with
``tests.conftest.start_nats``) so that the number of chat replicas serving ``chat.*`` is exactly
the one each test expects (one, or two in the multi-replica test): per-replica delivery order and
"both replicas served" are asserted, which another module's chat process on the shared server
would blur. Rooms and users are unique per test, so tests are independent of each other and of
order.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import DeliverPolicy
from nats.js.errors import KeyNotFoundError

from natter.launcher import ManagedProcess, service_process
from shared import room_shards, subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request, request_json
from tests.conftest import NatsServer, start_nats, wait_services
from tests.support import service_instances, unique_name

TIMEOUT = 10.0
CHAT_ENV = {
    "NATTER_CHAT_JANITOR_INTERVAL_SECONDS": "1",
    "NATTER_CHAT_JANITOR_GRACE_SECONDS": "1",
}
#: The stand-in gateway of most tests (heartbeated by the ``nc`` fixture).
GATEWAY = f"gw-{uuid.uuid4().hex[:8]}"


# --- processes -----------------------------------------------------------------------------


@dataclass
class ChatCluster:
    """The module's nats-server and the chat/auth processes running against it."""

    nats: NatsServer
    tmp: Path
    chat: list[ManagedProcess] = field(default_factory=list)
    auth: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return self.nats.url

    def start_chat(self, index: int, env: dict[str, str] | None = None) -> ManagedProcess:
        process = service_process(
            "chat",
            nats_url=self.nats.client_url,
            env={**CHAT_ENV, **(env or {})},
            log_path=self.tmp / f"chat-{index}.log",
            index=index,
            credentials=self.nats.credentials,
        )
        return process.start()


async def _wait_instances(url: str, count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while len({reply["id"] for reply in await service_instances(url, "chat")}) != count:
        if time.monotonic() > deadline:
            raise TimeoutError(f"not exactly {count} chat replicas after {timeout}s")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChatCluster]:
    tmp = tmp_path_factory.mktemp("chat")
    server = start_nats(tmp, name="chat-nats")
    running = ChatCluster(nats=server, tmp=tmp)
    try:
        running.chat.append(running.start_chat(0))
        running.auth = service_process(
            "auth",
            nats_url=server.client_url,
            log_path=tmp / "auth-0.log",
            index=0,
            credentials=server.credentials,
        ).start()
        wait_services(server.url, ("chat", "auth"))
        yield running
    finally:
        for process in [*running.chat, *([running.auth] if running.auth else [])]:
            process.stop()
        server.stop()


async def _heartbeat(client: Client, gateway_id: str) -> None:
    kv = await client.jetstream().key_value(subjects.KV_GATEWAYS)
    await kv.put(gateway_id, json.dumps({"gateway_id": gateway_id, "ts": time.time()}).encode())


@pytest.fixture
async def nc(cluster: ChatCluster) -> AsyncIterator[Client]:
    client = await nats.connect(cluster.url)
    await _heartbeat(client, GATEWAY)
    yield client
    await client.close()  # not drain(): unread deliveries must not hold the teardown


# --- helpers -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    user_id: str
    username: str

    @property
    def body(self) -> dict[str, str]:
        return {"user_id": self.user_id, "username": self.username}


def new_actor() -> Actor:
    return Actor(user_id=uuid.uuid4().hex, username=unique_name("u"))


def new_room() -> str:
    return unique_name("r")


async def call(client: Client, subject: str, body: dict[str, Any]) -> dict[str, Any]:
    """A chat request; the reply must be compact JSON without an ``id``."""
    raw = await request(client, subject, json.dumps(body).encode(), timeout=TIMEOUT)
    decoded = json.loads(raw)
    assert raw == json.dumps(decoded, separators=(",", ":"), ensure_ascii=False).encode()
    assert "id" not in decoded
    return decoded


async def error_of(client: Client, subject: str, body: dict[str, Any] | bytes) -> ProtocolError:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    with pytest.raises(ProtocolError) as caught:
        await request(client, subject, payload, timeout=TIMEOUT)
    return caught.value


async def join(
    client: Client,
    actor: Actor,
    room: str,
    *,
    since: int | None = None,
    gateway: str = GATEWAY,
    first_local: bool = True,
) -> dict[str, Any]:
    body: dict[str, Any] = {**actor.body, "room": room, "gateway_id": gateway, "first_local": first_local}
    if since is not None:
        body["since"] = since
    return await call(client, subjects.CHAT_JOIN, body)


async def leave(
    client: Client, actor: Actor, room: str, *, gateway: str = GATEWAY, last_local: bool = True
) -> dict[str, Any]:
    body = {**actor.body, "room": room, "gateway_id": gateway, "last_local": last_local}
    return await call(client, subjects.CHAT_LEAVE, body)


async def send(
    client: Client, actor: Actor, room: str, message: str, client_msg_id: str | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {**actor.body, "room": room, "message": message}
    if client_msg_id is not None:
        body["client_msg_id"] = client_msg_id
    return await call(client, subjects.CHAT_SEND, body)


async def history(client: Client, actor: Actor, room: str, **params: int) -> dict[str, Any]:
    return await call(client, subjects.CHAT_HISTORY, {"user_id": actor.user_id, "room": room, **params})


async def all_messages(client: Client, actor: Actor, room: str) -> list[dict[str, Any]]:
    page = await history(client, actor, room, after=0, limit=1000)
    assert page["has_more"] is False
    return list(page["messages"])


async def next_frame(sub: Subscription) -> tuple[dict[str, Any], Msg]:
    msg = await sub.next_msg(timeout=TIMEOUT)
    return json.loads(msg.data), msg


async def send_many(client: Client, actor: Actor, room: str, count: int, *, concurrency: int = 16) -> None:
    limiter = asyncio.Semaphore(concurrency)

    async def one(index: int) -> None:
        async with limiter:
            await send(client, actor, room, f"bulk {index}", client_msg_id=f"bulk-{index}")

    await asyncio.gather(*(one(index) for index in range(count)))


# --- rooms, join, send ----------------------------------------------------------------------


async def test_join_creates_a_public_room(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    joined = await join(nc, alice, room)
    assert joined == {
        "type": "joined",
        "room": room,
        "last_seq": 0,
        "read_seq": 0,
        "unread": 0,
        "online": [{"user_id": alice.user_id, "username": alice.username}],
        "messages": [],
        "recovered": False,
    }
    listed = await call(nc, subjects.CHAT_ROOMS_LIST, {"user_id": new_actor().user_id})
    entry = next(r for r in listed["rooms"] if r["name"] == room)
    assert entry == {"name": room, "private": False, "owner": None, "last_seq": 0, "online": 1}
    general = next(r for r in listed["rooms"] if r["name"] == "general")
    assert general["private"] is False and general["owner"] is None


async def test_concurrent_first_joins_create_the_room_once(nc: Client) -> None:
    room = new_room()
    actors = [new_actor() for _ in range(8)]
    replies = await asyncio.gather(*(join(nc, actor, room) for actor in actors))
    assert all(reply["type"] == "joined" for reply in replies)
    presence = await call(nc, subjects.CHAT_PRESENCE, {"user_id": actors[0].user_id, "room": room})
    assert {u["user_id"] for u in presence["online"]} == {a.user_id for a in actors}


async def test_send_acks_and_delivers_once_encoded(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    sub = await nc.subscribe(subjects.deliver_room(room))
    ack = await send(nc, alice, room, "  Hello, ünïcode 🙂  ", client_msg_id="c-1")
    assert set(ack) == {"type", "room", "client_msg_id", "seq", "message_id", "timestamp"}
    assert ack["type"] == "ack" and ack["room"] == room and ack["client_msg_id"] == "c-1"
    assert ack["seq"] == 1 and ack["message_id"] == f"{room}:1"
    assert ack["timestamp"].endswith("Z") and len(ack["timestamp"]) == 24

    frame, msg = await next_frame(sub)
    headers = dict(msg.headers or {})
    stored_ms = int(headers.pop("Natter-Stored-Ms"))  # when it was stored: the delivery histogram
    assert abs(stored_ms - time.time() * 1000) < 60_000, stored_ms
    assert headers == {"Natter-Room": room, "Natter-Seq": "1", "Natter-Kind": "message"}
    expected_data = {
        "id": f"{room}:1",
        "seq": 1,
        "user_id": alice.user_id,
        "username": alice.username,
        "message": "Hello, ünïcode 🙂",
        "timestamp": ack["timestamp"],
        "client_msg_id": "c-1",
    }
    assert frame == {"type": "message", "room": room, "data": expected_data}
    assert msg.data == json.dumps(frame, separators=(",", ":"), ensure_ascii=False).encode()
    # history carries the very same stored object
    assert await all_messages(nc, alice, room) == [expected_data]

    ack2 = await send(nc, alice, room, "no id")
    frame2, _ = await next_frame(sub)
    assert ack2["seq"] == 2 and ack2["client_msg_id"] is None
    assert frame2["data"]["client_msg_id"] is None and frame2["data"]["seq"] == 2


async def test_errors_for_unknown_rooms_and_bad_input_change_nothing(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    for subject, body in (
        (subjects.CHAT_SEND, {**alice.body, "room": room, "message": "hi"}),
        (subjects.CHAT_HISTORY, {"user_id": alice.user_id, "room": room}),
        (subjects.CHAT_PRESENCE, {"user_id": alice.user_id, "room": room}),
        (subjects.CHAT_ROOMS_ADD_MEMBER, {**alice.body, "room": room, "member": "someone"}),
    ):
        assert (await error_of(nc, subject, body)).code is ErrorCode.ROOM_NOT_FOUND, subject
    await join(nc, alice, room)
    bad_sends: list[dict[str, Any] | bytes] = [
        {**alice.body, "room": room, "message": "   "},
        {**alice.body, "room": room, "message": "x" * 4001},
        {**alice.body, "room": room},
        {**alice.body, "room": room, "message": "hi", "client_msg_id": "i" * 65},
        {**alice.body, "room": "Bad.Room", "message": "hi"},
        {"room": room, "message": "hi"},
    ]
    for body in bad_sends:
        assert (await error_of(nc, subjects.CHAT_SEND, body)).code is ErrorCode.VALIDATION_ERROR, body
    assert (await error_of(nc, subjects.CHAT_SEND, b"{not json")).code is ErrorCode.INVALID_JSON
    bad_history = {"user_id": alice.user_id, "room": room, "limit": 0}
    assert (await error_of(nc, subjects.CHAT_HISTORY, bad_history)).code is ErrorCode.VALIDATION_ERROR
    assert (await history(nc, alice, room))["messages"] == []
    assert (await join(nc, alice, room, first_local=False))["last_seq"] == 0


# --- ordering and exactly-once --------------------------------------------------------------


async def _three_senders(client: Client, room: str, per_sender: int) -> list[dict[str, Any]]:
    senders = [new_actor() for _ in range(3)]
    for sender in senders:
        await join(client, sender, room)

    async def run(sender: Actor) -> list[dict[str, Any]]:
        return [
            await send(client, sender, room, f"{sender.username} #{i}", client_msg_id=f"{sender.user_id}-{i}")
            for i in range(per_sender)
        ]

    acks = await asyncio.gather(*(run(sender) for sender in senders))
    return [ack for per in acks for ack in per]


async def test_concurrent_senders_get_contiguous_seqs_in_order(nc: Client) -> None:
    room, reader = new_room(), new_actor()
    await join(nc, reader, room)
    sub = await nc.subscribe(subjects.deliver_room(room))
    acks = await _three_senders(nc, room, 30)
    assert sorted(ack["seq"] for ack in acks) == list(range(1, 91))

    stored = await all_messages(nc, reader, room)
    assert [m["seq"] for m in stored] == list(range(1, 91))
    assert {m["client_msg_id"]: m["seq"] for m in stored} == {a["client_msg_id"]: a["seq"] for a in acks}
    assert {m["timestamp"] for m in stored} == {a["timestamp"] for a in acks}

    delivered = []
    while len(delivered) < 90:
        frame, msg = await next_frame(sub)
        if frame["type"] == "message":
            assert msg.headers is not None and int(msg.headers["Natter-Seq"]) == frame["data"]["seq"]
            delivered.append(frame["data"])
    # one replica publishes a room's deliveries in seq order, each exactly once
    assert [d["seq"] for d in delivered] == list(range(1, 91))
    assert delivered == stored


async def test_idempotent_resend(nc: Client) -> None:
    alice, bob, room = new_actor(), new_actor(), new_room()
    await join(nc, alice, room)
    sub = await nc.subscribe(subjects.deliver_room(room))
    first = await send(nc, alice, room, "original", client_msg_id="same")
    await send(nc, alice, room, "in between", client_msg_id="other")
    again = await send(nc, alice, room, "changed text is ignored", client_msg_id="same")
    assert again == first
    # the same client_msg_id from another user is another message
    bobs = await send(nc, bob, room, "bob's", client_msg_id="same")
    assert bobs["seq"] == 3

    stored = await all_messages(nc, alice, room)
    assert [(m["seq"], m["message"]) for m in stored] == [(1, "original"), (2, "in between"), (3, "bob's")]
    # the duplicate's delivery is re-published with the original seq and bytes (gateways drop it)
    frames = [(await next_frame(sub))[1] for _ in range(4)]
    seqs = [int(msg.headers["Natter-Seq"]) for msg in frames if msg.headers]
    assert seqs == [1, 2, 1, 3]
    assert frames[0].data == frames[2].data


async def test_two_replicas_keep_seqs_contiguous_and_sends_idempotent(
    cluster: ChatCluster, nc: Client
) -> None:
    second = cluster.start_chat(1)
    try:
        await _wait_instances(cluster.url, 2)
        room, reader = new_room(), new_actor()
        await join(nc, reader, room)
        sub = await nc.subscribe(subjects.deliver_room(room))
        acks = await _three_senders(nc, room, 30)
        assert sorted(ack["seq"] for ack in acks) == list(range(1, 91))

        # one retry storm: the same message sent 12 times at once, spread over both replicas
        storm_sender = new_actor()
        storm = await asyncio.gather(
            *(send(nc, storm_sender, room, "once", client_msg_id="storm") for _ in range(12))
        )
        assert all(ack == storm[0] for ack in storm)
        assert storm[0]["seq"] == 91

        stored = await all_messages(nc, reader, room)
        assert [m["seq"] for m in stored] == list(range(1, 92))
        assert sum(1 for m in stored if m["client_msg_id"] == "storm") == 1
        assert {m["client_msg_id"]: m["seq"] for m in stored} == {
            **{a["client_msg_id"]: a["seq"] for a in acks},
            "storm": 91,
        }
        delivered: set[int] = set()
        while delivered != set(range(1, 92)):
            frame, _ = await next_frame(sub)
            if frame["type"] == "message":
                delivered.add(frame["data"]["seq"])

        stats = await service_instances(cluster.url, "chat", "STATS")
        served = [
            sum(e["num_requests"] for e in reply["endpoints"] if e["subject"] == subjects.CHAT_SEND)
            for reply in stats
        ]
        assert len(served) == 2 and all(count > 0 for count in served), served
    finally:
        second.stop()
    await _wait_instances(cluster.url, 1)


# --- history and recovery -------------------------------------------------------------------


async def test_history_paging(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    for i in range(1, 8):
        await send(nc, alice, room, f"m{i}")

    async def seqs(**params: int) -> tuple[list[int], bool]:
        page = await history(nc, alice, room, **params)
        assert page["type"] == "history" and page["room"] == room
        return [m["seq"] for m in page["messages"]], page["has_more"]

    assert await seqs() == ([1, 2, 3, 4, 5, 6, 7], False)
    assert await seqs(limit=3) == ([5, 6, 7], True)
    assert await seqs(before=5, limit=3) == ([2, 3, 4], True)
    assert await seqs(before=4, limit=3) == ([1, 2, 3], False)
    assert await seqs(before=2, limit=3) == ([1], False)
    assert await seqs(before=1) == ([], False)
    assert await seqs(before=100, limit=2) == ([6, 7], True)
    assert await seqs(after=4, limit=2) == ([5, 6], True)
    assert await seqs(after=5, limit=10) == ([6, 7], False)
    assert await seqs(after=7) == ([], False)
    assert await seqs(after=0, limit=7) == ([1, 2, 3, 4, 5, 6, 7], False)


async def test_join_with_since_recovers_exactly_the_gap(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    for i in range(1, 11):
        await send(nc, alice, room, f"m{i}")
    recovered = await join(nc, alice, room, since=4, first_local=False)
    assert recovered["last_seq"] == 10 and recovered["recovered"] is True
    assert [m["seq"] for m in recovered["messages"]] == [5, 6, 7, 8, 9, 10]
    assert [m["message"] for m in recovered["messages"]] == [f"m{i}" for i in range(5, 11)]
    for since in (10, 15):
        up_to_date = await join(nc, alice, room, since=since, first_local=False)
        assert (up_to_date["messages"], up_to_date["recovered"], up_to_date["last_seq"]) == ([], True, 10)
    plain = await join(nc, alice, room, first_local=False)
    assert [m["seq"] for m in plain["messages"]] == list(range(1, 11)) and plain["recovered"] is False
    from_zero = await join(nc, alice, room, since=0, first_local=False)
    assert [m["seq"] for m in from_zero["messages"]] == list(range(1, 11)) and from_zero["recovered"] is True


async def test_large_room_recovery_limit_and_paging(nc: Client) -> None:
    alice, room, other_room = new_actor(), new_room(), new_room()
    await join(nc, alice, room)
    await join(nc, alice, other_room)
    # interleave another room's traffic so the room's seqs are scattered in the stream
    await asyncio.gather(send_many(nc, alice, room, 1003), send_many(nc, alice, other_room, 400))

    too_old = await join(nc, alice, room, since=2, first_local=False)  # 1001 missing > 1000
    assert too_old["recovered"] is False and too_old["last_seq"] == 1003
    assert [m["seq"] for m in too_old["messages"]] == list(range(954, 1004))

    at_limit = await join(nc, alice, room, since=3, first_local=False)  # exactly 1000 missing
    assert at_limit["recovered"] is True
    assert [m["seq"] for m in at_limit["messages"]] == list(range(4, 1004))

    page = await history(nc, alice, room, before=500, limit=100)
    assert [m["seq"] for m in page["messages"]] == list(range(400, 500)) and page["has_more"] is True
    oldest = await history(nc, alice, room, before=51, limit=100)
    assert [m["seq"] for m in oldest["messages"]] == list(range(1, 51)) and oldest["has_more"] is False
    gap = await history(nc, alice, room, after=700, limit=1000)
    assert [m["seq"] for m in gap["messages"]] == list(range(701, 1004)) and gap["has_more"] is False
    # every page reads the messages as stored
    bodies = {m["seq"]: m["message"] for m in at_limit["messages"]}
    assert all(bodies[m["seq"]] == m["message"] for m in page["messages"])
    assert len(set(bodies.values())) == 1000


async def test_replies_stay_under_the_max_payload_and_say_what_is_missing(nc: Client) -> None:
    """100 messages of 4000 three-byte characters (12 kB each) do not fit in one 1 MB reply: chat
    answers what fits and names the rest in headers, for the gateway to fetch and splice in
    (gateway/pages.py; the whole frame reaches the client, test_ws_rooms.py), instead of a reply
    NATS would refuse to carry or a recovery that gives up."""
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    for i in range(100):
        await send(nc, alice, room, f"{i:03d}" + "€" * 3997)
    assert nc.max_payload == 1024 * 1024

    body = {**alice.body, "room": room, "gateway_id": GATEWAY, "first_local": False, "since": 0}
    reply = await nc.request(subjects.CHAT_JOIN, json.dumps(body).encode(), timeout=TIMEOUT)
    assert len(reply.data) < nc.max_payload
    recovery = json.loads(reply.data)
    seqs = [m["seq"] for m in recovery["messages"]]
    assert recovery["recovered"] is True and recovery["last_seq"] == 100
    assert 50 <= len(seqs) < 100 and seqs == list(range(1, len(seqs) + 1))  # the oldest part
    assert reply.headers is not None and reply.headers[subjects.HDR_MORE_AFTER] == str(seqs[-1])

    body = {"user_id": alice.user_id, "room": room, "limit": 100}
    reply = await nc.request(subjects.CHAT_HISTORY, json.dumps(body).encode(), timeout=TIMEOUT)
    newest = json.loads(reply.data)
    seqs = [m["seq"] for m in newest["messages"]]
    assert newest["has_more"] is False and 50 <= len(seqs) < 100 and seqs == list(range(101 - len(seqs), 101))
    assert reply.headers is not None and reply.headers[subjects.HDR_MORE_BEFORE] == str(seqs[0])
    assert reply.headers[subjects.HDR_MORE_COUNT] == str(100 - len(seqs))
    oldest = await history(nc, alice, room, after=0, limit=100)  # gap fills: cut, has_more
    seqs = [m["seq"] for m in oldest["messages"]]
    assert oldest["has_more"] is True and 50 <= len(seqs) < 100 and seqs == list(range(1, len(seqs) + 1))
    assert all(m["message"] == f"{m['seq'] - 1:03d}" + "€" * 3997 for m in oldest["messages"])


# --- private rooms ----------------------------------------------------------------------------


async def _register(client: Client) -> Actor:
    username = unique_name("p")
    reply = await request_json(
        client, subjects.AUTH_REGISTER, {"username": username, "password": "correct horse 1"}, timeout=TIMEOUT
    )
    return Actor(user_id=reply["user_id"], username=reply["username"])


async def test_private_rooms(nc: Client) -> None:
    owner, member, stranger = await asyncio.gather(_register(nc), _register(nc), _register(nc))
    room = new_room()
    created = await call(nc, subjects.CHAT_ROOMS_CREATE, {**owner.body, "name": room, "private": True})
    assert created == {
        "name": room,
        "private": True,
        "owner": owner.user_id,
        "members": [owner.user_id],
        "dm": False,
        "moderators": [],
    }
    again = await error_of(nc, subjects.CHAT_ROOMS_CREATE, {**member.body, "name": room})
    assert again.code is ErrorCode.CONFLICT and again.message == "Room already exists"

    await join(nc, owner, room)
    await send(nc, owner, room, "secret")
    for subject, body in (
        (subjects.CHAT_JOIN, {**member.body, "room": room, "gateway_id": GATEWAY}),
        (subjects.CHAT_SEND, {**member.body, "room": room, "message": "let me in"}),
        (subjects.CHAT_HISTORY, {"user_id": member.user_id, "room": room}),
        (subjects.CHAT_PRESENCE, {"user_id": member.user_id, "room": room}),
        (subjects.CHAT_ROOMS_ADD_MEMBER, {**stranger.body, "room": room, "member": stranger.username}),
    ):
        assert (await error_of(nc, subject, body)).code is ErrorCode.FORBIDDEN, subject
    listed = await call(nc, subjects.CHAT_ROOMS_LIST, {"user_id": member.user_id})
    assert room not in {r["name"] for r in listed["rooms"]}
    missing = {**owner.body, "room": room, "member": unique_name("nobody")}
    assert (await error_of(nc, subjects.CHAT_ROOMS_ADD_MEMBER, missing)).code is ErrorCode.NOT_FOUND

    added = await call(
        nc, subjects.CHAT_ROOMS_ADD_MEMBER, {**owner.body, "room": room, "member": member.username.upper()}
    )
    assert added == {
        "name": room,
        "private": True,
        "owner": owner.user_id,
        "members": [owner.user_id, member.user_id],
        "dm": False,
        "moderators": [],
    }
    joined = await join(nc, member, room)
    # the member event "added" took seq 2 (PROTOCOL.md section 10)
    assert [m["message"] for m in joined["messages"]] == ["secret"] and joined["last_seq"] == 2
    assert (await send(nc, member, room, "thanks"))["seq"] == 3
    listed = await call(nc, subjects.CHAT_ROOMS_LIST, {"user_id": member.user_id})
    entry = next(r for r in listed["rooms"] if r["name"] == room)
    assert entry == {"name": room, "private": True, "owner": owner.user_id, "last_seq": 3, "online": 2}
    # only the owner manages members; the owner cannot be removed
    by_member = {**member.body, "room": room, "member": stranger.username}
    assert (await error_of(nc, subjects.CHAT_ROOMS_ADD_MEMBER, by_member)).code is ErrorCode.FORBIDDEN
    self_removal = {**owner.body, "room": room, "member": owner.username}
    assert (await error_of(nc, subjects.CHAT_ROOMS_REMOVE_MEMBER, self_removal)).code is ErrorCode.FORBIDDEN

    removed = await call(
        nc, subjects.CHAT_ROOMS_REMOVE_MEMBER, {**owner.body, "room": room, "member": member.username}
    )
    assert removed["members"] == [owner.user_id]
    # at once, on every replica: private rooms are never served from the send path's cache
    kicked = {**member.body, "room": room, "message": "still here?"}
    assert (await error_of(nc, subjects.CHAT_SEND, kicked)).code is ErrorCode.FORBIDDEN
    assert (await error_of(nc, subjects.CHAT_HISTORY, {"user_id": member.user_id, "room": room})).code is (
        ErrorCode.FORBIDDEN
    )


@pytest.mark.parametrize("name", ["Upper", "has.dot", "star*", "gt>", "sp ace", "", "-dash", "x" * 65, 42])
async def test_create_refuses_invalid_room_names(nc: Client, name: object) -> None:
    owner = new_actor()
    error = await error_of(nc, subjects.CHAT_ROOMS_CREATE, {**owner.body, "name": name})
    assert error.code is ErrorCode.INVALID_ROOM if isinstance(name, str) else ErrorCode.VALIDATION_ERROR


async def test_create_public_room_without_owner(nc: Client) -> None:
    creator, room = new_actor(), new_room()
    created = await call(nc, subjects.CHAT_ROOMS_CREATE, {**creator.body, "name": room})
    assert created == {  # public rooms have no owner (PROTOCOL.md section 10)
        "name": room,
        "private": False,
        "owner": None,
        "members": [],
        "dm": False,
        "moderators": [],
    }
    assert (await join(nc, new_actor(), room))["type"] == "joined"


# --- presence -------------------------------------------------------------------------------


async def test_presence_is_per_user_across_gateways(nc: Client) -> None:
    gw_a, gw_b = f"gw-a-{uuid.uuid4().hex[:6]}", f"gw-b-{uuid.uuid4().hex[:6]}"
    await _heartbeat(nc, gw_a)
    await _heartbeat(nc, gw_b)
    alice, bob, room = new_actor(), new_actor(), new_room()
    await join(nc, bob, room, gateway=gw_a)  # creates the room
    sub = await nc.subscribe(subjects.deliver_room(room))

    joined = await join(nc, alice, room, gateway=gw_a)
    assert {u["user_id"] for u in joined["online"]} == {alice.user_id, bob.user_id}
    frame, msg = await next_frame(sub)
    assert frame == {
        "type": "user_joined",
        "room": room,
        "user_id": alice.user_id,
        "username": alice.username,
    }
    assert msg.headers == {"Natter-Room": room, "Natter-Kind": "presence"}

    # alice's socket on a second gateway: no second user_joined (the next frame is carol's)
    await join(nc, alice, room, gateway=gw_b)
    carol = new_actor()
    await join(nc, carol, room, gateway=gw_b)
    frame, _ = await next_frame(sub)
    assert (frame["type"], frame["user_id"]) == ("user_joined", carol.user_id)

    presence = await call(nc, subjects.CHAT_PRESENCE, {"user_id": bob.user_id, "room": room})
    assert presence["type"] == "presence" and presence["room"] == room
    online = presence["online"]
    assert sorted(u["user_id"] for u in online) == sorted([alice.user_id, bob.user_id, carol.user_id])
    assert [u["username"] for u in online] == sorted(u["username"] for u in online)

    # leaving gateway A while still on gateway B: no user_left; not the last local socket: nothing
    assert await leave(nc, alice, room, gateway=gw_a) == {"type": "left", "room": room}
    await leave(nc, bob, room, gateway=gw_a, last_local=False)
    await leave(nc, carol, room, gateway=gw_b)
    frame, _ = await next_frame(sub)
    assert (frame["type"], frame["user_id"]) == ("user_left", carol.user_id)
    await leave(nc, alice, room, gateway=gw_b)
    frame, msg = await next_frame(sub)
    assert frame == {"type": "user_left", "room": room, "user_id": alice.user_id, "username": alice.username}
    assert msg.headers == {"Natter-Room": room, "Natter-Kind": "presence"}

    presence = await call(nc, subjects.CHAT_PRESENCE, {"user_id": bob.user_id, "room": room})
    assert [u["user_id"] for u in presence["online"]] == [bob.user_id]
    # a second leave for a key that is gone announces nothing (the next frame is bob's)
    await leave(nc, alice, room, gateway=gw_b)
    await leave(nc, bob, room, gateway=gw_a)
    frame, _ = await next_frame(sub)
    assert (frame["type"], frame["user_id"]) == ("user_left", bob.user_id)


async def test_concurrent_first_sockets_on_two_gateways_announce_once(nc: Client) -> None:
    gw_a, gw_b = f"gw-a-{uuid.uuid4().hex[:6]}", f"gw-b-{uuid.uuid4().hex[:6]}"
    await _heartbeat(nc, gw_a)
    await _heartbeat(nc, gw_b)
    room, watcher = new_room(), new_actor()
    await join(nc, watcher, room, gateway=gw_a)
    sub = await nc.subscribe(subjects.deliver_room(room))
    for _ in range(5):
        alice, sentinel = new_actor(), new_actor()
        await asyncio.gather(join(nc, alice, room, gateway=gw_a), join(nc, alice, room, gateway=gw_b))
        await join(nc, sentinel, room, gateway=gw_a)
        announced = []
        while not announced or announced[-1] != sentinel.user_id:
            frame, _ = await next_frame(sub)
            assert frame["type"] == "user_joined"
            announced.append(frame["user_id"])
        assert announced == [alice.user_id, sentinel.user_id]


async def test_janitor_sweeps_a_dead_gateway(nc: Client) -> None:
    live, dead = f"gw-live-{uuid.uuid4().hex[:6]}", f"gw-dead-{uuid.uuid4().hex[:6]}"
    await _heartbeat(nc, live)
    ghost, survivor, room = new_actor(), new_actor(), new_room()
    await join(nc, survivor, room, gateway=live)
    sub = await nc.subscribe(subjects.deliver_room(room))
    await join(nc, ghost, room, gateway=dead)  # that gateway never heartbeats
    frame, _ = await next_frame(sub)
    assert (frame["type"], frame["user_id"]) == ("user_joined", ghost.user_id)

    started = time.monotonic()
    frame, msg = await next_frame(sub)
    assert frame == {"type": "user_left", "room": room, "user_id": ghost.user_id, "username": ghost.username}
    assert msg.headers == {"Natter-Room": room, "Natter-Kind": "presence"}
    assert time.monotonic() - started < 6.0  # interval 1 s + grace 1 s + a sweep

    presence_kv = await nc.jetstream().key_value(subjects.KV_PRESENCE)
    with pytest.raises(KeyNotFoundError):
        await presence_kv.get(subjects.presence_key(room, ghost.user_id, dead))
    await presence_kv.get(subjects.presence_key(room, survivor.user_id, live))  # untouched
    presence = await call(nc, subjects.CHAT_PRESENCE, {"user_id": survivor.user_id, "room": room})
    assert [u["user_id"] for u in presence["online"]] == [survivor.user_id]


# --- events and durability ---------------------------------------------------------------------


async def test_mentions_publish_an_event(nc: Client) -> None:
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    events = await nc.jetstream().subscribe(
        subjects.EVENT_CHAT_MESSAGE, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    try:
        await send(nc, alice, room, "no mention here, mail a@bcd.ef")
        text = f"hey @Bob_one and @bob_ONE, @carol_x; self @{alice.username.upper()}"
        ack = await send(nc, alice, room, text)
        while True:  # events of other tests' rooms may interleave
            msg = await events.next_msg(timeout=TIMEOUT)
            event = json.loads(msg.data)
            if event["room"] == room:
                break
        assert event == {
            "room": room,
            "seq": ack["seq"],
            "user_id": alice.user_id,
            "username": alice.username,
            "mentions": ["bob_one", "carol_x"],
        }  # no text: notify asks chat.access for it (PROTOCOL.md section 8, delete means gone)
        assert ack["seq"] == 2  # the first message (no mention) produced no event
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == f"msg:{room}:2"
    finally:
        await events.unsubscribe()


async def test_access_with_seq_answers_the_current_text_and_a_delete_is_announced(nc: Client) -> None:
    alice, bob, room = new_actor(), new_actor(), new_room()
    await join(nc, alice, room)
    deletions = await nc.jetstream().subscribe(
        subjects.EVENT_CHAT_MESSAGE_DELETED, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW
    )
    try:
        plain = await send(nc, alice, room, "nobody mentioned")
        ack = await send(nc, alice, room, "hi @Bob_two")

        async def access(seq: int) -> dict[str, Any]:
            body = {"room": room, "user_ids": [bob.user_id], "seq": seq}
            return await call(nc, subjects.CHAT_ACCESS, body)

        assert await access(ack["seq"]) == {
            "room": room,
            "readers": [bob.user_id],
            "private": False,
            "message": {"text": "hi @Bob_two", "deleted": False},
        }
        edit = {**alice.body, "room": room, "target": ack["seq"], "message": "hi @Bob_two, edited"}
        assert (await call(nc, subjects.CHAT_EDIT, edit))["type"] == "ack"
        assert (await access(ack["seq"]))["message"] == {"text": "hi @Bob_two, edited", "deleted": False}
        assert (await access(999))["message"] is None
        without_seq = await call(nc, subjects.CHAT_ACCESS, {"room": room, "user_ids": [bob.user_id]})
        assert "message" not in without_seq

        for seq in (plain["seq"], ack["seq"]):
            delete = {**alice.body, "room": room, "target": seq}
            assert (await call(nc, subjects.CHAT_DELETE, delete))["type"] == "ack"
        assert (await access(ack["seq"]))["message"] in (None, {"text": "", "deleted": True})
        while True:  # only the message that mentioned someone is announced
            msg = await deletions.next_msg(timeout=TIMEOUT)
            event = json.loads(msg.data)
            if event["room"] == room:
                break
        assert event == {"room": room, "seq": ack["seq"], "mentions": ["bob_two"]}
        assert msg.headers is not None and msg.headers["Nats-Msg-Id"] == f"del:{room}:{ack['seq']}"
        with pytest.raises(TimeoutError):
            while True:
                other = await deletions.next_msg(timeout=1.0)
                assert json.loads(other.data)["room"] != room
    finally:
        await deletions.unsubscribe()


async def test_unconfirmed_sends_are_safe_to_retry(cluster: ChatCluster, nc: Client) -> None:
    """A replica that never sees a PubAck in time (0.1 ms timeout) cannot confirm writes: it
    retries with the same Nats-Msg-Id, then answers ``unavailable``; whatever it stored, a client
    retry with the same ``client_msg_id`` on a healthy replica yields each message exactly once."""
    alice, room = new_actor(), new_room()
    await join(nc, alice, room)
    process = cluster.chat[0]
    process.stop()
    impatient = cluster.start_chat(7, env={"NATTER_CHAT_PUBLISH_TIMEOUT_SECONDS": "0.0001"})
    try:
        await asyncio.to_thread(wait_services, cluster.url, ("chat",))
        first_tries: list[dict[str, Any] | ErrorCode] = []
        for i in range(5):
            body = json.dumps({**alice.body, "room": room, "message": f"m{i}", "client_msg_id": f"c{i}"})
            try:
                first_tries.append(
                    json.loads(await request(nc, subjects.CHAT_SEND, body.encode(), timeout=TIMEOUT))
                )
            except ProtocolError as error:
                first_tries.append(error.code)
    finally:
        impatient.stop()
    process.start()
    await asyncio.to_thread(wait_services, cluster.url, ("chat",))
    assert ErrorCode.UNAVAILABLE in first_tries, first_tries

    retries = [await send(nc, alice, room, f"m{i} (retry)", client_msg_id=f"c{i}") for i in range(5)]
    for first, retry in zip(first_tries, retries, strict=True):
        if isinstance(first, dict):
            assert first == retry
    stored = await all_messages(nc, alice, room)
    assert [(m["seq"], m["client_msg_id"], m["message"]) for m in stored] == [
        (i + 1, f"c{i}", f"m{i}") for i in range(5)
    ]
    assert [r["seq"] for r in retries] == [1, 2, 3, 4, 5]


async def test_retention_keeps_seq_numbering(cluster: ChatCluster, nc: Client) -> None:
    """With retention on, old messages go away, yet a room's seqs never restart: a replica with
    retention keeps each room's last seq in its registry entry (``seq_floor``). Expiry is
    emulated with a subject purge, which leaves the stream exactly as max-age removal would
    (JetStream refuses a max age shorter than the 10-minute duplicate window)."""
    keeper = cluster.start_chat(
        8, env={"NATTER_CHAT_RETENTION_DAYS": "1", "NATTER_CHAT_FLOOR_INTERVAL_SECONDS": "0.3"}
    )
    js = nc.jetstream()
    try:
        await _wait_instances(cluster.url, 2)
        alice, room = new_actor(), new_room()
        await join(nc, alice, room)
        for i in range(1, 4):
            await send(nc, alice, room, f"old {i}")
        rooms_kv = await js.key_value(subjects.KV_ROOMS)
        deadline = time.monotonic() + TIMEOUT
        while json.loads((await rooms_kv.get(room)).value or b"{}").get("seq_floor") != 3:
            assert time.monotonic() < deadline, "seq_floor not raised"
            await asyncio.sleep(0.1)
        where = room_shards.layout(room, 4)
        await js.purge_stream(where.stream, subject=where.log_filter)

        rejoined = await join(nc, alice, room, first_local=False)
        assert (rejoined["last_seq"], rejoined["messages"], rejoined["recovered"]) == (3, [], False)
        gap = await join(nc, alice, room, since=1, first_local=False)  # 2 and 3 are gone
        assert (gap["last_seq"], gap["messages"], gap["recovered"]) == (3, [], False)
        assert (await join(nc, alice, room, since=3, first_local=False))["recovered"] is True
        assert (await history(nc, alice, room))["messages"] == []

        for seq in range(4, 8):  # sent through both replicas: each continues after the floor
            assert (await send(nc, alice, room, f"new {seq}"))["seq"] == seq
        await js.purge_stream(where.stream, subject=where.message_subject(), keep=2)
        page = await history(nc, alice, room)
        assert [m["seq"] for m in page["messages"]] == [6, 7] and page["has_more"] is False
        older = await history(nc, alice, room, before=7, limit=1)
        assert [m["seq"] for m in older["messages"]] == [6] and older["has_more"] is False
        partial = await join(nc, alice, room, since=4, first_local=False)  # 5 is gone
        assert [m["seq"] for m in partial["messages"]] == [6, 7] and partial["recovered"] is False
        assert (await send(nc, alice, room, "new 8"))["seq"] == 8
        listed = await call(nc, subjects.CHAT_ROOMS_LIST, {"user_id": alice.user_id})
        assert next(r for r in listed["rooms"] if r["name"] == room)["last_seq"] == 8
    finally:
        keeper.stop()
    await _wait_instances(cluster.url, 1)


async def test_restart_keeps_messages_and_seq_continues(cluster: ChatCluster, nc: Client) -> None:
    """After a restart the replica knows nothing about where rooms sit in the stream: every read
    below goes through the cold path (estimate, probes, batched reads) on interleaved rooms."""
    alice, room, noise = new_actor(), new_room(), new_room()
    await join(nc, alice, room)
    await join(nc, alice, noise)
    for i in range(1, 201):  # room and noise strictly alternate in the stream
        await send(nc, alice, room, f"before {i}")
        await send(nc, alice, noise, f"noise {i}")
    private = new_room()
    await call(nc, subjects.CHAT_ROOMS_CREATE, {**alice.body, "name": private, "private": True})

    process = cluster.chat[0]
    assert process.stop() == 0  # SIGTERM: graceful
    body = json.dumps({"user_id": alice.user_id, "room": room}).encode()
    with pytest.raises(ProtocolError) as caught:
        await request(nc, subjects.CHAT_HISTORY, body, timeout=1)
    assert caught.value.code is ErrorCode.UNAVAILABLE
    process.start()
    await asyncio.to_thread(wait_services, cluster.url, ("chat",))

    def seqs(frame: dict[str, Any]) -> list[int]:
        assert all(m["message"] == f"before {m['seq']}" for m in frame["messages"])
        return [m["seq"] for m in frame["messages"]]

    latest = await history(nc, alice, room)
    assert seqs(latest) == list(range(151, 201)) and latest["has_more"] is True
    assert seqs(await history(nc, alice, room, before=100, limit=30)) == list(range(70, 100))
    assert seqs(await history(nc, alice, room, after=10, limit=20)) == list(range(11, 31))
    assert seqs(await history(nc, alice, room, after=37, limit=500)) == list(range(38, 201))
    assert seqs(await join(nc, alice, room, since=120, first_local=False)) == list(range(121, 201))

    assert (await send(nc, alice, room, "before 201"))["seq"] == 201
    assert seqs(await history(nc, alice, room, after=195)) == list(range(196, 202))
    stranger = new_actor()
    denied = await error_of(nc, subjects.CHAT_HISTORY, {"user_id": stranger.user_id, "room": private})
    assert denied.code is ErrorCode.FORBIDDEN
