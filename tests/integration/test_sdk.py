"""The Python SDK (natter.sdk, docs/sdk.md) against real stacks: HTTP helpers, the three auth
methods, requests and pushed frames, failover to a second gateway after kill -9 (no gap, no
duplicate), resend of an in-flight message with its client_msg_id, token refresh on the live
socket, and the docs' examples."""

from __future__ import annotations

import asyncio
import re
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from natter.sdk import (
    AuthMethod,
    Forbidden,
    HTTPError,
    InvalidRoom,
    NatterClient,
    NatterHTTP,
    NotJoined,
    RoomView,
    SessionRevoked,
    Tokens,
    ValidationFailed,
)
from tests.conftest import Stack
from tests.support import unique_name

PASSWORD = "correct horse 1"
DOCS = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"


def http_base(ws_url: str) -> str:
    return ws_url.removesuffix("/ws").replace("ws://", "http://", 1)


def gateway_ws(stack: Stack, index: int) -> str:
    return f"ws://127.0.0.1:{stack.gateway_ports[index]}/ws"


async def new_user(base_urls: list[str] | str) -> tuple[NatterHTTP, Tokens]:
    """Register and log in a fresh user; the NatterHTTP keeps that user's tokens."""
    http = NatterHTTP(base_urls)
    username = unique_name()
    registered = await http.register(username, PASSWORD)
    assert registered["username"] == username
    tokens = await http.login(username, PASSWORD)
    assert tokens.user_id == registered["user_id"] and tokens.refresh_token
    return http, tokens


async def next_frame(
    client: NatterClient, match: Callable[[dict[str, Any]], bool], timeout: float = 10.0
) -> dict[str, Any]:
    """The next pushed frame for which ``match`` is true (others are skipped)."""
    async with asyncio.timeout(timeout):
        async for frame in client:
            if match(frame):
                return frame
    raise AssertionError("iteration ended")


async def room_messages(
    client: NatterClient, room: str, up_to_seq: int, timeout: float = 20.0
) -> list[dict[str, Any]]:
    """``message`` frames of ``room`` as iterated, until ``seq`` reaches ``up_to_seq``."""
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        async for frame in client:
            if frame["type"] == "message" and frame["room"] == room:
                seen.append(frame["data"])
                if frame["data"]["seq"] >= up_to_seq:
                    return seen
    raise AssertionError("iteration ended")


# --- one stack, no faults ----------------------------------------------------------------------


@pytest.mark.parametrize("method", list(AuthMethod))
async def test_login_and_connect_with_each_auth_method(stack: Stack, method: AuthMethod) -> None:
    http, tokens = await new_user(stack.base_url)
    async with NatterClient(stack.ws_url, http=http, auth=method) as client:
        assert client.connected and client.url == stack.ws_url
        assert client.user_id == tokens.user_id and client.username == tokens.username
        assert client.session_id and client.expires_at > time.time() + 600
        summary = await next_frame(client, lambda f: f["type"] == "notifications")
        assert isinstance(summary["unread"], int) and "id" not in summary
        assert (await client.ping())["type"] == "pong"
    await http.aclose()


async def test_http_errors_are_typed(stack: Stack) -> None:
    http, tokens = await new_user(stack.base_url)
    with pytest.raises(HTTPError) as taken:
        await http.register(tokens.username.upper(), PASSWORD)
    assert taken.value.status == 409
    with pytest.raises(HTTPError) as bad:
        await http.login(tokens.username, "wrong password 1")
    assert bad.value.status == 401
    me = await http.me()
    assert me["user_id"] == tokens.user_id
    await http.aclose()


