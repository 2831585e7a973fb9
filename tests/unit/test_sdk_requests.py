"""natter.sdk.requests.RequestTable and natter.sdk.connection's close/refusal rules: request ids,
answers, retries, deadlines and resends across sockets (no network: a socket is a list)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from natter.sdk.connection import RetryConnect, TokenRejectedAsExpired, close_action, refusal
from natter.sdk.errors import (
    AuthenticationFailed,
    ConnectionLost,
    Forbidden,
    RequestTimeout,
    SessionRevoked,
    Unavailable,
)
from natter.sdk.requests import RequestTable


class Socket:
    """What a socket was given to send (the table only calls ``write``)."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def write(self, text: str) -> None:
        self.sent.append(json.loads(text))
        self.changed.set()


def table() -> RequestTable:
    return RequestTable(id_prefix="t-", backoff_base=0.01, backoff_cap=0.02)


async def until_sent(socket: Socket, count: int) -> None:
    async with asyncio.timeout(2):
        while len(socket.sent) < count:
            socket.changed.clear()
            await socket.changed.wait()


async def test_answer_with_the_id_resolves_the_request() -> None:
    requests, socket = table(), Socket()
    requests.attach(socket.write)
    requests.go_live()
    task = asyncio.create_task(requests.request({"type": "ping"}, kind="ping", timeout=2))
    await until_sent(socket, 1)
    sent = socket.sent[0]
    assert sent["type"] == "ping" and sent["id"].startswith("t-")
    assert requests.answer({"type": "pong", "id": "t-999"}) is True  # ours, but unknown: dropped
    assert requests.answer({"type": "pong", "id": "someone-else"}) is False
    assert not task.done()
    assert requests.answer({"type": "pong", "id": sent["id"]}) is True
    assert await task == {"type": "pong", "id": sent["id"]}
    assert len(requests) == 0


async def test_error_answer_raises_the_typed_error() -> None:
    requests, socket = table(), Socket()
    requests.attach(socket.write)
    requests.go_live()
    task = asyncio.create_task(requests.request({"type": "join", "room": "p"}, kind="join", timeout=2))
    await until_sent(socket, 1)
    requests.answer(
        {"type": "error", "code": "forbidden", "message": "Private room", "id": socket.sent[0]["id"]}
    )
    with pytest.raises(Forbidden) as raised:
        await task
    assert raised.value.code == "forbidden" and raised.value.message == "Private room"


async def test_rate_limited_is_retried_with_a_new_id_and_the_same_frame() -> None:
    requests, socket = table(), Socket()
    requests.attach(socket.write)
    requests.go_live()
    frame = {"type": "chat_message", "room": "r", "message": "hi", "client_msg_id": "c1"}
    task = asyncio.create_task(requests.request(frame, kind="send", timeout=2))
    await until_sent(socket, 1)
    requests.answer(
        {"type": "error", "code": "rate_limited", "retry_after": 0.01, "id": socket.sent[0]["id"]}
    )
    await until_sent(socket, 2)
    first, second = socket.sent
    assert first["id"] != second["id"]
    assert {k: v for k, v in second.items() if k != "id"} == frame
    requests.answer({"type": "ack", "seq": 1, "client_msg_id": "c1", "id": second["id"]})
    assert (await task)["seq"] == 1


async def test_unavailable_until_the_deadline_raises_it() -> None:
    requests, socket = table(), Socket()
    requests.attach(socket.write)
    requests.go_live()
    task = asyncio.create_task(
        requests.request({"type": "history", "room": "r"}, kind="history", timeout=0.3)
    )
    answered = 0
    while not task.done():
        await asyncio.sleep(0.005)
        if len(socket.sent) > answered:
            requests.answer({"type": "error", "code": "unavailable", "id": socket.sent[answered]["id"]})
            answered += 1
    with pytest.raises(Unavailable):
        await task
    assert answered >= 2


async def test_no_answer_is_a_timeout() -> None:
    requests, socket = table(), Socket()
    requests.attach(socket.write)
    requests.go_live()
    with pytest.raises(RequestTimeout):
        await requests.request({"type": "ping"}, kind="ping", timeout=0.05)
    assert len(requests) == 0


