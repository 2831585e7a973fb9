"""notify_service against a real nats-server, the real auth_service, chat_service (which
answers ``chat.access`` for mentions) and real notify processes.

Covers docs/subjects.md (``notify.send|broadcast|list|read``, the ``notify-welcome`` and
``notify-mentions`` durable consumers) and PROTOCOL.md section 5 (notification frames, read
state, welcome and mention notifications). Users are registered through ``auth.register``; chat
events are published to JetStream exactly as docs/subjects.md defines them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.aio.msg import Msg

from natter.launcher import ManagedProcess, service_process
from shared import subjects
from shared.errors import ErrorCode, ProtocolError
from shared.nats_client import request_json
from tests.conftest import NatsServer, start_nats, wait_services
from tests.support import unique_name

PASSWORD = "correct horse 1"
TIMEOUT = 10.0
TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


# --- processes -------------------------------------------------------------------------------
@dataclass
class NotifyStack:
    """auth + notify processes against one nats-server."""

    server: NatsServer
    tmp: Path
    env: dict[str, str] = field(default_factory=dict)
    processes: dict[str, ManagedProcess] = field(default_factory=dict)

    @property
    def nats_url(self) -> str:
        """The operator's URL (the tests' own connections)."""
        return self.server.url

    def start(self, name: str) -> None:
        process = service_process(
            name,
            nats_url=self.server.client_url,
            env=self.env,
            log_path=self.tmp / f"{name}.log",
            credentials=self.server.credentials,
        )
        self.processes[name] = process.start()
        wait_services(self.nats_url, (name,), timeout=30)

    def stop(self, name: str) -> None:
        self.processes[name].stop(grace=10)

    def stop_all(self) -> None:
        for process in reversed(self.processes.values()):
            process.stop(grace=10)


@pytest.fixture(scope="module")
def notify_stack(nats_server: NatsServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[NotifyStack]:
    stack = NotifyStack(server=nats_server, tmp=tmp_path_factory.mktemp("notify"))
    try:
        stack.start("auth")
        stack.start("chat")
        stack.start("notify")
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture
async def nc(notify_stack: NotifyStack) -> AsyncIterator[Client]:
    client = await nats.connect(notify_stack.nats_url)
    yield client
    await client.close()


# --- helpers ---------------------------------------------------------------------------------
@dataclass
class Registered:
    user_id: str
    username: str


async def register(nc: Client, username: str | None = None) -> Registered:
    body = {"username": username or unique_name(), "password": PASSWORD}
    reply = await request_json(nc, subjects.AUTH_REGISTER, body, timeout=TIMEOUT)
    return Registered(user_id=reply["user_id"], username=reply["username"])


async def notify_list(nc: Client, user_id: str, **options: Any) -> dict[str, Any]:
    reply = await request_json(nc, subjects.NOTIFY_LIST, {"user_id": user_id, **options}, timeout=TIMEOUT)
    assert isinstance(reply, dict)
    return reply


async def mark_read(nc: Client, user_id: str, **options: Any) -> dict[str, Any]:
    reply = await request_json(nc, subjects.NOTIFY_READ, {"user_id": user_id, **options}, timeout=TIMEOUT)
    assert isinstance(reply, dict)
    return reply


async def send(nc: Client, **body: Any) -> dict[str, Any]:
    body.setdefault("title", "Hello")
    body.setdefault("message", "A message")
    reply = await request_json(nc, subjects.NOTIFY_SEND, body, timeout=TIMEOUT)
    assert isinstance(reply, dict)
    return reply


async def error_of(call: Awaitable[Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        await call
    return caught.value


async def eventually(check: Callable[[], Awaitable[Any]], *, timeout: float = 15.0, what: str = "") -> Any:
    """Poll ``check`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what or check}")
        await asyncio.sleep(0.1)


async def item_by_id(nc: Client, user_id: str, notification_id: str) -> dict[str, Any] | None:
    for item in (await notify_list(nc, user_id, limit=500))["items"]:
        if item["id"] == notification_id:
            return dict(item)
    return None


async def wait_item(nc: Client, user_id: str, notification_id: str, timeout: float = 15.0) -> dict[str, Any]:
    async def check() -> dict[str, Any] | None:
        return await item_by_id(nc, user_id, notification_id)

    item: dict[str, Any] = await eventually(check, timeout=timeout, what=f"notification {notification_id}")
    return item


class Pushes:
    """Collects frames published on a delivery subject (wildcards allowed)."""

    def __init__(self) -> None:
        self.msgs: list[Msg] = []

    async def handler(self, msg: Msg) -> None:
        self.msgs.append(msg)

    def frames(self, subject: str | None = None) -> list[dict[str, Any]]:
        return [json.loads(m.data) for m in self.msgs if subject is None or m.subject == subject]

    def with_id(self, subject: str, notification_id: str) -> list[Msg]:
        return [
            m
            for m in self.msgs
            if m.subject == subject and json.loads(m.data)["data"].get("id") == notification_id
        ]


async def collect(nc: Client, subject: str) -> Pushes:
    pushes = Pushes()
    await nc.subscribe(subject, cb=pushes.handler)
    await nc.flush()
    return pushes


async def wait_push(pushes: Pushes, subject: str, notification_id: str, timeout: float = 10.0) -> Msg:
    async def check() -> list[Msg]:
        return pushes.with_id(subject, notification_id)

    found: list[Msg] = await eventually(check, timeout=timeout, what=f"push of {notification_id}")
    return found[0]


async def wait_consumer_idle(nc: Client, durable: str, timeout: float = 15.0) -> None:
    """Wait until the durable consumer has handled (acked) every event in the stream."""
    js = nc.jetstream()

    async def check() -> bool:
        info = await js.consumer_info(subjects.EVENTS_STREAM, durable)
        return info.num_pending == 0 and info.num_ack_pending == 0

    await eventually(check, timeout=timeout, what=f"consumer {durable} idle")


async def create_room(nc: Client, room: str, owner: Registered, *, private: bool = False) -> None:
    """A room in chat's registry (mentions notify only users who may read it, ``chat.access``)."""
    body = {"user_id": owner.user_id, "username": owner.username, "name": room, "private": private}
    await request_json(nc, subjects.CHAT_ROOMS_CREATE, body, timeout=TIMEOUT)


async def chat_send(nc: Client, *, room: str, sender: Registered, message: str) -> int:
    """Store a message through chat (which publishes ``events.chat.message`` for its mentions);
    returns its seq."""
    body = {"user_id": sender.user_id, "username": sender.username, "room": room, "message": message}
    ack = await request_json(nc, subjects.CHAT_SEND, body, timeout=TIMEOUT)
    assert ack["type"] == "ack", ack
    return int(ack["seq"])


async def chat_delete(nc: Client, *, room: str, sender: Registered, seq: int) -> None:
    body = {"user_id": sender.user_id, "username": sender.username, "room": room, "target": seq}
    ack = await request_json(nc, subjects.CHAT_DELETE, body, timeout=TIMEOUT)
    assert ack["type"] == "ack" and ack["seq"], ack


async def publish_chat_event(
    nc: Client, *, room: str, seq: int, sender: Registered, mentions: list[str], msg_id: str
) -> None:
    """``events.chat.message`` as docs/subjects.md defines it (no text: notify asks chat)."""
    body = {
        "room": room,
        "seq": seq,
        "user_id": sender.user_id,
        "username": sender.username,
        "mentions": mentions,
    }
    ack = await nc.jetstream().publish(
        subjects.EVENT_CHAT_MESSAGE,
        json.dumps(body, separators=(",", ":")).encode(),
        stream=subjects.EVENTS_STREAM,
        headers={"Nats-Msg-Id": msg_id},
        timeout=TIMEOUT,
    )
    assert not ack.duplicate


async def raw_stream_bodies(nc: Client, stream: str, subject: str) -> list[bytes]:
    """Every body stored in ``stream`` on ``subject`` now (an ordered consumer; no service)."""
    js = nc.jetstream()
    sub = await js.subscribe(subject, stream=stream, ordered_consumer=True)
    info = await js.stream_info(stream, subjects_filter=subject)
    want = (info.state.subjects or {}).get(subject, 0)
    bodies: list[bytes] = []
    try:
        while len(bodies) < want:
            msg = await sub.next_msg(timeout=TIMEOUT)
            bodies.append(msg.data)
    finally:
        await sub.unsubscribe()
    return bodies


# --- welcome ---------------------------------------------------------------------------------
async def test_welcome_notification_is_stored_and_pushed(nc: Client) -> None:
    pushes = await collect(nc, subjects.DELIVER_USER_WILDCARD)
    user = await register(nc)
    welcome_id = f"welcome-{user.user_id}"

    item = await wait_item(nc, user.user_id, welcome_id)
    assert item["title"] == "Welcome to natter"
    assert user.username in item["message"]
    assert item["notification_type"] == "info"
    assert item["read"] is False
    assert item["metadata"] == {}
    assert TIMESTAMP_RE.fullmatch(item["timestamp"])

    push = await wait_push(pushes, subjects.deliver_user(user.user_id), welcome_id)
    assert push.headers is not None and push.headers.get(subjects.HDR_KIND) == "notification"
    frame = json.loads(push.data)
    assert frame == {"type": "notification", "data": {**item, "read": False}}
    assert list(frame["data"]) == [
        "id",
        "title",
        "message",
        "notification_type",
        "timestamp",
        "read",
        "metadata",
    ]
    await wait_consumer_idle(nc, "notify-welcome")
    assert len(pushes.with_id(subjects.deliver_user(user.user_id), welcome_id)) == 1


# --- notify.send -----------------------------------------------------------------------------
async def test_send_by_username_is_pushed_and_stored(nc: Client) -> None:
    user = await register(nc)
    subject = subjects.deliver_user(user.user_id)
    pushes = await collect(nc, subject)

    reply = await send(
        nc,
        username=user.username.upper(),
        title="Build finished",
        message="Your build #42 passed",
        notification_type="success",
        metadata={"build": 42},
    )
    assert reply["status"] == "sent"
    assert re.fullmatch(r"[0-9a-f]{32}", reply["id"])

    push = await wait_push(pushes, subject, reply["id"])
    assert push.headers is not None and push.headers.get(subjects.HDR_KIND) == "notification"
    assert push.data.startswith(b'{"type":"notification","data":{"id":"' + reply["id"].encode())
    data = json.loads(push.data)["data"]
    assert data["title"] == "Build finished"
    assert data["message"] == "Your build #42 passed"
    assert data["notification_type"] == "success"
    assert data["metadata"] == {"build": 42}
    assert data["read"] is False
    assert TIMESTAMP_RE.fullmatch(data["timestamp"])

    stored = await item_by_id(nc, user.user_id, reply["id"])
    assert stored == data


async def test_send_by_user_id_is_pushed_and_stored(nc: Client) -> None:
    user = await register(nc)
    subject = subjects.deliver_user(user.user_id)
    pushes = await collect(nc, subject)

    reply = await send(nc, user_id=user.user_id, title="Direct", message="By id", notification_type="warning")
    assert reply["status"] == "sent"
    push = await wait_push(pushes, subject, reply["id"])
    stored = await item_by_id(nc, user.user_id, reply["id"])
    assert stored is not None
    assert stored == json.loads(push.data)["data"]
    assert stored["notification_type"] == "warning"
    assert stored["metadata"] == {}


async def test_send_to_unknown_user_is_not_found(nc: Client) -> None:
    missing_id = uuid.uuid4().hex
    pushes = await collect(nc, subjects.deliver_user(missing_id))

    error = await error_of(send(nc, username=unique_name("ghost")))
    assert error.code is ErrorCode.NOT_FOUND
    assert error.message == "User not found"
    error = await error_of(send(nc, user_id=missing_id))
    assert error.code is ErrorCode.NOT_FOUND

    listing = await notify_list(nc, missing_id)
    assert listing == {"type": "notifications", "unread": 0, "items": []}
    await nc.flush()
    assert pushes.msgs == []


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"title": "t", "message": "m", "notification_type": "fatal"}, "notification_type"),
        ({"message": "m"}, "title"),
        ({"title": "", "message": "m"}, "title"),
        ({"title": "t"}, "message"),
        ({"title": "t", "message": "m", "metadata": "not an object"}, "metadata"),
    ],
)
async def test_send_validation_errors_change_nothing(nc: Client, body: dict[str, Any], fragment: str) -> None:
    user = await register(nc)
    await wait_item(nc, user.user_id, f"welcome-{user.user_id}")
    before = await notify_list(nc, user.user_id, limit=500)

    error = await error_of(
        request_json(nc, subjects.NOTIFY_SEND, {"user_id": user.user_id, **body}, timeout=TIMEOUT)
    )
    assert error.code is ErrorCode.VALIDATION_ERROR
    assert fragment in error.message

    assert await notify_list(nc, user.user_id, limit=500) == before


async def test_send_needs_exactly_one_recipient(nc: Client) -> None:
    user = await register(nc)
    both = await error_of(send(nc, user_id=user.user_id, username=user.username))
    assert both.code is ErrorCode.VALIDATION_ERROR
    neither = await error_of(send(nc))
    assert neither.code is ErrorCode.VALIDATION_ERROR
    bad_id = await error_of(send(nc, user_id="a.b.>"))
    assert bad_id.code is ErrorCode.VALIDATION_ERROR


# --- notify.broadcast ------------------------------------------------------------------------
async def test_broadcast_is_published_on_deliver_all_and_not_stored(nc: Client) -> None:
    user = await register(nc)
    await wait_item(nc, user.user_id, f"welcome-{user.user_id}")
    pushes = await collect(nc, subjects.DELIVER_ALL)
    title = f"Maintenance {uuid.uuid4().hex[:8]}"

    reply = await request_json(
        nc,
        subjects.NOTIFY_BROADCAST,
        {"title": title, "message": "Down at 22:00 UTC", "notification_type": "warning"},
        timeout=TIMEOUT,
    )
    assert reply == {"status": "broadcasted"}

    async def received() -> list[dict[str, Any]]:
        return [f for f in pushes.frames() if f["data"]["title"] == title]

    frames = await eventually(received, timeout=5, what="broadcast")
    assert len(frames) == 1
    frame = frames[0]
    assert frame["type"] == "broadcast_notification"
    assert set(frame["data"]) == {"title", "message", "notification_type", "timestamp"}
    assert frame["data"]["message"] == "Down at 22:00 UTC"
    assert frame["data"]["notification_type"] == "warning"
    assert TIMESTAMP_RE.fullmatch(frame["data"]["timestamp"])
    assert (
        pushes.msgs[-1].headers is not None and pushes.msgs[-1].headers.get(subjects.HDR_KIND) == "broadcast"
    )

    listing = await notify_list(nc, user.user_id, limit=500)
    assert all(item["title"] != title for item in listing["items"])


async def test_broadcast_validation_error(nc: Client) -> None:
    pushes = await collect(nc, subjects.DELIVER_ALL)
    error = await error_of(
        request_json(nc, subjects.NOTIFY_BROADCAST, {"message": "no title"}, timeout=TIMEOUT)
    )
    assert error.code is ErrorCode.VALIDATION_ERROR
    error = await error_of(
        request_json(
            nc,
            subjects.NOTIFY_BROADCAST,
            {"title": "t", "message": "m", "notification_type": "x"},
            timeout=TIMEOUT,
        )
    )
    assert error.code is ErrorCode.VALIDATION_ERROR
    await nc.flush()
    await asyncio.sleep(0.2)
    assert pushes.msgs == []


# --- notify.list / notify.read ---------------------------------------------------------------
async def _user_with_notifications(nc: Client, count: int) -> tuple[Registered, str, list[str]]:
    """A fresh user whose welcome arrived, plus ``count`` sent notifications (ids oldest first)."""
    user = await register(nc)
    welcome = f"welcome-{user.user_id}"
    await wait_item(nc, user.user_id, welcome)
    ids = [
        (await send(nc, user_id=user.user_id, title=f"n{i}", message=f"message {i}"))["id"]
        for i in range(count)
    ]
    return user, welcome, ids


async def test_list_newest_first_with_limit_and_unread_only(nc: Client) -> None:
    user, welcome, ids = await _user_with_notifications(nc, 3)

    listing = await notify_list(nc, user.user_id)
    assert listing["type"] == "notifications"
    assert "id" not in listing
    assert listing["unread"] == 4
    assert [item["id"] for item in listing["items"]] == [*reversed(ids), welcome]

    limited = await notify_list(nc, user.user_id, limit=2)
    assert limited["unread"] == 4
    assert [item["id"] for item in limited["items"]] == [ids[2], ids[1]]

    await mark_read(nc, user.user_id, ids=[ids[2]])
    unread = await notify_list(nc, user.user_id, unread_only=True)
    assert unread["unread"] == 3
    assert [item["id"] for item in unread["items"]] == [ids[1], ids[0], welcome]
    everything = await notify_list(nc, user.user_id)
    assert [(item["id"], item["read"]) for item in everything["items"]] == [
        (ids[2], True),
        (ids[1], False),
        (ids[0], False),
        (welcome, False),
    ]

    error = await error_of(notify_list(nc, user.user_id, limit=0))
    assert error.code is ErrorCode.VALIDATION_ERROR
    error = await error_of(notify_list(nc, "bad.user"))
    assert error.code is ErrorCode.VALIDATION_ERROR


async def test_mark_read_by_ids_then_all(nc: Client) -> None:
    other, _, _ = await _user_with_notifications(nc, 0)
    user, welcome, ids = await _user_with_notifications(nc, 3)

    summary = await mark_read(nc, user.user_id, ids=[ids[0], "not-a-notification-of-this-user"])
    assert summary["type"] == "notifications"
    assert summary["unread"] == 3
    assert [item["id"] for item in summary["items"]] == [ids[2], ids[1], welcome]
    assert all(item["read"] is False for item in summary["items"])

    again = await mark_read(nc, user.user_id, ids=[ids[0]])
    assert again == summary

    summary = await mark_read(nc, user.user_id, all=True)
    assert summary == {"type": "notifications", "unread": 0, "items": []}

    newer = (await send(nc, user_id=user.user_id, title="later", message="after mark all"))["id"]
    listing = await notify_list(nc, user.user_id)
    assert listing["unread"] == 1
    assert [(item["id"], item["read"]) for item in listing["items"]] == [
        (newer, False),
        (ids[2], True),
        (ids[1], True),
        (ids[0], True),
        (welcome, True),
    ]

    # Another user's read state is untouched.
    assert (await notify_list(nc, other.user_id))["unread"] == 1


async def test_mark_read_concurrent_updates_are_all_kept(nc: Client) -> None:
    user, welcome, ids = await _user_with_notifications(nc, 6)
    await asyncio.gather(*(mark_read(nc, user.user_id, ids=[nid]) for nid in ids))
    listing = await notify_list(nc, user.user_id)
    assert listing["unread"] == 1
    assert [item["id"] for item in listing["items"] if not item["read"]] == [welcome]


# --- mentions --------------------------------------------------------------------------------
async def test_mention_event_notifies_each_mentioned_user_once(nc: Client) -> None:
    sender = await register(nc)
    target = await register(nc)
    room = unique_name("room")
    await create_room(nc, room, sender)
    target_subject = subjects.deliver_user(target.user_id)
    sender_subject = subjects.deliver_user(sender.user_id)
    await wait_item(nc, target.user_id, f"welcome-{target.user_id}")
    await wait_item(nc, sender.user_id, f"welcome-{sender.user_id}")
    pushes = await collect(nc, subjects.DELIVER_USER_WILDCARD)
    nobody = unique_name("nobody")
    text = f"hey @{target.username} and @{sender.username} @{nobody} @{target.username} " + "x" * 300

    seq = await chat_send(nc, room=room, sender=sender, message=text)
    mention_id = f"mention-{room}-{seq}-{target.user_id}"
    item = await wait_item(nc, target.user_id, mention_id)
    assert item["title"] == f"{sender.username} mentioned you in #{room}"
    assert item["notification_type"] == "info"
    assert item["metadata"] == {"room": room, "seq": seq}
    assert item["read"] is False
    assert len(item["message"]) == 200
    assert text.startswith(item["message"][:-1])
    push = await wait_push(pushes, target_subject, mention_id)
    assert json.loads(push.data)["data"] == item
    # The event in EVENTS carries no text (a deleted message leaves no copy there to purge).
    stored_events = await raw_stream_bodies(nc, subjects.EVENTS_STREAM, subjects.EVENT_CHAT_MESSAGE)
    assert not [body for body in stored_events if b"x" * 300 in body]

    # The same event again (a second publish with another Nats-Msg-Id): still one notification.
    mentions = [target.username.lower(), sender.username.lower(), nobody]
    await publish_chat_event(
        nc, room=room, seq=seq, sender=sender, mentions=mentions, msg_id=f"msg:{room}:{seq}:again"
    )
    await wait_consumer_idle(nc, "notify-mentions")
    await asyncio.sleep(0.2)
    target_items = (await notify_list(nc, target.user_id, limit=500))["items"]
    assert [i["id"] for i in target_items].count(mention_id) == 1
    assert len(target_items) == 2  # welcome + one mention
    assert len(pushes.with_id(target_subject, mention_id)) == 1
    # The sender is never notified of their own mention.
    sender_items = (await notify_list(nc, sender.user_id, limit=500))["items"]
    assert [i["id"] for i in sender_items] == [f"welcome-{sender.user_id}"]
    # (sending moved the sender's read marker: that frame is chat's, not a notification)
    assert [f for f in pushes.frames(sender_subject) if f["type"] == "notification"] == []


async def test_mention_in_a_private_room_notifies_members_only(nc: Client) -> None:
    owner, member, outsider = await register(nc), await register(nc), await register(nc)
    room = unique_name("room")
    await create_room(nc, room, owner, private=True)
    add = {"user_id": owner.user_id, "username": owner.username, "room": room, "member": member.username}
    await request_json(nc, subjects.CHAT_ROOMS_ADD_MEMBER, add, timeout=TIMEOUT)
    text = f"private @{outsider.username} @{member.username}"
    seq = await chat_send(nc, room=room, sender=owner, message=text)
    await wait_item(nc, member.user_id, f"mention-{room}-{seq}-{member.user_id}")
    await wait_consumer_idle(nc, "notify-mentions")
    assert await item_by_id(nc, outsider.user_id, f"mention-{room}-{seq}-{outsider.user_id}") is None


async def test_mention_of_a_deleted_message_loses_its_text_everywhere(nc: Client) -> None:
    """PROTOCOL.md section 8: once deleted, no notification carries the text, the stored copy is
    erased from NOTIFICATIONS, and the notification's read state is kept."""
    sender, target = await register(nc), await register(nc)
    room = unique_name("room")
    await create_room(nc, room, sender)
    secret = "secret-" + uuid.uuid4().hex
    seq = await chat_send(nc, room=room, sender=sender, message=f"@{target.username} {secret}")
    mention_id = f"mention-{room}-{seq}-{target.user_id}"
    item = await wait_item(nc, target.user_id, mention_id)
    assert secret in item["message"]
    await mark_read(nc, target.user_id, ids=[mention_id])
    unread_before = (await notify_list(nc, target.user_id))["unread"]

    await chat_delete(nc, room=room, sender=sender, seq=seq)

    async def redacted() -> dict[str, Any] | None:
        found = await item_by_id(nc, target.user_id, mention_id)
        return found if found is not None and found["message"] == "" else None

    item = await eventually(redacted, timeout=15, what="the mention without its text")
    assert item["metadata"] == {"room": room, "seq": seq, "deleted": True}
    assert item["title"] == f"{sender.username} mentioned you in #{room}"
    assert item["read"] is True
    listing = await notify_list(nc, target.user_id, limit=500)
    assert [i["id"] for i in listing["items"]].count(mention_id) == 1
    assert listing["unread"] == unread_before
    stored = await raw_stream_bodies(
        nc, subjects.NOTIFICATIONS_STREAM, subjects.notifications_subject(target.user_id)
    )
    assert stored and not [body for body in stored if secret.encode() in body]
    for stream_subject in (subjects.EVENT_CHAT_MESSAGE, subjects.EVENT_CHAT_MESSAGE_DELETED):
        events = await raw_stream_bodies(nc, subjects.EVENTS_STREAM, stream_subject)
        assert not [body for body in events if secret.encode() in body]


# --- durability and retries (own nats-server: these tests stop processes) ---------------------
@pytest.fixture
def isolated_stack(tmp_path: Path) -> Iterator[NotifyStack]:
    server = start_nats(tmp_path, name="nats-notify")
    stack = NotifyStack(
        tmp=tmp_path,
        env={
            "NATTER_NOTIFY_RETRY_DELAY_MAX": "1",
            "NATTER_NOTIFY_MAX_DELIVER": "60",
            "NATTER_NOTIFY_FETCH_TIMEOUT": "2",
            "NATTER_NOTIFY_CONSUMER_CHECK_INTERVAL": "1",
        },
        server=server,
    )
    try:
        stack.start("auth")
        stack.start("chat")
        stack.start("notify")
        yield stack
    finally:
        stack.stop_all()
        server.stop()


async def test_event_published_while_notify_is_down_is_handled_on_start(isolated_stack: NotifyStack) -> None:
    client = await nats.connect(isolated_stack.nats_url)
    try:
        first = await register(client)
        await wait_item(client, first.user_id, f"welcome-{first.user_id}")

        await asyncio.to_thread(isolated_stack.stop, "notify")
        user = await register(client)  # events.user.registered while no notify replica runs
        pushes = await collect(client, subjects.deliver_user(user.user_id))
        with pytest.raises(ProtocolError) as caught:
            await request_json(client, subjects.NOTIFY_LIST, {"user_id": user.user_id}, timeout=1)
        assert caught.value.code is ErrorCode.UNAVAILABLE

        await asyncio.to_thread(isolated_stack.start, "notify")
        welcome_id = f"welcome-{user.user_id}"
        item = await wait_item(client, user.user_id, welcome_id, timeout=20)
        assert item["title"] == "Welcome to natter"
        await wait_push(pushes, subjects.deliver_user(user.user_id), welcome_id)
        await wait_consumer_idle(client, "notify-welcome")
        # The earlier user's welcome was not produced a second time by the restart.
        first_items = (await notify_list(client, first.user_id))["items"]
        assert [i["id"] for i in first_items] == [f"welcome-{first.user_id}"]
    finally:
        await client.close()


async def test_mention_is_retried_while_auth_is_down(isolated_stack: NotifyStack) -> None:
    client = await nats.connect(isolated_stack.nats_url)
    try:
        sender = await register(client)
        target = await register(client)
        await wait_item(client, target.user_id, f"welcome-{target.user_id}")
        room = unique_name("room")
        await create_room(client, room, sender)

        await asyncio.to_thread(isolated_stack.stop, "auth")
        text = f"ping @{target.username}"
        seq = await chat_send(client, room=room, sender=sender, message=text)
        js = client.jetstream()

        async def redelivered() -> bool:
            info = await js.consumer_info(subjects.EVENTS_STREAM, "notify-mentions")
            return (info.num_redelivered or 0) > 0 or info.num_ack_pending > 0

        await eventually(redelivered, timeout=10, what="a failed delivery")
        assert (await notify_list(client, target.user_id))["unread"] == 1  # only the welcome

        await asyncio.to_thread(isolated_stack.start, "auth")
        mention_id = f"mention-{room}-{seq}-{target.user_id}"
        item = await wait_item(client, target.user_id, mention_id, timeout=20)
        assert item["message"] == text
        await wait_consumer_idle(client, "notify-mentions")
        items = (await notify_list(client, target.user_id))["items"]
        assert [i["id"] for i in items].count(mention_id) == 1
    finally:
        await client.close()


async def test_a_message_deleted_while_notify_is_down_notifies_nobody(isolated_stack: NotifyStack) -> None:
    client = await nats.connect(isolated_stack.nats_url)
    try:
        sender, target = await register(client), await register(client)
        await wait_item(client, target.user_id, f"welcome-{target.user_id}")
        room = unique_name("room")
        await create_room(client, room, sender)
        kept_text = f"kept @{target.username}"

        await asyncio.to_thread(isolated_stack.stop, "notify")
        gone = await chat_send(client, room=room, sender=sender, message=f"gone @{target.username}")
        kept = await chat_send(client, room=room, sender=sender, message=kept_text)
        await chat_delete(client, room=room, sender=sender, seq=gone)
        await asyncio.to_thread(isolated_stack.start, "notify")

        item = await wait_item(client, target.user_id, f"mention-{room}-{kept}-{target.user_id}", timeout=20)
        assert item["message"] == kept_text
        await wait_consumer_idle(client, "notify-mentions")
        assert await item_by_id(client, target.user_id, f"mention-{room}-{gone}-{target.user_id}") is None
    finally:
        await client.close()


async def test_consumers_and_endpoints_survive_a_nats_restart(isolated_stack: NotifyStack) -> None:
    server = isolated_stack.server
    assert server is not None
    client = await nats.connect(isolated_stack.nats_url)
    try:
        first = await register(client)
        await wait_item(client, first.user_id, f"welcome-{first.user_id}")
    finally:
        await client.close()

    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)

    client = await nats.connect(isolated_stack.nats_url)
    try:
        await asyncio.to_thread(wait_services, isolated_stack.nats_url, ("auth", "notify"), 30.0)
        user = await register(client)
        item = await wait_item(client, user.user_id, f"welcome-{user.user_id}", timeout=30)
        assert item["read"] is False
        reply = await send(client, user_id=first.user_id, title="after restart", message="still here")
        assert await item_by_id(client, first.user_id, reply["id"]) is not None
    finally:
        await client.close()


async def test_deleted_durable_consumer_is_created_again(isolated_stack: NotifyStack) -> None:
    client = await nats.connect(isolated_stack.nats_url)
    try:
        js = client.jetstream()
        assert await js.delete_consumer(subjects.EVENTS_STREAM, "notify-welcome")
        user = await register(client)
        item = await wait_item(client, user.user_id, f"welcome-{user.user_id}", timeout=20)
        assert item["title"] == "Welcome to natter"
        info = await js.consumer_info(subjects.EVENTS_STREAM, "notify-welcome")
        assert info.config.durable_name == "notify-welcome"
    finally:
        await client.close()