async def test_send_acks_and_iteration_in_seq_order(stack: Stack) -> None:
    http, _ = await new_user(stack.base_url)
    room = unique_name("r")
    async with NatterClient(stack.ws_url, http=http) as client:
        joined = await client.join(room)
        assert joined["type"] == "joined" and joined["last_seq"] == 0 and room in client.rooms
        acks = [await client.send(room, f"hello {n}") for n in range(3)]
        assert [ack["seq"] for ack in acks] == [1, 2, 3]
        assert all(ack["type"] == "ack" and uuid.UUID(ack["client_msg_id"]) for ack in acks)
        seen = await room_messages(client, room, 3)
        assert [m["seq"] for m in seen] == [1, 2, 3]
        assert [m["message"] for m in seen] == ["hello 0", "hello 1", "hello 2"]
        # Same client_msg_id again: the original ack, no second message, nothing re-yielded.
        again = await client.send(room, "hello 0", client_msg_id=acks[0]["client_msg_id"])
        assert again["seq"] == 1 and again["timestamp"] == acks[0]["timestamp"]
        fresh = await client.send(room, "after")
        assert fresh["seq"] == 4
        assert [m["seq"] for m in await room_messages(client, room, 4)] == [4]
        assert client.last_seq(room) == 4
    await http.aclose()


async def test_two_clients_exchange_messages_typing_and_presence(stack: Stack) -> None:
    room = unique_name("r")
    alice_http, alice_tokens = await new_user(stack.base_url)
    bob_http, bob_tokens = await new_user(stack.base_url)
    async with (
        NatterClient(stack.ws_url, http=alice_http) as alice,
        NatterClient(stack.ws_url, http=bob_http, auth="header") as bob,
    ):
        await alice.join(room)
        await bob.join(room)
        joined = await next_frame(alice, lambda f: f["type"] == "user_joined")
        assert joined["user_id"] == bob_tokens.user_id and joined["room"] == room
        presence = await alice.presence(room)
        assert {u["username"] for u in presence["online"]} == {alice_tokens.username, bob_tokens.username}

        await bob.typing(room)
        typing = await next_frame(alice, lambda f: f["type"] == "typing")
        assert typing == {
            "type": "typing",
            "room": room,
            "user_id": bob_tokens.user_id,
            "username": bob_tokens.username,
        }

        await alice.send(room, "hi bob")
        await bob.send(room, "hi alice")
        await alice.send(room, "how are you?")
        for client in (alice, bob):
            seen = await room_messages(client, room, 3)
            assert [(m["seq"], m["username"], m["message"]) for m in seen] == [
                (1, alice_tokens.username, "hi bob"),
                (2, bob_tokens.username, "hi alice"),
                (3, alice_tokens.username, "how are you?"),
            ]
        left = await bob.leave(room)
        assert left["type"] == "left" and left["room"] == room
        gone = await next_frame(alice, lambda f: f["type"] == "user_left")
        assert gone["user_id"] == bob_tokens.user_id
        assert room not in bob.rooms
        with pytest.raises(NotJoined) as not_joined:
            await bob.send(room, "still there?")
        assert not_joined.value.code == "not_joined"
    for http in (alice_http, bob_http):
        await http.aclose()


async def test_join_with_since_yields_missing_messages_once(stack: Stack) -> None:
    room = unique_name("r")
    writer_http, _ = await new_user(stack.base_url)
    reader_http, _ = await new_user(stack.base_url)
    async with NatterClient(stack.ws_url, http=writer_http) as writer:
        await writer.join(room)
        for n in range(5):
            await writer.send(room, f"m{n}")
        async with NatterClient(stack.ws_url, http=reader_http) as reader:
            joined = await reader.join(room, since=2)
            assert joined["recovered"] is True and [m["seq"] for m in joined["messages"]] == [3, 4, 5]
            assert [m["seq"] for m in await room_messages(reader, room, 5)] == [3, 4, 5]
            # A second join re-synchronises from the last seq seen: nothing is yielded twice.
            await writer.send(room, "m5")
            await reader.join(room)
            await writer.send(room, "m6")
            assert [m["seq"] for m in await room_messages(reader, room, 7)] == [6, 7]
        async with NatterClient(stack.ws_url, http=reader_http) as late:
            joined = await late.join(room, replay=False)
            assert joined["last_seq"] == 7
            await writer.send(room, "m7")
            assert [m["seq"] for m in await room_messages(late, room, 8)] == [8]
    await writer_http.aclose()
    await reader_http.aclose()