async def test_only_early_requests_go_out_before_live_then_the_rest_in_order() -> None:
    requests, socket = table(), Socket()
    tasks = [
        asyncio.create_task(requests.request({"type": "x", "n": n}, kind="x", timeout=2)) for n in range(3)
    ]
    await asyncio.sleep(0)
    requests.attach(socket.write)
    early = asyncio.create_task(
        requests.request({"type": "join", "room": "r"}, kind="join", timeout=2, early=True)
    )
    await until_sent(socket, 1)
    assert [f["type"] for f in socket.sent] == ["join"]
    requests.go_live()
    assert [f.get("n") for f in socket.sent[1:]] == [0, 1, 2]
    for frame in socket.sent:
        requests.answer({"type": "ok", "id": frame["id"]})
    await asyncio.gather(early, *tasks)


async def test_detach_resends_resendable_requests_and_fails_the_others() -> None:
    requests, first = table(), Socket()
    requests.attach(first.write)
    requests.go_live()
    frame = {"type": "chat_message", "room": "r", "message": "hi", "client_msg_id": "c1"}
    send = asyncio.create_task(requests.request(frame, kind="send", timeout=2))
    internal = asyncio.create_task(requests.request({"type": "auth"}, kind="auth", timeout=2, resend=False))
    await until_sent(first, 2)
    requests.detach()
    with pytest.raises(ConnectionLost):
        await internal
    with pytest.raises(ConnectionLost):
        await requests.request({"type": "auth"}, kind="auth", timeout=2, resend=False)
    # The old socket's answer can no longer settle anything.
    assert requests.answer({"type": "ack", "id": first.sent[0]["id"]}) is True
    assert not send.done()
    second = Socket()
    requests.attach(second.write)
    assert second.sent == []
    requests.go_live()
    assert len(second.sent) == 1 and second.sent[0]["client_msg_id"] == "c1"
    assert second.sent[0]["id"] != first.sent[0]["id"]
    requests.answer({"type": "ack", "seq": 7, "id": second.sent[0]["id"]})
    assert (await send)["seq"] == 7


async def test_retry_hook_decides_other_codes() -> None:
    calls: list[str] = []

    def hook(request: Any, error: Any) -> float | None:
        calls.append(error.code)
        return 0.01 if len(calls) == 1 else None

    requests, socket = RequestTable(id_prefix="h-", retry_hook=hook), Socket()
    requests.attach(socket.write)
    requests.go_live()
    task = asyncio.create_task(requests.request({"type": "chat_message"}, kind="send", timeout=2))
    await until_sent(socket, 1)
    requests.answer({"type": "error", "code": "not_joined", "id": socket.sent[0]["id"]})
    await until_sent(socket, 2)
    requests.answer({"type": "error", "code": "not_joined", "id": socket.sent[1]["id"]})
    with pytest.raises(Exception) as raised:
        await task
    assert getattr(raised.value, "code", None) == "not_joined" and calls == ["not_joined", "not_joined"]


async def test_unanswered_frames_only_go_to_a_live_socket() -> None:
    requests, socket = table(), Socket()
    assert requests.send_unanswered({"type": "typing", "room": "r"}) is False
    requests.attach(socket.write)
    requests.go_live()
    assert requests.send_unanswered({"type": "typing", "room": "r"}) is True
    assert requests.answer({"type": "error", "code": "not_joined", "id": socket.sent[0]["id"]}) is True


def test_close_actions() -> None:
    assert close_action(1008, "session revoked")[0] == "stop"
    assert isinstance(close_action(1008, "session revoked")[1], SessionRevoked)
    assert isinstance(close_action(1008, "auth failed")[1], AuthenticationFailed)
    assert close_action(1008, "token expired") == ("refresh", None)
    for code, reason in (
        (1006, ""),
        (1012, "service restart"),
        (1013, "gateway full"),
        (1008, "rate limit abuse"),
    ):
        assert close_action(code, reason) == ("reconnect", None)


def test_refusals_at_connect() -> None:
    assert isinstance(refusal({"code": "auth_failed", "message": "Token expired"}), TokenRejectedAsExpired)
    assert isinstance(refusal({"code": "auth_failed", "message": "Session revoked"}), SessionRevoked)
    assert isinstance(refusal({"code": "auth_failed", "message": "Invalid token"}), AuthenticationFailed)
    assert isinstance(refusal({"code": "unavailable", "message": "x"}), RetryConnect)
    assert isinstance(refusal({"code": "auth_timeout"}), RetryConnect)
