"""Restarts of real processes: chat_service, nats-server and notify_service (isolated stacks)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.conftest import Stack, wait_http_healthy, wait_services
from tests.support import WsClient, connect, expect_close, join, register, unique_name

pytestmark = pytest.mark.slow


async def send_n(sock: WsClient, room: str, prefix: str, count: int) -> list[int]:
    seqs = []
    for n in range(count):
        ack = await sock.request(
            {"type": "chat_message", "room": room, "message": f"{prefix}{n}", "client_msg_id": f"{prefix}{n}"}
        )
        assert ack["type"] == "ack", ack
        seqs.append(ack["seq"])
    return seqs


async def send_with_retry(sock: WsClient, room: str, text: str, client_msg_id: str, deadline: float) -> dict:  # type: ignore[type-arg]
    """Send until acked; ``unavailable`` (PROTOCOL.md section 7) is retried with the same id."""
    while True:
        answer = await sock.request(
            {"type": "chat_message", "room": room, "message": text, "client_msg_id": client_msg_id},
            timeout=15,
        )
        if answer["type"] == "ack":
            return answer
        assert answer["code"] == "unavailable", answer
        assert time.monotonic() < deadline, "no ack before the deadline"
        await asyncio.sleep(0.3)


async def test_chat_service_restart_keeps_messages(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory()
    room = unique_name("r")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    sock = await connect(stack.ws_url, user.access_token)
    await join(sock, room)
    before = await send_n(sock, room, "a", 5)
    stack.services["chat-0"].stop()
    stack.services["chat-0"].start()
    wait_services(stack.nats.url, ("chat",))
    after = [
        (await send_with_retry(sock, room, f"b{n}", f"b{n}", time.monotonic() + 20))["seq"] for n in range(3)
    ]
    assert before + after == list(range(1, 9))
    history = await sock.request({"type": "history", "room": room})
    assert [m["message"] for m in history["messages"]] == [f"a{n}" for n in range(5)] + [
        f"b{n}" for n in range(3)
    ]
    await sock.close()


async def test_nats_restart_keeps_messages_and_everything_reconnects(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory()
    room = unique_name("r")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    sock = await connect(stack.ws_url, user.access_token)
    await join(sock, room)
    await send_n(sock, room, "a", 5)
    stack.nats.stop()
    await asyncio.sleep(1)
    answer = await sock.request(
        {"type": "chat_message", "room": room, "message": "during", "client_msg_id": "d1"}
    )
    assert answer["type"] == "error" and answer["code"] == "unavailable"
    stack.nats.start()
    deadline = time.monotonic() + 30
    ack = await send_with_retry(sock, room, "during", "d1", deadline)
    assert ack["seq"] == 6
    wait_http_healthy(stack.base_url)
    # The socket's room subscription came back with the NATS connection: live delivery works.
    await send_with_retry(sock, room, "after", "after-1", deadline)
    seqs = []
    while len(seqs) < 1 or seqs[-1] < 7:
        seqs.append((await sock.recv_type("message", timeout=10))["data"]["seq"])
    history = await sock.request({"type": "history", "room": room})
    assert [m["message"] for m in history["messages"]] == [f"a{n}" for n in range(5)] + ["during", "after"]
    await sock.close()


async def test_durable_event_consumed_after_notify_restart(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = stack_factory()
    stack.services["notify-0"].stop()
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)  # events.user.registered while notify_service is down
        stack.services["notify-0"].start()
        wait_services(stack.nats.url, ("notify",))
        headers = {"Authorization": f"Bearer {user.access_token}"}
        titles: list[str] = []
        for _ in range(100):
            listing = (await http.get("/api/notifications", headers=headers)).json()
            titles = [item["title"] for item in listing["items"]]
            if titles:
                break
            await asyncio.sleep(0.1)
    assert len([t for t in titles if "elcome" in t]) == 1


async def test_gateway_sigterm_closes_sockets_1012_and_exits(stack_factory) -> None:  # type: ignore[no-untyped-def]
    stack: Stack = await asyncio.to_thread(stack_factory)
    room = unique_name("r")
    async with httpx.AsyncClient(base_url=stack.base_url) as http:
        user = await register(http)
    sock = await connect(stack.ws_url, user.access_token)
    await join(sock, room)
    gateway = stack.gateways[0]
    started = time.monotonic()
    exit_code = await asyncio.to_thread(gateway.stop, 15)
    code, _reason = await expect_close(sock, timeout=5)
    assert code == 1012
    # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it ended.
    assert exit_code in (0, -signal.SIGTERM) and time.monotonic() - started < 12
    log = (stack.tmp / "gateway-0.log").read_text()
    assert "stopped" in log  # the lifespan drained NATS and removed the heartbeat