async def test_requests_history_notifications_and_errors(stack: Stack) -> None:
    room = unique_name("r")
    private = unique_name("p")
    http, tokens = await new_user(stack.base_url)
    outsider_http, outsider = await new_user(stack.base_url)
    async with NatterClient(stack.ws_url, http=http) as client:
        await client.join(room)
        for n in range(4):
            await client.send(room, f"line {n}")
        page = await client.history(room, before=4, limit=2)
        assert [m["seq"] for m in page["messages"]] == [2, 3] and page["has_more"] is True
        http_page = await http.history(room, limit=10)
        assert [m["message"] for m in http_page["messages"]] == [f"line {n}" for n in range(4)]
        rooms = {r["name"]: r for r in await http.rooms()}
        assert rooms[room]["last_seq"] == 4

        created = await http.create_room(private, private=True)
        assert created["private"] is True and created["owner"] == tokens.user_id
        async with NatterClient(stack.ws_url, http=outsider_http) as other:
            with pytest.raises(Forbidden):
                await other.join(private)
            await http.add_member(private, outsider.username)
            assert (await other.join(private))["room"] == private
            with pytest.raises(InvalidRoom) as invalid:
                await other.join("Not.A.Room")
            assert invalid.value.code == "invalid_room" and invalid.value.message

        listing = await client.notifications()
        welcome = [item for item in listing["items"] if item["title"] == "Welcome to natter"]
        for _ in range(50):
            if welcome:
                break
            await asyncio.sleep(0.1)
            listing = await client.notifications()
            welcome = [item for item in listing["items"] if item["title"] == "Welcome to natter"]
        assert len(welcome) == 1 and welcome[0]["read"] is False
        summary = await client.mark_read([welcome[0]["id"]])
        assert summary["type"] == "notifications"
        assert welcome[0]["id"] not in [item["id"] for item in summary["items"]]
        after = await http.notifications(unread_only=True)
        assert welcome[0]["id"] not in [item["id"] for item in after["items"]]
        assert (await client.mark_read(all=True))["unread"] == 0
        assert (await http.mark_read(all=True))["unread"] == 0
    await http.aclose()
    await outsider_http.aclose()


async def test_read_moves_the_marker_and_reaches_the_other_socket(stack: Stack) -> None:
    room = unique_name("r")
    writer_http, _ = await new_user(stack.base_url)
    http, _ = await new_user(stack.base_url)
    async with (
        NatterClient(stack.ws_url, http=writer_http) as writer,
        NatterClient(stack.ws_url, http=http) as phone,
        NatterClient(stack.ws_url, http=http) as laptop,
    ):
        await writer.join(room)
        await phone.join(room)
        for n in range(3):
            await writer.send(room, f"line {n}")
        marker = await phone.read(room, 2)
        assert {k: marker[k] for k in ("type", "room", "seq", "unread")} == {
            "type": "read_marker",
            "room": room,
            "seq": 2,
            "unread": 1,
        }
        pushed = await next_frame(laptop, lambda f: f.get("type") == "read_marker")
        assert pushed["room"] == room and pushed["seq"] == 2 and "id" not in pushed
        assert (await phone.read(room, 1))["seq"] == 2  # never backwards
        mine = {r["name"]: r for r in await http.my_rooms()}
        assert mine[room]["read_seq"] == 2 and mine[room]["unread"] == 1
        with pytest.raises(ValidationFailed):
            await phone.read(room, -1)
    await writer_http.aclose()
    await http.aclose()


async def test_rate_limited_sends_are_retried_and_stored_once(stack: Stack) -> None:
    http, _ = await new_user(stack.base_url)
    room = unique_name("r")
    async with NatterClient(stack.ws_url, http=http) as client:
        await client.join(room)
        total = 55  # more than the burst of 40: some are answered rate_limited and retried
        acks = await asyncio.wait_for(
            asyncio.gather(*(client.send(room, f"burst {n}") for n in range(total))), 30
        )
        assert sorted(ack["seq"] for ack in acks) == list(range(1, total + 1))
        history = await http.history(room, limit=100)
        assert sorted(m["message"] for m in history["messages"]) == sorted(f"burst {n}" for n in range(total))
        seen = await room_messages(client, room, total)
        assert [m["seq"] for m in seen] == list(range(1, total + 1))
    await http.aclose()


async def test_logout_all_stops_the_client_with_session_revoked(stack: Stack) -> None:
    http, tokens = await new_user(stack.base_url)
    other = NatterHTTP(stack.base_url)
    await other.login(tokens.username, PASSWORD)
    client = await NatterClient(stack.ws_url, http=http).connect()
    await other.logout(all=True)
    with pytest.raises(SessionRevoked):
        await next_frame(client, lambda f: False, timeout=5)
    with pytest.raises(SessionRevoked):
        await client.ping()
    await client.close()
    await other.aclose()


async def test_docs_examples_run(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ```python block of docs/sdk.md that defines ``main`` runs against the stack."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", DOCS.read_text(), re.S) if "async def main" in b]
    assert len(blocks) >= 2
    monkeypatch.setenv("NATTER_URL", stack.ws_url)
    for block in blocks:
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        exec(compile(block, str(DOCS), "exec"), namespace)
        await asyncio.wait_for(namespace["main"](), 30)


# --- isolated stacks: faults and short-lived tokens ---------------------------------------------


async def test_failover_after_kill_9_has_no_gap_and_no_duplicate(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = await asyncio.to_thread(stack_factory)
    await asyncio.to_thread(stack.start_gateway)
    urls = [gateway_ws(stack, 0), gateway_ws(stack, 1)]
    alice_http, _ = await new_user([http_base(u) for u in urls])
    bob_http, _ = await new_user(http_base(urls[1]))
    room = unique_name("r")
    total = 40
    async with (
        NatterClient(urls, http=alice_http) as alice,
        NatterClient(urls[1], http=bob_http) as bob,
    ):
        assert alice.url == urls[0]
        await alice.join(room)
        await bob.join(room)
        ten_sent = asyncio.Event()

        last_ack = 0

        async def keep_sending() -> None:
            # v2: edits, reactions, replies and deletes ride the same log as messages.
            nonlocal last_ack
            alive = 0  # the latest message not deleted
            for n in range(total):
                ack = await bob.send(room, f"m{n}", reply_to=alive if n % 7 == 3 and alive else None)
                last_ack = alive = ack["seq"]
                if n % 4 == 1:
                    last_ack = (await bob.react(room, ack["seq"], "+1"))["seq"]
                if n % 5 == 2:
                    last_ack = (await bob.edit(room, ack["seq"], f"m{n} edited"))["seq"]
                if n % 9 == 4:
                    last_ack = (await bob.delete(room, ack["seq"]))["seq"]
                    alive = 0
                if n == 9:
                    ten_sent.set()
                await asyncio.sleep(0.03)

        view = RoomView(room, me=alice_http.tokens.user_id if alice_http.tokens else None)

        async def collect() -> list[int]:
            seqs: list[int] = []
            async with asyncio.timeout(40):
                while not (sender.done() and seqs and seqs[-1] >= last_ack):
                    try:
                        frame = await alice.recv(timeout=0.2)
                    except TimeoutError:
                        continue
                    if frame.get("room") == room and isinstance(frame.get("data"), dict):
                        view.apply(frame)
                        seqs.append(frame["data"]["seq"])
            return seqs

        sender = asyncio.create_task(keep_sending())
        collector = asyncio.create_task(collect())
        await asyncio.wait_for(ten_sent.wait(), 10)
        await asyncio.to_thread(stack.gateways[0].kill)
        await asyncio.wait_for(sender, 40)
        seen = await collector
        assert alice.url == urls[1] and alice.connections == 2
        assert seen == list(range(1, last_ack + 1))  # every room event once, in order
        history = await bob_http.history(room, limit=100)
        mine = await alice_http.history(room, limit=100)
        assert view.messages() == mine["messages"]
        assert [m["seq"] for m in view.messages()] == [m["seq"] for m in history["messages"]]
    await alice_http.aclose()
    await bob_http.aclose()


async def test_send_in_flight_when_the_gateway_dies_is_resent_and_stored_once(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = await asyncio.to_thread(stack_factory)
    await asyncio.to_thread(stack.start_gateway)
    urls = [gateway_ws(stack, 0), gateway_ws(stack, 1)]
    http, _ = await new_user([http_base(u) for u in urls])
    room = unique_name("r")
    chat = stack.services["chat-0"]
    async with NatterClient(urls, http=http) as client:
        await client.join(room)
        assert (await client.send(room, "before"))["seq"] == 1
        msg_id = str(uuid.uuid4())
        # Pause chat_service so that the send is stored only after its gateway is gone: the ack
        # can only come from the resend (same client_msg_id) through the second gateway.
        chat.signal_group(signal.SIGSTOP)
        try:
            in_flight = asyncio.create_task(client.send(room, "in flight", client_msg_id=msg_id))
            await asyncio.sleep(0.5)
            assert not in_flight.done()
            await asyncio.to_thread(stack.gateways[0].kill)
            await asyncio.sleep(1.0)
        finally:
            chat.signal_group(signal.SIGCONT)
        ack = await asyncio.wait_for(in_flight, 30)
        assert ack["client_msg_id"] == msg_id and ack["seq"] == 2
        assert client.url == urls[1]
        seen = await room_messages(client, room, 2)
        assert [m["seq"] for m in seen] == [1, 2]
        history = await http.history(room)
        assert [(m["message"], m["client_msg_id"]) for m in history["messages"]] == [
            ("before", seen[0]["client_msg_id"]),
            ("in flight", msg_id),
        ]
    await http.aclose()


async def test_token_refresh_keeps_the_socket_past_expiry(stack_factory) -> None:  # type: ignore[no-untyped-def]
    """Two clients on 6-second tokens: one refreshes on the live socket (same socket past the
    first expiry); the other refreshes too late on purpose, is closed 1008 "token expired",
    refreshes and reconnects, and its messages continue without a gap or a duplicate."""
    stack: Stack = await asyncio.to_thread(stack_factory, {"NATTER_AUTH_ACCESS_TTL_SECONDS": "6"})
    http, tokens = await new_user(stack.base_url)
    late_http, late_tokens = await new_user(stack.base_url)
    assert tokens.expires_at - time.time() <= 7
    room = unique_name("r")
    async with (
        NatterClient(stack.ws_url, http=http) as client,
        # refresh_fraction=10: the live refresh would come long after expiry.
        NatterClient(stack.ws_url, http=late_http, refresh_fraction=10) as late,
    ):
        await client.join(room)
        await late.join(room)
        first_expiry = max(client.expires_at, late.expires_at)
        assert first_expiry <= time.time() + 7
        assert (await client.send(room, "before expiry"))["seq"] == 1
        await asyncio.sleep(max(0.0, first_expiry + 2 - time.time()))
        await asyncio.wait_for(late.wait_connected(), 10)
        assert client.connected and client.connections == 1, "the socket was replaced"
        assert client.expires_at > first_expiry
        assert http.tokens is not None and http.tokens.access_token != tokens.access_token
        assert late.connections == 2, "the late client was not closed at expiry and reconnected"
        assert late_http.tokens is not None and late_http.tokens.access_token != late_tokens.access_token
        ack = await client.send(room, "still here")
        assert ack["seq"] == 2
        for each in (client, late):
            seen = await room_messages(each, room, 2)
            assert [(m["seq"], m["message"]) for m in seen] == [(1, "before expiry"), (2, "still here")]
        assert client.connections == 1
    await http.aclose()
    await late_http.aclose()


def test_sdk_has_no_server_imports() -> None:
    """The SDK depends on httpx and websockets only (it ships to client machines)."""
    package = Path(__file__).resolve().parents[2] / "natter" / "sdk"
    server = re.compile(
        r"^\s*(from|import)\s+(shared|gateway|auth_service|chat_service|notify_service)\b", re.M
    )
    sources = list(package.glob("*.py"))
    assert len(sources) >= 6
    for source in sources:
        assert not server.search(source.read_text()), source.name
